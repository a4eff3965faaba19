"""The sweep never takes the server's own silence for its nodes' deaths (SPEC, Nodes):
an outage of the API longer than NODE_DOWN_AFTER fails nobody over, and when more
than FAILOVER_MAX_DOWN_SHARE of the recently alive nodes are down at once it fails
none of them over, and says so (log, SweepRun, /metrics, dashboard).

The real workers riding out a real server restart are in tests/fleet/test_outage.py.
"""

import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from nodes.models import Node
from nodes.serving import record_serving
from tasks.models import SweepRun, Task, TaskStatus
from tasks.services import FailoverCounts, sweep_run, tasks_fail_over
from tests.factories import NodeFactory, TaskFactory
from tests.test_metrics import TOKEN, scrape, value

pytestmark = pytest.mark.django_db

IN_PROGRESS = TaskStatus.IN_PROGRESS


@pytest.fixture(autouse=True)
def _failover(settings):
    settings.FAILOVER = "reassign"
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    settings.TASK_MAX_ATTEMPTS = 3
    settings.FAILOVER_MAX_DOWN_SHARE = 0.5
    settings.DASHBOARD_CACHE_SECONDS = 0


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def nodes_seen(*seconds_ago: float) -> list:
    return [NodeFactory(name=f"n{i}", last_seen=ago(s)) for i, s in enumerate(seconds_ago)]


def working_on(node) -> Task:
    return TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)


def untouched(tasks) -> bool:
    return all(
        Task.objects.values_list("status", "assigned_node_id").get(pk=task.pk)
        == (IN_PROGRESS, task.assigned_node_id)
        for task in tasks
    )


def test_an_api_outage_longer_than_down_after_fails_nobody_over():
    # The API answered until 100 s ago, then nothing until a second ago.
    for seconds in (160, 140, 120, 100, 1):
        record_serving(now=ago(seconds))
    fleet = nodes_seen(101, 101, 102, 103)  # their last beats before the outage
    tasks = [working_on(node) for node in fleet]

    assert tasks_fail_over(batch_size=100) == FailoverCounts()
    assert untouched(tasks)


def test_the_same_silence_with_the_api_answering_is_a_failover():
    # The check of the test above: without the outage these nodes are down.
    for seconds in (160, 140, 120, 100, 80, 60, 40, 20, 1):
        record_serving(now=ago(seconds))
    dead, alive = nodes_seen(101, 1)
    task = working_on(dead)

    assert tasks_fail_over(batch_size=100) == FailoverCounts(failed=1, reassigned=1)
    assert Task.objects.get(pk=task.pk).assigned_node == alive


def test_a_node_dead_before_the_outage_is_still_failed_over():
    for seconds in (160, 140, 120, 100, 1):
        record_serving(now=ago(seconds))
    dead, *survivors = nodes_seen(140, 101, 101, 101)
    task = working_on(dead)

    assert tasks_fail_over(batch_size=100) == FailoverCounts(failed=1, reassigned=1)
    assert Task.objects.get(pk=task.pk).assigned_node in survivors


def test_more_than_the_share_of_recent_nodes_down_at_once_fails_none_over(caplog):
    *down, _alive = nodes_seen(40, 40, 45, 1)  # three of four recently alive nodes silent
    tasks = [working_on(node) for node in down]

    with caplog.at_level(logging.WARNING, logger="taskmgmt.sweep"):
        run, result = sweep_run(batch_size=100)

    assert result == FailoverCounts(held=3)
    assert untouched(tasks)
    assert run.failover_held_count == 3
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "failover_held"]
    assert record.levelno == logging.WARNING
    assert (record.down_count, record.recent_count) == (3, 4)


def test_the_share_itself_is_not_too_many():
    *down, _alive_1, _alive_2 = nodes_seen(40, 40, 1, 1)  # one half, not more
    tasks = [working_on(node) for node in down]

    assert tasks_fail_over(batch_size=100) == FailoverCounts(failed=2, reassigned=2)
    assert not Task.objects.filter(pk__in=[t.pk for t in tasks], assigned_node__in=down).exists()


def test_a_share_of_one_turns_the_guard_off(settings):
    settings.FAILOVER_MAX_DOWN_SHARE = 1
    *down, _alive = nodes_seen(40, 40, 45, 1)
    for node in down:
        working_on(node)

    assert tasks_fail_over(batch_size=100) == FailoverCounts(failed=3, reassigned=3)


def test_nodes_down_for_longer_than_recent_are_failed_over_by_a_later_run():
    # Down for more than 3 x NODE_DOWN_AFTER: no longer part of the recently alive fleet.
    *down, _alive = nodes_seen(91, 95, 100, 1)
    for node in down:
        working_on(node)

    assert tasks_fail_over(batch_size=100) == FailoverCounts(failed=3, reassigned=3)


def test_the_sweep_command_says_it_held_the_failover():
    *down, _alive = nodes_seen(40, 40, 45, 1)
    for node in down:
        working_on(node)
    err = StringIO()

    call_command("collect_failed", stdout=StringIO(), stderr=err)

    assert "3 recently alive node(s) down at once" in err.getvalue()
    assert "FAILOVER_MAX_DOWN_SHARE=0.5" in err.getvalue()


def test_a_dry_run_says_it_would_hold_and_counts_nothing_to_move():
    *down, _alive = nodes_seen(40, 40, 45, 1)
    for node in down:
        working_on(node)
    out, err = StringIO(), StringIO()

    call_command("collect_failed", "--dry-run", stdout=out, stderr=err)

    assert out.getvalue() == ""  # nothing would move
    assert "3 recently alive node(s) down at once" in err.getvalue()
    assert "would fail none over" in err.getvalue()


def test_a_held_run_is_counted_in_metrics_and_shown_on_the_dashboard(
    client, settings, admin_site_client
):
    settings.METRICS_TOKEN = TOKEN
    *down, _alive = nodes_seen(40, 40, 45, 1)
    for node in down:
        working_on(node)
    sweep_run(batch_size=100)
    sweep_run(batch_size=100)
    now = timezone.now()
    SweepRun.objects.create(started_at=now, finished_at=now)  # a later one that held nothing

    assert value(scrape(client), "taskmgmt_sweep_failover_held_total") == 2
    page = admin_site_client.get(reverse("admin:index")).content.decode()
    assert 'id="tm-failover-held"' not in page  # the latest run held nothing
    sweep_run(batch_size=100)
    page = admin_site_client.get(reverse("admin:index")).content.decode()
    assert 'id="tm-failover-held"' in page
    assert "3 recently alive node(s) were down at once" in page


def test_a_down_node_is_still_down_for_the_nodes_api(admin_client):
    # The guard holds the failover; it does not hide what liveness says.
    *down, _alive = nodes_seen(40, 40, 45, 1)
    response = admin_client.get("/api/nodes")
    liveness = {n["nodeId"]: n["liveness"] for n in response.json()["nodes"]}
    assert [liveness[str(node.pk)] for node in down] == ["down"] * 3
    assert Node.objects.down().count() == 3
