"""Placement (tasks.placement, SPEC "Placement"): selectors pick the node on create,
priorities order claims, and failover moves a task only to a node that matches it."""

import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import User
from nodes import heartbeats
from nodes.models import NodeLabels
from tasks.models import FailureCause, HistoryAction, Task, TaskStatus
from tasks.placement import Placement
from tasks.services import NO_MATCH_REASON, PINNED_REASON, FailoverCounts, tasks_fail_over
from tests.api import assert_json_error
from tests.factories import NodeFactory, TaskFactory
from tests.redis_server import redis_cache, redis_database

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS, FAILED = TaskStatus.PENDING, TaskStatus.IN_PROGRESS, TaskStatus.FAILED
GPU = {"gpu": "true"}


@pytest.fixture(autouse=True)
def _liveness(settings):
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    settings.TASK_MAX_ATTEMPTS, settings.REASSIGN_DEADLINE_MINUTES = 3, 60


def seen(node, seconds_ago):
    User.objects.filter(pk=node.pk).update(
        last_seen=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return node


def labelled(name, labels, seconds_ago=1):
    node = seen(NodeFactory(name=name), seconds_ago) if seconds_ago is not None else None
    node = node or NodeFactory(name=name)
    NodeLabels.objects.create(node=node, labels=labels)
    return node


def deadline():
    return (timezone.now() + timedelta(days=1)).isoformat()


def create(client, **fields):
    body = {"taskName": "render", "taskDetails": "frame 1", "lockedAt": deadline(), **fields}
    return client.post("/api/tasks", body, format="json")


# --- Create --------------------------------------------------------------------


def test_a_selector_without_a_node_goes_to_the_least_loaded_alive_matching_node(admin_client):
    busy = labelled("busy", {"gpu": "true", "region": "eu"})
    idle = labelled("idle", {"gpu": "true"})
    labelled("cpu", {"gpu": "false"})
    labelled("down", GPU, seconds_ago=300)
    TaskFactory(assigned_node=busy)

    response = create(admin_client, nodeSelector=GPU)

    assert response.status_code == 201, response.content
    task = response.json()["task"]
    assert (task["assignedNode"], task["nodeSelector"], task["priority"]) == (
        str(idle.pk),
        GPU,
        50,
    )
    assert Task.objects.get(pk=task["id"]).history.get().action == HistoryAction.INITIAL_ASSIGN


def test_without_an_alive_match_it_takes_a_stale_or_never_seen_one_but_never_a_down_one(
    admin_client,
):
    labelled("down", GPU, seconds_ago=300)
    stale = labelled("stale", GPU, seconds_ago=20)

    assert create(admin_client, nodeSelector=GPU).json()["task"]["assignedNode"] == str(stale.pk)


def test_no_matching_node_is_a_409_and_creates_nothing(admin_client):
    labelled("cpu", {"gpu": "false"})
    labelled("down", GPU, seconds_ago=300)

    body = assert_json_error(create(admin_client, nodeSelector=GPU), 409)

    assert "no node matches" in body["message"]
    assert not Task.objects.exists()


def test_a_409_says_when_the_nodes_with_the_labels_are_all_down(admin_client):
    labelled("cpu", {"gpu": "false"})
    labelled("down", GPU, seconds_ago=300)

    body = assert_json_error(create(admin_client, nodeSelector=GPU), 409)

    # Not "no schedulable node has the labels": one has them, but it is down.
    assert body["message"] == (
        "no node matches: every schedulable node with the nodeSelector's labels is down"
    )
    body = assert_json_error(create(admin_client, nodeSelector={"gpu": "maybe"}), 409)
    assert body["message"] == "no node matches: no schedulable node has the nodeSelector's labels"


def test_an_empty_selector_lets_the_server_pick_any_node(admin_client):
    node = labelled("any", {})

    task = create(admin_client, nodeSelector={}).json()["task"]

    assert (task["assignedNode"], task["nodeSelector"]) == (str(node.pk), None)


def test_a_null_node_beside_a_selector_is_left_to_placement(admin_client):
    labelled("cpu", {"gpu": "false"})
    gpu = labelled("gpu", GPU)

    response = create(admin_client, assignedNode=None, nodeSelector=GPU)

    assert response.status_code == 201, response.content
    assert response.json()["task"]["assignedNode"] == str(gpu.pk)


def test_a_null_node_without_a_selector_is_still_a_400(admin_client):
    body = assert_json_error(create(admin_client, assignedNode=None), 400)

    assert body["errors"] == [{"field": "assignedNode", "message": "This field may not be null."}]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/tasks", "nodeSelector"),
        ("/api/tasks/bulk", "tasks[0].nodeSelector"),
        ("/api/tasks/broadcast", "nodeSelector"),
    ],
)
@pytest.mark.parametrize(
    "selector", [{"gpu": "\ud800"}, {"gpu": "a\udfffb"}, {"gpu\ud800": "true"}, {"gpu": "\x00"}]
)
def test_a_selector_with_a_lone_surrogate_or_nul_is_a_400_naming_it(
    admin_client, path, field, selector
):
    labelled("gpu", GPU)
    body = {"taskName": "render", "taskDetails": "frame 1", "lockedAt": deadline()}
    body["nodeSelector"] = selector
    if path.endswith("bulk"):
        body = {"tasks": [body]}

    # As the client sends it: JSON text with the escape, which json.dumps writes.
    response = admin_client.post(path, json.dumps(body), content_type="application/json")

    assert [e["field"] for e in assert_json_error(response, 400)["errors"]] == [field]
    assert not Task.objects.exists()


