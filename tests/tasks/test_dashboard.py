"""The admin's landing dashboard: who may see it, that its numbers are the database's,
and that every number links to a changelist showing exactly that many tasks."""

import html
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from nodes.models import Liveness
from taskmgmt.moments import moment
from tasks.dashboard import snapshot
from tasks.models import FailureCause, SweepRun, Task, TaskStatus
from tests.factories import AdminFactory, NodeFactory, TaskFactory, fleet
from tests.redis_server import redis_cache, redis_database, unreachable_redis_url

pytestmark = pytest.mark.django_db

INDEX = reverse("admin:index")
LOGIN = reverse("admin:login")


REDIS_DB = 11


@pytest.fixture
def redis_url():
    with redis_database(REDIS_DB) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_dashboard_cache(settings):
    settings.DASHBOARD_CACHE_SECONDS = 0


def links(page: str, css_class: str) -> list[tuple[str, str, int]]:
    """(data attribute, href, number) of each `<a class=css_class …>N</a>` on the page."""
    pattern = rf'<a class="{css_class}" data-\w+="([^"]*)" href="([^"]+)">(?:<strong>)?(\d+)'
    return [(key, html.unescape(href), int(n)) for key, href, n in re.findall(pattern, page)]


def changelist_count(client, url: str) -> int:
    response = client.get(url)
    assert response.status_code == 200, url
    assert "e=1" not in response.get("Location", "")  # the admin rejects unknown lookups so
    return response.context["cl"].result_count


@pytest.mark.parametrize("who", ["anonymous", "node"])
def test_anonymous_and_node_accounts_get_the_admin_login(who):
    client = Client()
    if who == "node":
        client.force_login(NodeFactory())
    response = client.get(INDEX)
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)


def test_the_status_by_node_table_is_the_databases_and_each_number_links_to_those_tasks(
    admin_site_client,
):
    data = fleet()
    # Finished before the 24 h window: in no number (finished tasks are counted per window).
    old = TaskFactory(assigned_node=data["alive"], status=TaskStatus.COMPLETED)
    Task.objects.filter(pk=old.pk).update(updated_at=data["now"] - timedelta(days=2))
    page = admin_site_client.get(INDEX).content.decode()
    since = snapshot()["since"]

    cells = links(page, "tm-count")
    # Three nodes and a totals row, each with every status.
    assert len(cells) == 4 * len(TaskStatus.values)
    for status, url, shown in cells:
        filters = {"active": True, "status": status}
        if status in ("completed", "failed"):
            filters["updated_at__gte"] = since
        if "assigned_node__id__exact" in url:
            node_id = re.search(r"assigned_node__id__exact=([0-9a-f-]+)", url).group(1)
            filters["assigned_node_id"] = node_id
        assert shown == Task.objects.filter(**filters).count()
        assert changelist_count(admin_site_client, url) == shown
    # Neither the soft-deleted task nor the old one is in any number.
    totals = {status: n for status, url, n in cells if "assigned_node" not in url}
    assert totals == {"pending": 5, "in_progress": 3, "completed": 4, "failed": 3, "cancelled": 0}


def test_overdue_due_soon_and_failures_by_cause_link_to_exactly_those_tasks(admin_site_client):
    data = fleet()
    response = admin_site_client.get(INDEX)
    page = response.content.decode()

    overdue = re.search(r'id="tm-overdue" href="([^"]+)">(\d+)', page)
    due_soon = re.search(r'id="tm-due-soon" href="([^"]+)">(\d+)', page)
    assert int(overdue.group(2)) == 2
    assert int(due_soon.group(2)) == 1
    assert changelist_count(admin_site_client, html.unescape(overdue.group(1))) == 2
    assert changelist_count(admin_site_client, html.unescape(due_soon.group(1))) == 1

    per_node = links(page, "tm-node-overdue")
    assert {node_id: n for node_id, _, n in per_node if n} == {str(data["down"].pk): 2}
    for _, url, shown in per_node:
        assert changelist_count(admin_site_client, url) == shown

    failures = links(page, "tm-failure")
    assert {cause: n for cause, _, n in failures} == {"deadline": 2, "node_reported": 1}
    for _, url, shown in failures:
        assert changelist_count(admin_site_client, url) == shown


