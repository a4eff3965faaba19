"""The activity feed: task history and node events together, newest first, the filters
working across both, pages that never skip or repeat a row, and a fixed number of
queries whatever the rows."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from nodes.models import NodeEvent, NodeEventKind
from nodes.services import node_cordon, node_set_labels, node_uncordon
from tasks import activity
from tasks.actor import acting_as
from tasks.models import FailureCause, HistoryAction, TaskHistory
from tasks.services import sweep_run, task_assign
from tests.factories import AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

FEED = reverse("admin:activity")


def seen(node, seconds_ago):
    node.last_seen = timezone.now() - timedelta(seconds=seconds_ago)
    node.save(update_fields=["last_seen"])
    return node


@pytest.fixture
def story(settings, admin_user):
    """A dead node's tasks moved off it by the sweep, an admin's reassign, a cordon and a
    labels change: history rows and node events, by people and by the system."""
    settings.FAILOVER = "reassign"
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    dead, alive = seen(NodeFactory(name="dead"), 300), seen(NodeFactory(name="alive"), 1)
    other = NodeFactory(name="bystander")
    lost = TaskFactory.create_batch(2, assigned_node=dead)
    TaskFactory(assigned_node=other)
    sweep_run(batch_size=100)
    by_hand = TaskFactory(assigned_node=other)
    with acting_as(admin_user):
        task_assign(task_id=by_hand.pk, node=dead)
    node_cordon(node_id=dead.pk, reason="disk failing", actor=admin_user)
    node_set_labels(node=alive, labels={"zone": "a"}, actor=admin_user)
    return {"dead": dead, "alive": alive, "other": other, "lost": lost, "by_hand": by_hand}


def entries(client, **query):
    response = client.get(FEED, query)
    assert response.status_code == 200, response.content
    return response


def shown(response) -> list[tuple[str, int]]:
    """The page's rows as (source, id), in their order."""
    return [
        ("event" if isinstance(row, NodeEvent) else "history", row.pk)
        for row in (entry.row for entry in response.context["entries"])
    ]


def test_the_feed_merges_task_history_and_node_events_newest_first(admin_site_client, story):
    response = entries(admin_site_client)

    rows = shown(response)
    assert len(rows) == TaskHistory.objects.count() + NodeEvent.objects.count()
    times = [entry.created_at for entry in response.context["entries"]]
    assert times == sorted(times, reverse=True)
    page = response.content.decode()
    assert "Labels change" in page and "Cordon" in page and "Assignee change" in page
    assert "disk failing" in page
    # The labels change came last of all: it leads.
    assert rows[0] == ("event", NodeEvent.objects.get(kind=NodeEventKind.LABELS_CHANGE).pk)


def test_by_node_the_feed_has_what_it_did_what_it_got_what_it_lost_and_its_events(
    admin_site_client, story
):
    dead = story["dead"]

    rows = shown(entries(admin_site_client, node=dead.pk))

    history = TaskHistory.objects.filter(pk__in=[pk for source, pk in rows if source == "history"])
    tasks = {row.task_id for row in history}
    assert tasks == {task.pk for task in story["lost"]} | {story["by_hand"].pk}
    moved_away = history.filter(action=HistoryAction.ASSIGNEE_CHANGE, from_value=str(dead.pk))
    assert moved_away.count() == 2
    given = history.filter(action=HistoryAction.ASSIGNEE_CHANGE, to_value=str(dead.pk))
    assert [row.task_id for row in given] == [story["by_hand"].pk]
    events = [pk for source, pk in rows if source == "event"]
    assert list(NodeEvent.objects.filter(pk__in=events).values_list("node", "kind")) == [
        (dead.pk, NodeEventKind.CORDON)
    ]