def test_a_named_node_must_match_the_selector(admin_client):
    cpu = labelled("cpu", {"gpu": "false"})
    gpu = labelled("gpu", GPU)

    body = assert_json_error(create(admin_client, assignedNode=str(cpu.pk), nodeSelector=GPU), 400)
    assert [e["field"] for e in body["errors"]] == ["assignedNode"]
    assert not Task.objects.exists()
    response = create(admin_client, assignedNode=str(gpu.pk), nodeSelector=GPU)
    assert response.json()["task"]["assignedNode"] == str(gpu.pk)


def test_neither_a_node_nor_a_selector_is_a_400_on_assigned_node(admin_client):
    body = assert_json_error(create(admin_client), 400)
    assert [e["field"] for e in body["errors"]] == ["assignedNode"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"nodeSelector": {"GPU": "true"}}, "nodeSelector"),
        ({"nodeSelector": {"gpu": True}}, "nodeSelector"),
        ({"nodeSelector": ["gpu"]}, "nodeSelector"),
        ({"nodeSelector": {f"k{i}": "v" for i in range(33)}}, "nodeSelector"),
        ({"priority": 0}, "priority"),
        ({"priority": 101}, "priority"),
        ({"priority": "5"}, "priority"),
        ({"priority": 5.0}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": None}, "priority"),
    ],
)
def test_bad_selectors_and_priorities_are_a_400_naming_the_field(admin_client, node, fields, field):
    body = assert_json_error(create(admin_client, assignedNode=str(node.pk), **fields), 400)
    assert [e["field"] for e in body["errors"]] == [field]
    assert not Task.objects.exists()


# --- Priority --------------------------------------------------------------------


def test_claims_take_the_highest_priority_then_the_earliest_deadline_then_the_oldest(
    node_client, node
):
    soon, later = timezone.now() + timedelta(hours=1), timezone.now() + timedelta(hours=2)
    low = TaskFactory(assigned_node=node, priority=10, locked_at=soon)
    high_late = TaskFactory(assigned_node=node, priority=90, locked_at=later)
    high_soon = TaskFactory(assigned_node=node, priority=90, locked_at=soon)
    default = TaskFactory(assigned_node=node, locked_at=soon)

    claimed = [node_client.post("/api/tasks/claim").json()["task"]["id"] for _ in range(4)]

    assert claimed == [str(t.pk) for t in (high_soon, high_late, default, low)]