def test_nodes_panel_shows_liveness_heartbeat_age_and_load():
    data = fleet()
    nodes = {node["id"]: node for node in snapshot()["nodes"]}

    alive, down, never = (nodes[data[name].pk] for name in ("alive", "down", "never"))
    assert (alive["liveness"], down["liveness"], never["liveness"]) == (
        Liveness.ALIVE,
        Liveness.DOWN,
        Liveness.NEVER_SEEN,
    )
    assert 3 <= alive["heartbeat_age"] < 10
    assert 600 <= down["heartbeat_age"] < 610
    assert never["heartbeat_age"] is None
    assert alive["counts"] == {
        "pending": 3,
        "in_progress": 2,
        "completed": 4,
        "failed": 1,
        "cancelled": 0,
    }
    assert 600 <= alive["oldest_in_progress_age"] < 610
    assert never["oldest_in_progress_age"] is None


def test_the_nodes_panel_reads_its_ages_as_durations(admin_site_client):
    fleet()

    page = admin_site_client.get(reverse("admin:index")).content.decode()

    # The down node's heartbeat and the alive node's oldest task: ten minutes, not 600.
    assert re.search(r'<td class="num">10 min(?: \d+ s)? ago</td>', page)
    assert re.search(r'<td class="num">10 min(?: \d+ s)?</td>', page)
    assert re.search(r'<td class="num">\d+ s ago</td>', page)  # the alive node's beat


def test_the_chart_counts_outcomes_per_hour_and_the_sweep_shows_its_last_run(
    admin_site_client,
):
    data = fleet()
    started = data["now"]
    SweepRun.objects.create(
        started_at=started,
        finished_at=started + timedelta(seconds=2),
        failed_count=7,
        reassigned_count=1,
    )
    hours = snapshot()["hours"]
    assert len(hours) == 24
    assert sum(hour["completed"] for hour in hours) == 4
    assert hours[-1]["completed"] == 3  # one finished 90 minutes ago, in an earlier bar
    assert sum(sum(hour["failed"].values()) for hour in hours) == 3

    page = admin_site_client.get(INDEX).content.decode()
    # The older completed bar; then this hour's completed, deadline and node_reported.
    assert page.count("<rect ") == 1 + 3
    assert "<script" not in page.split('id="content-main"')[1]
    sweep = page.split('id="tm-sweep"')[1].split("</div>")[0]
    assert ">2 s<" in sweep and ">7<" in sweep  # people's units (issue 22)


def test_the_dashboard_says_how_stale_it_may_be_and_reuses_its_figures(settings):
    settings.DASHBOARD_CACHE_SECONDS = 30
    admin = AdminFactory()
    client = Client()
    client.force_login(admin)
    TaskFactory()
    first = client.get(INDEX).content.decode()
    TaskFactory()
    second = client.get(INDEX).content.decode()

    assert "reused for up to 30 s" in first
    totals = re.search(r'id="tm-totals">(.*?)</tr>', second, re.S).group(1)
    assert "<strong>1</strong>" in totals  # the second task waits for the cache to expire


def test_the_dashboard_is_a_fixed_number_of_queries_whatever_the_fleet(
    admin_site_client, django_assert_max_num_queries
):
    fleet()
    for _ in range(5):
        TaskFactory(assigned_node=NodeFactory())
    # Session and user, the serving record (liveness), the panel queries, and the
    # sweep's two (its last run; what its runs moved in 24 h, issue 22).
    with django_assert_max_num_queries(8):
        assert admin_site_client.get(INDEX).status_code == 200


@pytest.mark.parametrize("cache_seconds", [5, 0])
def test_with_redis_down_the_dashboard_is_computed_from_the_database(
    settings, admin_site_client, cache_seconds
):
    settings.CACHES = redis_cache(unreachable_redis_url())
    settings.DASHBOARD_CACHE_SECONDS = cache_seconds
    TaskFactory.create_batch(2, assigned_node=NodeFactory(), status=TaskStatus.PENDING)

    response = admin_site_client.get(INDEX)

    assert response.status_code == 200
    assert response.context["data"]["totals"][TaskStatus.PENDING] == 2
    assert 'id="tm-cache-down"' in response.content.decode()


def test_with_redis_up_the_dashboard_says_nothing_of_it(settings, admin_site_client, redis_url):
    settings.CACHES = redis_cache(redis_url)
    settings.DASHBOARD_CACHE_SECONDS = 5
    for _ in range(2):  # computed, then from the cache
        response = admin_site_client.get(INDEX)
        assert response.status_code == 200
        assert 'id="tm-cache-down"' not in response.content.decode()
        assert response.context["data"]["cache_up"] is True