def test_by_actor_the_feed_filters_both_sources(admin_site_client, story, admin_user):
    by_admin = entries(admin_site_client, actor=admin_user.pk).context["entries"]
    by_system = entries(admin_site_client, actor="system").context["entries"]

    assert {type(entry.row).__name__ for entry in by_admin} == {"TaskHistory", "NodeEvent"}
    assert all(
        (entry.row.actor_id if entry.is_event else entry.row.performed_by_id) == admin_user.pk
        for entry in by_admin
    )
    assert by_system and all(
        not entry.is_event and entry.row.performed_by_id is None for entry in by_system
    )
    # The sweep's failover, and the factories' creations (made outside any request).
    assert {entry.row.cause for entry in by_system} == {FailureCause.NODE_LOST, ""}


def test_an_action_picks_its_source_and_a_cause_leaves_node_events_out(admin_site_client, story):
    cordons = entries(admin_site_client, action="cordon").context["entries"]
    moves = entries(admin_site_client, action="assignee_change").context["entries"]
    lost = entries(admin_site_client, cause="node_lost").context["entries"]

    assert [entry.row.kind for entry in cordons] == [NodeEventKind.CORDON]
    assert len(moves) == 3 and not any(entry.is_event for entry in moves)
    assert lost and all(
        not entry.is_event and entry.row.cause == FailureCause.NODE_LOST for entry in lost
    )