def test_priority_is_editable_while_pending_with_an_edit_row_naming_it(admin_client, node):
    task = TaskFactory(assigned_node=node)
    body = {
        "taskId": str(task.pk),
        "taskName": task.name,
        "taskDetails": task.details,
        "assignedNode": str(node.pk),
        "lockedAt": task.locked_at.isoformat(),
        "priority": 80,
    }

    response = admin_client.put("/api/tasks", body, format="json")

    assert response.json()["task"]["priority"] == 80
    edit = task.history.get(action=HistoryAction.EDIT)
    assert edit.to_value == "priority"
    del body["priority"]  # left out: kept, and no row
    assert admin_client.put("/api/tasks", body, format="json").json()["task"]["priority"] == 80
    assert task.history.filter(action=HistoryAction.EDIT).count() == 1
    Task.objects.filter(pk=task.pk).update(status=IN_PROGRESS)
    body["priority"] = 20
    assert_json_error(admin_client.put("/api/tasks", body, format="json"), 409)


def test_an_edit_keeps_the_node_matching_the_tasks_selector(admin_client):
    gpu, cpu = labelled("gpu", GPU), labelled("cpu", {})
    task = TaskFactory(assigned_node=gpu, node_selector=GPU)
    body = {
        "taskId": str(task.pk),
        "taskName": task.name,
        "taskDetails": task.details,
        "assignedNode": str(cpu.pk),
        "lockedAt": task.locked_at.isoformat(),
    }

    assert_json_error(admin_client.put("/api/tasks", body, format="json"), 400)
    body["nodeSelector"] = None  # dropping the selector frees it
    response = admin_client.put("/api/tasks", body, format="json")
    assert response.json()["task"]["assignedNode"] == str(cpu.pk)
    assert task.history.get(action=HistoryAction.EDIT).to_value == "nodeSelector"


def test_an_edit_changing_neither_the_node_nor_the_selector_is_not_refused_for_a_mismatch(
    admin_client,
):
    # The node's labels changed after the task was placed (an admin's assign may also
    # choose a node that does not match): the original's edit, which names the same
    # node and no selector, was a 400 on the assignedNode it did not change; so was a
    # client's that sends the task back as it read it, selector and all.
    gpu = labelled("gpu", GPU)
    task = TaskFactory(assigned_node=gpu, node_selector=GPU)
    NodeLabels.objects.filter(node=gpu).update(labels={})
    body = {
        "taskId": str(task.pk),
        "taskName": "renamed",
        "taskDetails": task.details,
        "assignedNode": str(gpu.pk),
        "lockedAt": task.locked_at.isoformat(),
    }

    response = admin_client.put("/api/tasks", body, format="json")

    assert response.status_code == 200
    assert response.json()["task"]["taskName"] == "renamed"
    body["nodeSelector"] = GPU  # sent back unchanged
    assert admin_client.put("/api/tasks", body, format="json").status_code == 200
    body["nodeSelector"] = {**GPU, "zone": "eu"}  # a new selector: the node must match it
    assert_json_error(admin_client.put("/api/tasks", body, format="json"), 400)


# --- Failover ----------------------------------------------------------------------


@pytest.fixture
def reassign(settings):
    settings.FAILOVER = "reassign"


def test_failover_moves_a_selector_task_only_to_a_matching_alive_node(reassign):
    dead = labelled("dead", GPU, seconds_ago=300)
    gpu = labelled("gpu", GPU)
    TaskFactory.create_batch(3, assigned_node=gpu)  # busier than the plain node
    plain = labelled("plain", {})
    task = TaskFactory(assigned_node=dead, node_selector=GPU, status=IN_PROGRESS, attempts=1)
    free = TaskFactory(assigned_node=dead)

    assert tasks_fail_over(batch_size=10) == FailoverCounts(failed=1, reassigned=2)

    task.refresh_from_db()
    free.refresh_from_db()
    assert (task.assigned_node_id, task.status) == (gpu.pk, PENDING)
    assert free.assigned_node_id == plain.pk  # no selector: the least-loaded, as before