def test_the_nodes_panel_shows_scheduling_and_cancel_requests_waiting(admin_site_client):
    from nodes.services import node_cordon
    from tasks.services import task_cancel

    cordoned, busy = NodeFactory(name="cordoned"), NodeFactory(name="busy")
    node_cordon(node_id=cordoned.pk, reason="fan", actor=None)
    running = TaskFactory(assigned_node=busy, status=TaskStatus.IN_PROGRESS, attempts=1)
    task_cancel(task_id=running.pk)

    page = admin_site_client.get(INDEX).content.decode()

    assert re.search(rf'class="tm-schedule" data-node="{cordoned.pk}"[^>]*>cordoned<', page)
    assert re.search(rf'class="tm-schedule" data-node="{busy.pk}"[^>]*>schedulable<', page)
    assert re.search(rf'tm-cancel-waiting" data-node="{busy.pk}">1 \(\d+ s\)<', page)


def test_the_chart_has_a_y_axis_and_labels_the_current_hour(admin_site_client, settings):
    from tasks.chart import axis_top

    settings.DASHBOARD_CACHE_SECONDS = 0
    assert [axis_top(n) for n in (0, 1, 3, 7, 10, 11, 180, 501)] == [1, 1, 5, 10, 10, 20, 200, 1000]
    TaskFactory.create_batch(3, status=TaskStatus.COMPLETED)

    page = admin_site_client.get(INDEX).content.decode()

    assert re.findall(r'class="tm-tick"[^>]*>(\d+)<', page) == ["0", "2", "5"]
    assert 'id="tm-chart-now">now<' in page
    # It fills its panel (the bars placed in percent), its text not scaled with it (no
    # viewBox): tests/browser measures both.
    plot = re.search(r'<svg class="tm-chart-plot"[^>]*>', page).group(0)
    assert "viewBox" not in plot and " width=" not in plot
    assert re.search(r'<rect x="[\d.]+%" y="[\d.]+" width="[\d.]+%"', page)


# Every cause a failed task may carry; cancel_timeout is a cancelled task's, never charted.
CHARTED_CAUSES = [cause for cause in FailureCause if cause != FailureCause.CANCEL_TIMEOUT]


@pytest.mark.parametrize("cause", [*CHARTED_CAUSES, ""])
def test_every_failure_cause_in_the_chart_has_its_own_colour_and_legend_entry(
    admin_site_client, cause
):
    TaskFactory(status=TaskStatus.FAILED, failure_cause=cause)

    page = admin_site_client.get(INDEX).content.decode()

    fills = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"', page)
    assert len(fills) == 1
    legend = dict(
        (label, colour)
        for colour, label in re.findall(
            r'<span style="background: (#[0-9a-f]{6})"></span>([^<]+)', page
        )
    )
    label = FailureCause(cause).label if cause else "Cause not recorded"
    assert legend.get(label) == fills[0]
    # No two entries share a colour: each segment reads as one cause.
    assert len(set(legend.values())) == len(legend)


