"""Failover you can see after the fact: the sweep's runs, each linked to exactly the tasks
it moved; the dashboard's moves in 24 h; what was done to a node on its page; the
activity feed's filters."""

import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from nodes.models import Cordon
from nodes.services import node_cordon
from tasks.actor import acting_as
from tasks.models import SWEEP_CAUSE_COUNTS, HistoryAction, SweepRun, Task, TaskStatus
from tasks.services import sweep_run, task_assign, task_cancel
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

RUNS = reverse("admin:tasks_sweeprun_changelist")
FEED = reverse("admin:tasks_taskhistory_changelist")


@pytest.fixture(autouse=True)
def _failover(settings):
    settings.FAILOVER = "reassign"
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    settings.DASHBOARD_CACHE_SECONDS = 0


def seen(node, seconds_ago):
    User.objects.filter(pk=node.pk).update(
        last_seen=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return node


@pytest.fixture
def failed_over():
    """A dead node's three open tasks moved by one sweep run onto the live one."""
    dead, alive = seen(NodeFactory(name="dead"), 300), seen(NodeFactory(name="alive"), 1)
    moved = TaskFactory.create_batch(3, assigned_node=dead)
    TaskFactory(assigned_node=alive)  # not moved: must not show in the run's links
    run, _ = sweep_run(batch_size=100)
    assert run.reassigned_count == 3
    return {"dead": dead, "alive": alive, "moved": moved, "run": run}


def links(page: str, anchor_text_pattern: str) -> list[str]:
    return [
        html.unescape(url)
        for url in re.findall(rf'<a href="([^"]+)">{anchor_text_pattern}</a>', page)
    ]


def test_the_runs_page_links_each_run_to_exactly_the_tasks_it_moved(admin_site_client, failed_over):
    sweep_run(batch_size=100)  # a later, empty run

    response = admin_site_client.get(RUNS)

    assert response.status_code == 200
    assert [run.pk for run in response.context["cl"].result_list][1] == failed_over["run"].pk
    page = response.content.decode()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)
    (moved_url,) = links(page, "3")
    rows = admin_site_client.get(moved_url).context["cl"].result_list
    assert {row.task_id for row in rows} == {task.pk for task in failed_over["moved"]}
    assert {(row.action, row.performed_by_id) for row in rows} == {
        (HistoryAction.ASSIGNEE_CHANGE, None)
    }


def recorded_run(minutes_ago: int, **counts) -> SweepRun:
    """A run as the sweep records one: every count by cause 0 unless given (None for a
    run from before they were kept: pass them as None)."""
    started = timezone.now() - timedelta(minutes=minutes_ago)
    zeros = {count.field: 0 for count in SWEEP_CAUSE_COUNTS}
    return SweepRun.objects.create(started_at=started, finished_at=started, **{**zeros, **counts})


def test_the_runs_page_filters_the_runs_that_did_something(admin_site_client):
    """Under `make run` the sweep runs every 5 s, and most runs find nothing to do."""
    idle = recorded_run(1)
    failed = recorded_run(2, failed_count=1, deadline_failed=1)
    moved = recorded_run(
        3, failed_count=1, node_lost_failed=1, reassigned_count=2, node_lost_moved=2
    )
    cancelled = recorded_run(4, cancel_timeout_cancelled=1)
    held = recorded_run(5, failover_held_count=3)
    idle_before_causes = recorded_run(6, **{c.field: None for c in SWEEP_CAUSE_COUNTS})

    def listed(query: str) -> list:
        response = admin_site_client.get(f"{RUNS}?{query}")
        assert response.status_code == 200
        return [run.pk for run in response.context["cl"].result_list]

    assert listed("did_something=yes") == [run.pk for run in (failed, moved, cancelled, held)]
    assert listed("did_something=no") == [idle.pk, idle_before_causes.pk]
    assert len(listed("")) == 6  # every run unless asked: nothing is hidden by default
    page = admin_site_client.get(RUNS).content.decode()
    assert "By did something" in page and "?did_something=yes" in page