def test_pages_show_every_row_once_newest_first_across_both_sources(
    admin_site_client, monkeypatch, admin_user
):
    monkeypatch.setattr(activity, "PAGE_ROWS", 4)
    node = NodeFactory()
    for step in range(9):  # interleaved in time: history rows, then events, then rows
        TaskFactory(assigned_node=node)
        if step % 3 == 0:
            node_cordon(node_id=node.pk, reason=f"r{step}", actor=admin_user)
            node_uncordon(node_id=node.pk, reason=f"u{step}", actor=admin_user)
    expected = {("history", pk) for pk in TaskHistory.objects.values_list("pk", flat=True)} | {
        ("event", pk) for pk in NodeEvent.objects.values_list("pk", flat=True)
    }

    seen_rows, url, pages = [], FEED, 0
    while url:
        response = admin_site_client.get(url)
        seen_rows += shown(response)
        url = response.context["older_url"]
        pages += 1

    assert len(seen_rows) == len(set(seen_rows)) == len(expected)
    assert set(seen_rows) == expected
    assert pages == -(-len(expected) // 4)


def test_a_page_costs_the_same_queries_with_few_rows_or_many(
    admin_site_client, django_assert_num_queries, admin_user
):
    node = NodeFactory()
    TaskFactory(assigned_node=node)
    node_cordon(node_id=node.pk, reason="one", actor=admin_user)
    # Session and user, the filters' users, history, events, then the page's tasks and
    # people: one query each, however many rows.
    with django_assert_num_queries(7):
        entries(admin_site_client)
    with django_assert_num_queries(10):  # by node: four history ranges instead of one
        entries(admin_site_client, node=node.pk)

    TaskFactory.create_batch(60, assigned_node=node)
    for i in range(10):
        node_uncordon(node_id=node.pk, reason=str(i), actor=admin_user)
        node_cordon(node_id=node.pk, reason=str(i), actor=admin_user)
    with django_assert_num_queries(7):
        response = entries(admin_site_client)
    assert len(response.context["entries"]) == activity.PAGE_ROWS
    (before,) = parse_qs(urlsplit(response.context["older_url"]).query)["before"]
    with django_assert_num_queries(10):
        entries(admin_site_client, node=node.pk, before=before)
    # By a task action: no node events to read; its ids through its index, then the rows.
    with django_assert_num_queries(7):
        entries(admin_site_client, action="initial_assign", before=before)


@pytest.mark.parametrize(
    "query",
    [
        {"node": "not-a-uuid"},
        {"actor": "someone"},
        {"action": "explode"},
        {"cause": "gremlins"},
        {"before": "12;DROP"},
        {"before": "1" * 40 + ".1"},
    ],
    ids=["node", "actor", "action", "cause", "cursor", "huge-cursor"],
)
def test_bad_filters_answer_400_with_the_field_named(admin_site_client, query):
    response = admin_site_client.get(FEED, query)

    assert response.status_code == 400
    (field,) = query
    assert f"{field}:" in response.content.decode()


def test_the_feed_is_for_admins_only(client):
    response = client.get(FEED)

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_the_node_page_and_the_dashboard_link_to_the_feed(admin_site_client, story):
    dead = story["dead"]

    node_page = admin_site_client.get(reverse("admin:node", args=[dead.pk])).content.decode()
    dashboard = admin_site_client.get(reverse("admin:index")).content.decode()

    assert f'href="{FEED}?node={dead.pk}"' in node_page
    assert f'id="tm-activity" href="{FEED}"' in dashboard


def test_an_admin_with_the_feed_open_sees_who_acted(admin_site_client, story):
    admin = AdminFactory(name="Second Admin")
    node_cordon(node_id=story["other"].pk, reason="rack move", actor=admin)

    page = entries(admin_site_client, node=story["other"].pk).content.decode()

    assert "Second Admin" in page and "rack move" in page


def test_a_node_and_a_cause_together_give_its_moves_and_its_own_reports(
    admin_site_client, story, node_client, node
):
    moved = entries(admin_site_client, node=story["dead"].pk, cause="node_lost")
    running = TaskFactory(assigned_node=node, status="in_progress", attempts=1)
    node_client.put(
        "/api/tasks/shift-status",
        {"taskId": str(running.pk), "taskStatus": "failed", "reason": "disk full"},
        format="json",
    )
    reported = entries(admin_site_client, node=node.pk, cause="node_reported")

    rows = [entry.row for entry in moved.context["entries"]]
    assert {(row.action, row.from_value) for row in rows} == {
        (HistoryAction.ASSIGNEE_CHANGE, str(story["dead"].pk))
    }
    assert len(rows) == 2
    (report,) = [entry.row for entry in reported.context["entries"]]
    assert (report.task_id, report.performed_by_id, report.to_value) == (
        running.pk,
        node.pk,
        "failed",
    )


def test_by_node_the_feed_has_the_sweep_s_failures_of_its_tasks(admin_site_client, settings):
    """A failure names no node in its values: before each row named its task's node, a
    node's deadline failures and lost work were missing from its feed."""
    settings.FAILOVER = "reassign"
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    late = seen(NodeFactory(name="late"), 1)
    dead, alive = seen(NodeFactory(name="dead"), 300), seen(NodeFactory(name="alive"), 1)
    expired = TaskFactory(assigned_node=late, locked_at=timezone.now() - timedelta(minutes=1))
    running = TaskFactory(assigned_node=dead, status="in_progress", attempts=1)
    sweep_run(batch_size=100)

    def failures(node, **query):
        page = entries(admin_site_client, node=node.pk, **query)
        rows = [entry.row for entry in page.context["entries"]]
        return [
            (row.task_id, row.cause)
            for row in rows
            if not isinstance(row, NodeEvent) and row.to_value == "failed"
        ]

    assert failures(late) == [(expired.pk, FailureCause.DEADLINE)]
    assert failures(late, cause="deadline") == [(expired.pk, FailureCause.DEADLINE)]
    assert failures(dead) == [(running.pk, FailureCause.NODE_LOST)]
    assert failures(alive) == []
    # Its move names the node it went to, as the failure named the node it was lost on.
    (move,) = TaskHistory.objects.filter(task=running, action=HistoryAction.ASSIGNEE_CHANGE)
    assert str(move.node_id) == move.to_value != str(dead.pk)


@pytest.mark.parametrize("url", [FEED, reverse("admin:tasks_taskhistory_changelist")])
def test_history_pages_read_their_rows_without_joining_the_tasks(admin_site_client, url):
    # Joined, MariaDB 10.11 read every task first and sorted the whole history: 12 s
    # for a first page at a million rows (docs/performance.md, Activity feed).
    TaskFactory.create_batch(3)

    with CaptureQueriesContext(connection) as queries:
        assert admin_site_client.get(url).status_code == 200

    history_reads = [
        q["sql"].replace("`", '"')
        for q in queries
        if 'FROM "tasks_taskhistory"' in q["sql"].replace("`", '"')
    ]
    assert history_reads
    assert not any('JOIN "tasks_task"' in sql for sql in history_reads)
