"""Placement racing a change of the fleet (MariaDB: row locks): a task placed by its
selector lands on a node that matches and takes new work when its write commits, not
on one a label change or drain made unfit between the pick and the insert."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import User
from nodes import heartbeats
from nodes.models import Cordon, NodeLabels
from tasks import services
from tasks.models import Task, TaskHistory, TaskStatus
from tasks.selectors import node_open_task_ids
from tests.concurrency import at_once, pause_at
from tests.factories import AdminFactory, NodeFactory, TaskFactory
from tests.mariadb import ROW_LOCK_TESTS
from tests.redis_server import redis_cache, redis_database

pytestmark = ROW_LOCK_TESTS

GPU = {"gpu": "true"}
WAIT = 2  # seconds the paused write waits for the other side (it blocks once fixed)


def gpu_nodes(count):
    nodes = [NodeFactory() for _ in range(count)]
    for node in nodes:
        NodeLabels.objects.create(node=node, labels=GPU)
    User.objects.filter(pk__in=[node.pk for node in nodes]).update(last_seen=timezone.now())
    return nodes


def task(**fields):
    lock = (timezone.now() + timedelta(hours=1)).isoformat()
    return {"taskName": "render", "taskDetails": "frame", "lockedAt": lock, **fields}


def unlabel(client, node_id):
    return client.put(f"/api/nodes/{node_id}", {"labels": {"gpu": "false"}}, format="json")


def test_a_create_whose_picked_node_loses_its_labels_goes_to_a_node_that_matches(monkeypatch):
    # The create picked a gpu node, an admin took the node's gpu label away and
    # committed, then the create inserted its task there: a 201 on a node its
    # selector no longer matches.
    gpu_nodes(2)
    pause = pause_at(monkeypatch, services, "node_for", wait=WAIT)
    send = lambda client: client.post("/api/tasks", task(nodeSelector=GPU), format="json")  # noqa: E731
    change = pause.then(lambda client: unlabel(client, pause.seen.pk))

    created, relabelled = at_once(AdminFactory(), [send, change])

    assert pause.paused.is_set()
    assert relabelled.status_code == 200, relabelled.content
    assert created.status_code == 201, created.content
    node_id = created.json()["task"]["assignedNode"]
    assert node_id != str(pause.seen.pk)
    assert NodeLabels.objects.get(node_id=node_id).labels == GPU


def test_a_create_whose_picked_node_is_drained_goes_to_another_not_a_409(monkeypatch):
    # A create without a node named none, so a drain of the node placement picked is no
    # reason to refuse it (it was a 409 "node is cordoned"): placement picks again.
    gpu_nodes(2)
    pause = pause_at(monkeypatch, services, "node_for", wait=WAIT)
    send = lambda client: client.post("/api/tasks", task(nodeSelector=GPU), format="json")  # noqa: E731
    drain = lambda client: client.post(f"/api/nodes/{pause.seen.pk}/drain", {"reason": "r"})  # noqa: E731

    created, drained = at_once(AdminFactory(), [send, pause.then(drain)])

    assert pause.paused.is_set()
    assert drained.status_code == 200, drained.content
    assert created.status_code == 201, created.content
    assert created.json()["task"]["assignedNode"] != str(pause.seen.pk)


def test_a_bulk_create_places_again_when_a_picked_node_loses_its_labels(monkeypatch):
    gpu_nodes(2)
    # Paused before the nodes placement chose are locked: both have tasks by then.
    pause = pause_at(monkeypatch, services, "lock_nodes", before=True, wait=WAIT)
    items = [task(nodeSelector=GPU, taskName=f"t{index}") for index in range(4)]
    send = lambda client: client.post("/api/tasks/bulk", {"tasks": items}, format="json")  # noqa: E731
    change = pause.then(lambda client: unlabel(client, min(pause.seen[0])))

    created, relabelled = at_once(AdminFactory(), [send, change])

    assert pause.paused.is_set()
    assert relabelled.status_code == 200, relabelled.content
    assert created.status_code == 201, created.content
    labels = dict(NodeLabels.objects.values_list("node_id", "labels"))
    nodes = {row.assigned_node_id for row in Task.objects.all()}
    assert Task.objects.count() == 4
    assert all(labels[node_id] == GPU for node_id in nodes), nodes


# Its own database of the tests' Redis (tests/redis_server.py): no other test flushes it.
BEATS_REDIS_DB = 15


@pytest.mark.parametrize("placed", ["bulk", "create"])
def test_a_placed_write_holds_no_node_lock_before_it_locks_its_nodes(monkeypatch, settings, placed):
    # Placement wrote the beats waiting in Redis (heartbeats.flush) inside the write's
    # transaction: that UPDATE of last_seen kept the beating node's row locked until the
    # write committed, taken before `lock_nodes` and out of its key order. A broadcast,
    # which locks every node it gives a task in key order, then held a lower node and
    # waited for the beating one, while the write waited for the lower one: MariaDB's
    # deadlock (1213), a 503 to one of the two admins. Paused where it is about to lock
    # its nodes, the write must hold none yet.
    with redis_database(BEATS_REDIS_DB) as url:
        settings.CACHES = redis_cache(url)
        settings.NODE_HEARTBEAT_FLUSH_SECONDS = 60
        low, high = sorted(gpu_nodes(2), key=lambda node: str(node.pk))
        TaskFactory(assigned_node=high)  # placement picks the other one, `low`
        # The first beat of a flush interval is written at once; the next ones wait.
        heartbeats.record(node_id=NodeFactory().pk, now=timezone.now())
        beat = timezone.now()
        heartbeats.record(node_id=high.pk, now=beat)
        assert heartbeats.pending([high.pk])
        pause = pause_at(monkeypatch, services, "lock_nodes", before=True, wait=WAIT)
        body = task(nodeSelector=GPU)
        if placed == "bulk":
            send = lambda client: client.post("/api/tasks/bulk", {"tasks": [body]}, format="json")  # noqa: E731
        else:
            send = lambda client: client.post("/api/tasks", body, format="json")  # noqa: E731

        def free_nodes(client):
            with transaction.atomic():
                nodes = User.objects.filter(pk__in=[low.pk, high.pk]).select_for_update(
                    skip_locked=True
                )
                return {node.pk for node in nodes}

        created, free = at_once(AdminFactory(), [send, pause.then(free_nodes)])

    assert pause.paused.is_set()
    assert [str(node) for node in pause.seen[0]] == [str(low.pk)]
    assert free == {low.pk, high.pk}
    assert created.status_code == 201, created.content
    assert User.objects.get(pk=high.pk).last_seen == beat  # written all the same
    assert Task.objects.get(assigned_node=low).name == "render"


def test_a_broadcast_locks_a_node_that_came_to_match_before_giving_it_a_task(monkeypatch):
    # The broadcast read the matching nodes, locked them, and read them again; a node
    # labelled meanwhile was in the second read but not locked, so a drain of it could
    # commit before the broadcast's insert: a pending task left on a draining node.
    first, _ = gpu_nodes(2)
    late = NodeFactory()
    NodeLabels.objects.create(node=late, labels={"gpu": "false"})
    User.objects.filter(pk=late.pk).update(last_seen=timezone.now())
    original = services.broadcast_targets
    built = []
    paused = [threading.Event(), threading.Event()]
    resume = [threading.Event(), threading.Event()]

    def targets(*args, **kwargs):
        result = original(*args, **kwargs)
        built.append(result)
        if len(built) <= 2:  # after the first read, then after the second
            paused[len(built) - 1].set()
            resume[len(built) - 1].wait(timeout=WAIT)
        return result

    monkeypatch.setattr(services, "broadcast_targets", targets)

    def change_then_drain(client):
        try:
            paused[0].wait(timeout=5)
            client.put(f"/api/nodes/{late.pk}", {"labels": GPU}, format="json")
            resume[0].set()
            paused[1].wait(timeout=5)
            return client.post(f"/api/nodes/{late.pk}/drain", {"reason": "r"})
        finally:
            resume[0].set()
            resume[1].set()

    send = lambda client: client.post("/api/tasks/broadcast", task(nodeSelector=GPU), format="json")  # noqa: E731

    sent, drained = at_once(AdminFactory(), [send, change_then_drain])

    assert sent.status_code == 201, sent.content
    assert drained.status_code == 200, drained.content
    assert not Task.objects.filter(assigned_node=late, status=TaskStatus.PENDING).exists()
    assert Task.objects.filter(assigned_node=first).count() == 1


def test_a_reassign_by_label_whose_picked_node_is_drained_moves_the_tasks_elsewhere(
    monkeypatch,
):
    # The admin's reassign by label picked the nodes, then took each one's lock and
    # checked it: a drain committed in between made the whole reassign fail, "node is
    # cordoned", though the admin named no node.
    gpu_nodes(2)
    elsewhere = NodeFactory()
    moving = [TaskFactory(assigned_node=elsewhere).pk for _ in range(2)]
    pause = pause_at(monkeypatch, services, "lock_nodes", before=True, wait=WAIT)

    def reassign(client):
        try:
            return services.tasks_reassign_by_selector(task_ids=moving, selector=GPU)
        except Exception as error:  # the answer under test
            return error

    drain = lambda client: client.post(f"/api/nodes/{min(pause.seen[0])}/drain", {"reason": "r"})  # noqa: E731

    moved, drained = at_once(AdminFactory(), [reassign, pause.then(drain)])

    assert pause.paused.is_set()
    assert drained.status_code == 200, drained.content
    assert not isinstance(moved, Exception), moved
    assert sorted(moved) == sorted(moving)
    nodes = set(Task.objects.filter(pk__in=moving).values_list("assigned_node_id", flat=True))
    assert len(nodes) == 1 and min(pause.seen[0]) not in nodes
    assert NodeLabels.objects.get(node_id=nodes.pop()).labels == GPU


def test_a_drains_move_whose_target_is_drained_meanwhile_leaves_nothing_on_it(monkeypatch):
    # Two drains at once: the first picked the second node for its pending task, the
    # second drain committed and found nothing pending to move, then the first moved
    # its task there: pending on a draining node, where no claim takes it.
    first, second = gpu_nodes(2)
    moving = TaskFactory(assigned_node=first)
    pause = pause_at(monkeypatch, services, "_targets", wait=WAIT)
    drain_first = lambda client: client.post(f"/api/nodes/{first.pk}/drain", {"reason": "r"})  # noqa: E731
    drain_second = lambda client: client.post(f"/api/nodes/{second.pk}/drain", {"reason": "r"})  # noqa: E731

    moved, drained = at_once(AdminFactory(), [drain_first, pause.then(drain_second)])

    assert [target for _, target in pause.seen] == [second.pk]  # the race under test
    assert drained.status_code == 200, drained.content
    assert moved.status_code == 200, moved.content
    assert (moved.json()["movedCount"], moved.json()["stayedCount"]) == (0, 1)
    assert Task.objects.get(pk=moving.pk).assigned_node_id == first.pk
    assert not Task.objects.filter(assigned_node=second, status=TaskStatus.PENDING).exists()


def test_the_sweeps_move_whose_target_loses_its_labels_meanwhile_fails_it_for_a_human(
    monkeypatch,
):
    # At a drain's deadline the sweep picked a gpu node for the running task, an admin
    # took the node's gpu label away and committed, then the sweep moved the task there:
    # pending on a node its selector no longer matches.
    drained, target = gpu_nodes(2)
    running = TaskFactory(
        assigned_node=drained, status=TaskStatus.IN_PROGRESS, attempts=1, node_selector=GPU
    )
    Cordon.objects.create(
        node=drained, reason="r", drain_deadline=timezone.now() - timedelta(seconds=1)
    )
    pause = pause_at(monkeypatch, services, "_plan_fail_and_move", wait=WAIT)
    sweep = lambda client: client.post("/cron/collect-failed")  # noqa: E731
    change = pause.then(lambda client: unlabel(client, target.pk))

    swept, relabelled = at_once(AdminFactory(), [sweep, change])

    assert [node for _, node in pause.seen.moving] == [target.pk]  # the race under test
    assert relabelled.status_code == 200, relabelled.content
    assert swept.status_code == 200, swept.content
    running.refresh_from_db()
    assert (running.assigned_node_id, running.status) == (drained.pk, TaskStatus.FAILED)
    assert running.failure_reason == "drain: no alive schedulable node matches its nodeSelector"
    assert TaskHistory.objects.filter(task=running, action="assignee_change").count() == 0


@pytest.mark.parametrize("way", ["create", "assign", "edit", "bulk"])
def test_new_work_for_a_node_deactivated_that_instant_is_the_400_for_an_inactive_node(
    monkeypatch, way
):
    # The request found the node active, an admin deactivated it and committed, then the
    # write checked the node under its lock: a 409 "node is cordoned", an answer neither
    # order gives (before: 201 or 200; after: the 400 for an inactive node).
    node, other = NodeFactory(), NodeFactory()
    waiting = TaskFactory(assigned_node=other)
    lock = (timezone.now() + timedelta(hours=1)).isoformat()
    new = {"taskName": "n", "taskDetails": "d", "assignedNode": str(node.pk), "lockedAt": lock}
    sends = {
        "create": lambda client: client.post("/api/tasks", new, format="json"),
        "assign": lambda client: client.put(
            "/api/tasks/assign", {"taskId": str(waiting.pk), "nodeId": str(node.pk)}
        ),
        "edit": lambda client: client.put(
            "/api/tasks", {**new, "taskId": str(waiting.pk)}, format="json"
        ),
        "bulk": lambda client: client.post("/api/tasks/bulk", {"tasks": [new]}, format="json"),
    }
    pause = pause_at(monkeypatch, services, "lock_nodes", before=True, wait=WAIT)
    deactivate = pause.then(lambda client: User.objects.filter(pk=node.pk).update(is_active=False))

    admin = AdminFactory()
    answer, _ = at_once(admin, [sends[way], deactivate])
    monkeypatch.undo()

    assert pause.paused.is_set()
    [again] = at_once(admin, [sends[way]])  # the answer once the deactivation came first

    assert answer.status_code == 400, answer.content
    assert answer.json() == again.json()
    assert not Task.objects.filter(assigned_node=node).exists()


def as_on_a_long_lived_table(node):
    """Enough finished tasks (on `node`) and fresh statistics that MariaDB reads a node's
    open tasks through an index, as on a real table, not by scanning them in key order."""
    deadline = timezone.now() + timedelta(hours=1)
    Task.objects.bulk_create(
        Task(name="done", details="-", assigned_node=node, status=TaskStatus.COMPLETED,
             locked_at=deadline)
        for _ in range(3000)
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE tasks_task")
        cursor.fetchall()


def test_a_drain_racing_a_cancel_of_its_pending_task_is_no_deadlock(monkeypatch):
    # The drain's move locked the node's pending tasks through an index on status (its
    # records first, each task's row after), while a cancel held the task's row and then
    # changed its status, which needs that index record: MariaDB's deadlock (1213), a
    # 503 to one of them.
    node, other = gpu_nodes(2)
    tasks = [TaskFactory(assigned_node=node, node_selector=GPU) for _ in range(3)]
    as_on_a_long_lived_table(other)
    target = min(tasks, key=lambda task: str(task.pk))
    pause = pause_at(
        monkeypatch, services, "_locked_task", when=lambda task_id: task_id == target.pk, wait=WAIT
    )
    cancel = lambda client: client.post(f"/api/tasks/{target.pk}/cancel", {"reason": "r"})  # noqa: E731
    drain = lambda client: client.post(f"/api/nodes/{node.pk}/drain", {"reason": "r"})  # noqa: E731

    cancelled, drained = at_once(AdminFactory(), [cancel, pause.then(drain)])

    assert pause.paused.is_set()
    assert cancelled.status_code == 200, cancelled.content
    assert drained.status_code == 200, drained.content
    target.refresh_from_db()
    assert (target.status, target.assigned_node_id) == (TaskStatus.CANCELLED, node.pk)
    assert drained.json()["movedCount"] == 2


def test_a_reassign_of_a_nodes_open_tasks_racing_a_cancel_of_one_is_no_deadlock(monkeypatch):
    # The node page's "reassign all its open tasks" locked them through an index of
    # their node and status (index record before row) while a cancel held one's row and
    # then changed its status, which needs that record: MariaDB's deadlock (1213).
    node, other = gpu_nodes(2)
    tasks = [TaskFactory(assigned_node=node) for _ in range(3)]
    as_on_a_long_lived_table(other)
    target = min(tasks, key=lambda task: str(task.pk))
    pause = pause_at(
        monkeypatch, services, "_locked_task", when=lambda task_id: task_id == target.pk, wait=WAIT
    )
    cancel = lambda client: client.post(f"/api/tasks/{target.pk}/cancel", {"reason": "r"})  # noqa: E731

    def reassign(client):
        try:
            ids = list(node_open_task_ids(node))
            return len(services.tasks_reassign(task_ids=ids, node=other, from_node=node))
        except Exception as error:  # the race's outcome, asserted below
            return error

    cancelled, moved = at_once(AdminFactory(), [cancel, pause.then(reassign)])

    assert pause.paused.is_set()
    assert cancelled.status_code == 200, cancelled.content
    assert moved == 2, moved
    target.refresh_from_db()
    assert (target.status, target.assigned_node_id) == (TaskStatus.CANCELLED, node.pk)