def test_the_runs_page_shows_the_tasks_each_run_left_in_place(admin_site_client):
    recorded_run(1, stranded_count=3)
    recorded_run(2, stranded_count=0)
    recorded_run(3, stranded_count=None)  # from before the count was kept

    response = admin_site_client.get(RUNS)

    cl = response.context["cl"]
    shown = [cl.model_admin.stranded(run) for run in cl.result_list]
    assert shown == ["3 task(s)", "—", "—"]  # newest first
    assert "left in place" in response.content.decode().lower()


def test_the_dashboard_shows_tasks_moved_in_24_h_beside_failures(admin_site_client, failed_over):
    page = admin_site_client.get(reverse("admin:index")).content.decode()

    assert re.search(r'id="tm-moved-node-lost" href="[^"]+">3<', page)
    assert 'id="tm-sweep-runs"' in page


def test_a_node_page_lists_what_was_done_to_it(admin_site_client, admin_user, failed_over):
    dead = failed_over["dead"]
    by_hand = TaskFactory(assigned_node=dead, name="moved by hand")
    with acting_as(admin_user):
        task_assign(task_id=by_hand.pk, node=failed_over["alive"])

    page = admin_site_client.get(reverse("admin:node", args=[dead.pk])).content.decode()
    panel = page.split('id="tm-node-moved-away"')[1].split("</table>")[0]

    assert panel.count("<tr>") == 1 + 4  # the header, then four moves
    assert panel.index("moved by hand") < panel.index(failed_over["moved"][0].name)
    assert panel.count("the sweep") == 3 and "Node lost" in panel
    assert (admin_user.name or admin_user.email) in panel
    assert reverse("admin:node", args=[failed_over["alive"].pk]) in panel


def test_the_activity_feed_filters_by_node_and_actor(admin_site_client, failed_over):
    dead, alive = failed_over["dead"], failed_over["alive"]

    about_dead = admin_site_client.get(FEED, {"node": dead.pk}).context["cl"].result_list
    by_sweep = (
        admin_site_client.get(FEED, {"actor": "system", "action__exact": "assignee_change"})
        .context["cl"]
        .result_list
    )
    about_alive = admin_site_client.get(FEED, {"node": alive.pk}).context["cl"].result_list

    # The dead node's three tasks: created on it, then moved away.
    assert len(about_dead) == 6
    assert all(row.performed_by_id is None for row in by_sweep)
    assert {row.task_id for row in by_sweep} == {task.pk for task in failed_over["moved"]}
    # The live node's own task and the three moved to it.
    assert len(about_alive) == 4
    ids = [row.pk for row in about_dead]
    assert ids == sorted(ids, reverse=True)  # newest first


@pytest.fixture
def every_cause(settings):
    """One sweep run that fails, moves and cancels for every cause it records: a lost
    node's tasks (one running), a drained node past its deadline, an expired task and an
    unanswered cancel request."""
    settings.CANCEL_GRACE_SECONDS = 60
    alive = seen(NodeFactory(name="alive"), 1)
    lost, drained = seen(NodeFactory(name="lost"), 300), seen(NodeFactory(name="drained"), 1)
    tasks = {
        "lost_running": TaskFactory(assigned_node=lost, status=TaskStatus.IN_PROGRESS, attempts=1),
        "lost_pending": TaskFactory.create_batch(2, assigned_node=lost),
        "drained_running": TaskFactory(
            assigned_node=drained, status=TaskStatus.IN_PROGRESS, attempts=1
        ),
        "expired": TaskFactory(
            assigned_node=alive, locked_at=timezone.now() - timedelta(minutes=1)
        ),
        "unanswered": TaskFactory(assigned_node=alive, status=TaskStatus.IN_PROGRESS, attempts=1),
    }
    node_cordon(
        node_id=drained.pk,
        reason="r",
        actor=None,
        drain_deadline=timezone.now() + timedelta(minutes=5),
    )
    Cordon.objects.filter(node=drained).update(drain_deadline=timezone.now() - timedelta(seconds=1))
    task_cancel(task_id=tasks["unanswered"].pk)
    Task.objects.filter(pk=tasks["unanswered"].pk).update(
        cancel_requested_at=timezone.now() - timedelta(seconds=61)
    )
    TaskFactory(assigned_node=alive)  # untouched: never in a run's links
    run, _ = sweep_run(batch_size=100)
    return {"run": run, "tasks": tasks}