def sweep_panel(page: str) -> dict[str, str]:
    """The sweep's last run panel as {row heading: its text}."""
    panel = page.split('id="tm-sweep"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><th>([^<]+)</th><td[^>]*>(.*?)</td></tr>", panel, re.S)
    return {heading: " ".join(re.sub(r"<[^>]+>", " ", cell).split()) for heading, cell in rows}


def test_a_sweep_run_that_only_cancelled_shows_its_cancellation(admin_site_client, settings):
    from tasks.services import sweep_run, task_cancel

    settings.CANCEL_GRACE_SECONDS = 60
    running = TaskFactory(status=TaskStatus.IN_PROGRESS, attempts=1)
    task_cancel(task_id=running.pk)
    Task.objects.filter(pk=running.pk).update(
        cancel_requested_at=timezone.now() - timedelta(seconds=61)
    )
    sweep_run(batch_size=100)

    page = admin_site_client.get(INDEX).content.decode()

    shown = sweep_panel(page)
    assert shown["Failed"] == "0"
    assert shown["Cancelled (cancel unanswered)"] == "1"
    assert shown["By cause"] == "Cancel unanswered: 1 cancelled"
    # Beside the failures, not among them: a cancellation is no failure.
    assert "cancel_timeout" not in {cause for cause, _, _ in links(page, "tm-failure")}
    count = re.search(r'id="tm-sweep-cancelled" href="([^"]+)">(\d+)<', page)
    assert int(count.group(2)) == 1
    assert changelist_count(admin_site_client, html.unescape(count.group(1))) == 1


def test_the_sweeps_last_run_shows_what_it_did_by_cause(admin_site_client):
    now = timezone.now()
    SweepRun.objects.create(
        started_at=now,
        finished_at=now + timedelta(seconds=1),
        failed_count=3,
        reassigned_count=2,
        deadline_failed=1,
        node_lost_failed=0,
        node_lost_moved=0,
        drained_failed=2,
        drained_moved=2,
        cancel_timeout_cancelled=0,
    )

    shown = sweep_panel(admin_site_client.get(INDEX).content.decode())

    assert shown["Cancelled (cancel unanswered)"] == "0"
    assert shown["By cause"] == "Deadline passed: 1 failed Node drained: 2 failed, 2 moved"


def test_the_sweeps_last_run_shows_the_tasks_it_left_in_place(admin_site_client):
    """A down node's tasks that no alive schedulable node could take wait on it: the
    dashboard said nothing of them, only the sweep's stderr did."""
    now = timezone.now()
    SweepRun.objects.create(started_at=now, finished_at=now, stranded_count=4)

    shown = sweep_panel(admin_site_client.get(INDEX).content.decode())

    assert shown["Left in place"] == (
        "4 task(s) of down nodes: no alive schedulable node to take them"
    )
    SweepRun.objects.create(started_at=now + timedelta(1), finished_at=now, stranded_count=0)
    assert "Left in place" not in sweep_panel(admin_site_client.get(INDEX).content.decode())


def test_a_sweep_run_from_before_causes_were_kept_says_so(admin_site_client):
    now = timezone.now()
    SweepRun.objects.create(started_at=now, finished_at=now, failed_count=1)

    shown = sweep_panel(admin_site_client.get(INDEX).content.decode())

    assert shown["Cancelled (cancel unanswered)"] == "not recorded"
    assert shown["By cause"] == "not recorded"


def schedule_cell(page: str, node) -> str:
    cell = re.search(rf'<td class="tm-schedule" data-node="{node.pk}"[^>]*>(.*?)</td>', page, re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell.group(1))).split())


def test_the_scheduling_cell_says_why_by_whom_since_when_and_until_when(
    admin_site_client, django_assert_max_num_queries
):
    from nodes.models import Cordon
    from nodes.services import node_cordon, node_drain, node_maintenance_schedule

    dana = AdminFactory(name="Dana Ops")
    cordoned, draining, in_window = (NodeFactory(name=n) for n in ("c", "d", "w"))
    node_cordon(node_id=cordoned.pk, reason="fan failure", actor=dana)
    deadline = timezone.now() + timedelta(minutes=30)
    node_drain(node_id=draining.pk, reason="kernel upgrade", actor=None, deadline=deadline)
    started = timezone.now() - timedelta(minutes=5)
    node_maintenance_schedule(
        node_id=in_window.pk,
        starts_at=started,
        ends_at=started + timedelta(hours=1),
        reason="disk swap",
        drain=False,
        actor=dana,
    )
    since = Cordon.objects.get(node=cordoned).since

    # The fleet's states cost no query more: the budget of an idle fleet.
    with django_assert_max_num_queries(8):
        page = admin_site_client.get(INDEX).content.decode()

    assert schedule_cell(page, cordoned) == (
        f"cordoned fan failure by Dana Ops, since {moment(since, 'minutes')}"
    )
    assert re.fullmatch(
        f"draining kernel upgrade by the system, since [^;]+; "
        f"drain deadline {moment(deadline, 'minutes')}",
        schedule_cell(page, draining),
    )
    assert re.fullmatch(
        f"cordoned maintenance until [^;]+ disk swap by Dana Ops, "
        f"since {moment(started, 'minutes')}",
        schedule_cell(page, in_window),
    )


def test_a_deactivated_node_is_marked_so_in_the_nodes_and_at_risk_panels(admin_site_client):
    """Not "schedulable": placement never picks a deactivated node, and its open tasks wait."""
    gone = NodeFactory(name="gone", is_active=False)
    TaskFactory(assigned_node=gone)

    page = admin_site_client.get(INDEX).content.decode()

    nodes_panel = page.split('id="tm-nodes"')[1]
    at_risk_panel = page.split('id="tm-at-risk"')[1].split('class="module')[0]
    assert re.search(rf'class="tm-schedule" data-node="{gone.pk}"[^>]*>deactivated<', nodes_panel)
    assert re.search(r">gone</a> \(deactivated\)", nodes_panel)
    assert re.search(r">gone</a> \(deactivated\)", at_risk_panel)
