"""Placement and maintenance windows (issue 20, Deliver 4; docs/placement.md): automatic
placement avoids a node whose coming window starts before the task's deadline when
another matching node has none, and falls back to the usual choice when every one has."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from nodes.models import MaintenanceWindow, NodeLabels
from tasks.models import Task, TaskStatus
from tasks.placement import Placement
from tasks.services import (
    FailoverCounts,
    tasks_fail_over,
    tasks_reassign_by_selector,
)
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

GPU = {"gpu": "true"}


@pytest.fixture(autouse=True)
def _liveness(settings):
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    settings.TASK_MAX_ATTEMPTS, settings.REASSIGN_DEADLINE_MINUTES = 3, 60
    settings.FAILOVER_MAX_DOWN_SHARE = 1


def gpu_node(name, *, seconds_ago=1):
    node = NodeFactory(name=name)
    User.objects.filter(pk=node.pk).update(
        last_seen=timezone.now() - timedelta(seconds=seconds_ago)
    )
    NodeLabels.objects.create(node=node, labels=GPU)
    return node


def window(node, *, starts_in, hours=2, drain=False):
    """A coming maintenance window of `node`, starting `starts_in` from now."""
    starts_at = timezone.now() + starts_in
    return MaintenanceWindow.objects.create(
        node=node,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=hours),
        reason="kernel upgrade",
        drain=drain,
    )


@pytest.fixture
def fleet():
    """Two GPU nodes: `idle` has no task but a window in an hour; `busy` has two tasks
    and no window. Without windows placement would pick `idle`."""
    idle, busy = gpu_node("idle"), gpu_node("busy")
    TaskFactory.create_batch(2, assigned_node=busy)
    window(idle, starts_in=timedelta(hours=1))
    return idle, busy


def later(**delta):
    return (timezone.now() + timedelta(**delta)).isoformat()


def create(client, locked_at):
    body = {"taskName": "render", "taskDetails": "frame", "lockedAt": locked_at}
    return client.post("/api/tasks", {**body, "nodeSelector": GPU}, format="json")


# --- Create and bulk ----------------------------------------------------------------


def test_a_created_task_avoids_a_node_whose_window_starts_before_its_deadline(admin_client, fleet):
    idle, busy = fleet

    placed = create(admin_client, later(days=1)).json()["task"]
    before_the_window = create(admin_client, later(minutes=30)).json()["task"]

    assert placed["assignedNode"] == str(busy.pk)
    # Due before the window starts: the least-loaded node, as ever.
    assert before_the_window["assignedNode"] == str(idle.pk)


def test_when_every_matching_node_has_a_window_the_least_loaded_is_picked(admin_client, fleet):
    idle, busy = fleet
    window(busy, starts_in=timedelta(hours=3))

    placed = create(admin_client, later(days=1)).json()["task"]

    assert placed["assignedNode"] == str(idle.pk)


def test_a_window_under_way_or_ended_is_not_a_coming_one(admin_client):
    under_way, ended, busy = gpu_node("under-way"), gpu_node("ended"), gpu_node("busy")
    TaskFactory.create_batch(2, assigned_node=busy)
    now = timezone.now()
    for node, starts, ends in (
        (under_way, now - timedelta(minutes=5), now + timedelta(hours=1)),
        (ended, now - timedelta(hours=2), now - timedelta(hours=1)),
    ):
        MaintenanceWindow.objects.create(node=node, starts_at=starts, ends_at=ends, reason="r")

    placed = create(admin_client, later(days=1)).json()["task"]

    # Under way: cordoned, never a candidate; ended: schedulable, with nothing coming.
    assert placed["assignedNode"] == str(ended.pk)


def test_a_bulk_places_each_item_by_its_own_deadline(admin_client, fleet):
    idle, busy = fleet
    items = [
        {"taskName": f"t{i}", "taskDetails": "d", "lockedAt": deadline, "nodeSelector": GPU}
        for i, deadline in enumerate([later(days=1), later(minutes=30), later(days=2)])
    ]

    answer = admin_client.post("/api/tasks/bulk", {"tasks": items}, format="json")

    assert answer.status_code == 201, answer.content
    placed = [task["assignedNode"] for task in answer.json()["tasks"]]
    assert placed == [str(busy.pk), str(idle.pk), str(busy.pk)]


def test_reassign_by_selector_avoids_the_node_with_a_window(fleet):
    busy = fleet[1]
    other = NodeFactory()
    task = TaskFactory(assigned_node=other, status=TaskStatus.FAILED)

    assert tasks_reassign_by_selector(task_ids=[task.pk], selector=GPU) == [task.pk]

    task.refresh_from_db()
    assert task.assigned_node_id == busy.pk


# --- Failover and drain -------------------------------------------------------------


def test_failover_avoids_the_node_whose_window_starts_before_the_moved_deadline(settings, fleet):
    settings.FAILOVER = "reassign"
    idle, busy = fleet
    dead = gpu_node("dead", seconds_ago=300)
    running = TaskFactory(
        assigned_node=dead, node_selector=GPU, status=TaskStatus.IN_PROGRESS, attempts=1
    )
    # Its deadline is stale: it moves with a fresh one (REASSIGN_DEADLINE_MINUTES, 60),
    # which the window starting in an hour and a half still falls before.
    soon = TaskFactory(assigned_node=dead, locked_at=timezone.now() + timedelta(minutes=5))
    MaintenanceWindow.objects.filter(node=idle).update(
        starts_at=timezone.now() + timedelta(minutes=50)
    )

    assert tasks_fail_over(batch_size=10) == FailoverCounts(failed=1, reassigned=2)

    for task in (running, soon):
        task.refresh_from_db()
        assert (task.assigned_node_id, task.status) == (busy.pk, TaskStatus.PENDING)


def test_failover_falls_back_when_every_alive_match_has_a_window(settings, fleet):
    settings.FAILOVER = "reassign"
    idle, busy = fleet
    window(busy, starts_in=timedelta(hours=2))
    dead = gpu_node("dead", seconds_ago=300)
    task = TaskFactory(assigned_node=dead, node_selector=GPU)

    assert tasks_fail_over(batch_size=10) == FailoverCounts(reassigned=1)

    task.refresh_from_db()
    assert task.assigned_node_id == idle.pk  # the least-loaded, as without windows


def test_a_drain_moves_pending_work_to_the_node_without_a_window(admin_client, fleet):
    busy = fleet[1]
    drained = gpu_node("drained")
    tasks = TaskFactory.create_batch(3, assigned_node=drained, node_selector=GPU)

    answer = admin_client.post(f"/api/nodes/{drained.pk}/drain", {"reason": "disk swap"})

    assert answer.json()["movedCount"] == 3, answer.content
    assert {Task.objects.get(pk=t.pk).assigned_node_id for t in tasks} == {busy.pk}


# --- What it costs ------------------------------------------------------------------


def test_placement_reads_the_windows_in_the_query_that_reads_the_nodes():
    nodes = [gpu_node(f"n{i}") for i in range(5)]
    with CaptureQueriesContext(connection) as without_windows:
        Placement(now=timezone.now(), flush=False)
    for i, node in enumerate(nodes):
        window(node, starts_in=timedelta(hours=i + 1))
        window(node, starts_in=timedelta(days=i + 1))

    with CaptureQueriesContext(connection) as with_windows:
        placement = Placement(now=timezone.now(), flush=False)

    assert len(with_windows) == len(without_windows)
    assert sorted(node.next_window for node in placement.nodes) == sorted(
        MaintenanceWindow.objects.filter(starts_at__lt=timezone.now() + timedelta(hours=6))
        .order_by("starts_at")
        .values_list("starts_at", flat=True)
    )


def test_failover_with_windows_costs_the_same_queries_for_few_tasks_or_many(settings, fleet):
    settings.FAILOVER = "reassign"
    dead = gpu_node("dead", seconds_ago=300)
    TaskFactory.create_batch(2, assigned_node=dead, node_selector=GPU)
    with CaptureQueriesContext(connection) as few:
        assert tasks_fail_over(batch_size=100).reassigned == 2

    TaskFactory.create_batch(40, assigned_node=dead, node_selector=GPU)
    with CaptureQueriesContext(connection) as many:
        assert tasks_fail_over(batch_size=100).reassigned == 40

    # Every one went to `busy`, the node without a window: one UPDATE for them all.
    assert set(Task.objects.filter(node_selector=GPU).values_list("assigned_node", flat=True)) == {
        fleet[1].pk
    }
    assert len(many) == len(few)