def test_a_sweep_run_keeps_its_counts_by_cause(every_cause):
    run = every_cause["run"]

    # The cancellation is no failure: failed_count counts the three failures.
    assert (run.failed_count, run.reassigned_count) == (3, 4)
    assert {count.field: getattr(run, count.field) for count in SWEEP_CAUSE_COUNTS} == {
        "deadline_failed": 1,
        "node_lost_failed": 1,
        "node_lost_moved": 3,
        "drained_failed": 1,
        "drained_moved": 1,
        "cancel_timeout_cancelled": 1,
    }
    assert run.history_after < run.history_last


def test_the_runs_page_links_each_cause_to_exactly_its_tasks(admin_site_client, every_cause):
    tasks = every_cause["tasks"]
    expected = {
        "deadline_failed": {tasks["expired"].pk},
        "node_lost_failed": {tasks["lost_running"].pk},
        "node_lost_moved": {tasks["lost_running"].pk} | {t.pk for t in tasks["lost_pending"]},
        "drained_failed": {tasks["drained_running"].pk},
        "drained_moved": {tasks["drained_running"].pk},
        "cancel_timeout_cancelled": {tasks["unanswered"].pk},
    }
    sweep_run(batch_size=100)  # a later, empty run

    page = admin_site_client.get(RUNS).content.decode()
    found = dict(re.findall(r'class="tm-run-cause" data-count="(\w+)" href="([^"]+)"', page))

    assert set(found) == set(expected)
    for field, url in found.items():
        rows = admin_site_client.get(html.unescape(url)).context["cl"].result_list
        assert {row.task_id for row in rows} == expected[field], field
        assert len(rows) == len(expected[field]), field  # one row per task
    assert "Node lost: " in page and "Node drained: " in page


def test_a_runs_own_page_reads_as_the_list_does_with_the_same_links(admin_site_client, failed_over):
    """Not the model's columns ("Stranded count", "History after: 251"): the list's
    wording, and its links to exactly the rows the run wrote."""
    run = failed_over["run"]

    page = admin_site_client.get(reverse("admin:tasks_sweeprun_change", args=[run.pk]))

    shown = page.content.decode()
    assert "History after" not in shown and "Stranded count" not in shown
    assert "Moved to other nodes" in shown and "Left in place" in shown
    listed = admin_site_client.get(RUNS).content.decode()
    assert links(shown, "every row") == links(listed, "every row")
    assert links(shown, "3") == links(listed, "3") != []


def test_a_run_from_before_causes_were_kept_says_so_and_links_its_time_window(
    admin_site_client, failed_over
):
    run = failed_over["run"]
    SweepRun.objects.filter(pk=run.pk).update(
        **{count.field: None for count in SWEEP_CAUSE_COUNTS},
        history_after=None,
        history_last=None,
    )

    page = admin_site_client.get(RUNS).content.decode()

    assert "not recorded" in page
    (moved_url,) = links(page, "3")
    assert "created_at__gte" in moved_url
    rows = admin_site_client.get(moved_url).context["cl"].result_list
    assert {row.task_id for row in rows} == {task.pk for task in failed_over["moved"]}


def test_the_dashboard_counts_moves_by_cause_and_a_drain_is_not_a_lost_node(
    admin_site_client, every_cause
):
    page = admin_site_client.get(reverse("admin:index")).content.decode()

    lost = re.search(r'id="tm-moved-node-lost" href="([^"]+)">(\d+)<', page)
    drained = re.search(r'id="tm-moved-drained" href="([^"]+)">(\d+)<', page)
    assert (lost[2], drained[2]) == ("3", "1")
    sweep_run(batch_size=100)  # an empty run: not among the runs the number leads to
    runs = admin_site_client.get(html.unescape(drained[1])).context["cl"].result_list
    assert [run.pk for run in runs] == [every_cause["run"].pk]