def test_with_no_matching_alive_node_the_task_stays_failed_for_a_human(reassign, caplog):
    dead = labelled("dead", GPU, seconds_ago=300)
    labelled("plain", {})
    labelled("stale-gpu", GPU, seconds_ago=20)  # failover moves work to alive nodes only
    pending = TaskFactory(assigned_node=dead, node_selector=GPU)
    running = TaskFactory(assigned_node=dead, node_selector=GPU, status=IN_PROGRESS, attempts=1)
    stderr = StringIO()

    with caplog.at_level(logging.WARNING, logger="taskmgmt.sweep"):
        call_command("collect_failed", stderr=stderr, stdout=StringIO())

    for task, was in ((pending, PENDING), (running, IN_PROGRESS)):
        task.refresh_from_db()
        assert (task.assigned_node_id, task.status) == (dead.pk, FAILED)
        assert task.failure_cause == FailureCause.NODE_LOST
        assert task.failure_reason == NO_MATCH_REASON
        row = task.history.get(action=HistoryAction.STATUS_CHANGE)
        assert (row.from_value, row.to_value, row.cause) == (was, FAILED, FailureCause.NODE_LOST)
    assert "failed for a human" in stderr.getvalue()
    logged = [r for r in caplog.records if getattr(r, "event", None) == "failover_unplaced"]
    assert str(pending.pk) in logged[0].task_ids


def test_a_pinned_task_is_never_moved_to_another_node(reassign):
    dead = labelled("dead", {}, seconds_ago=300)
    labelled("alive", {})
    task = TaskFactory(assigned_node=dead, pinned=True)

    assert tasks_fail_over(batch_size=10) == FailoverCounts(failed=1, unplaced=1)

    task.refresh_from_db()
    assert (task.assigned_node_id, task.status, task.failure_reason) == (
        dead.pk,
        FAILED,
        PINNED_REASON,
    )


def test_with_no_alive_node_at_all_selector_tasks_stay_in_place_like_the_rest(reassign):
    dead = labelled("dead", GPU, seconds_ago=300)
    task = TaskFactory(assigned_node=dead, node_selector=GPU)

    assert tasks_fail_over(batch_size=10) == FailoverCounts(stranded=1)
    task.refresh_from_db()
    assert task.status == PENDING


def test_placement_spreads_a_batch_as_one_task_at_a_time_would():
    a, b = labelled("a", GPU), labelled("b", GPU)
    TaskFactory(assigned_node=a)
    placement = Placement(now=timezone.now())

    picks = [placement.pick(GPU) for _ in range(3)]

    assert picks.count(b.pk) == 2 and picks.count(a.pk) == 1
    assert placement.pick({"gpu": "false"}) is None


# Its own database of the tests' Redis (tests/redis_server.py): no other test flushes it.
REDIS_DB = 12


def test_placement_counts_the_beats_still_waiting_in_redis(settings):
    with redis_database(REDIS_DB) as url:
        settings.CACHES = redis_cache(url)
        settings.NODE_HEARTBEAT_FLUSH_SECONDS = 60
        node = labelled("beating", GPU, seconds_ago=300)  # down, as the database has it
        # The first beat of a flush interval is written at once; the next ones wait.
        heartbeats.record(node_id=NodeFactory().pk, now=timezone.now())
        heartbeats.record(node_id=node.pk, now=timezone.now())
        assert User.objects.get(pk=node.pk).last_seen < timezone.now() - timedelta(minutes=4)

        assert Placement(now=timezone.now()).pick(GPU) == node.pk
