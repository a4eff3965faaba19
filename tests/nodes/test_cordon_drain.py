"""Cordon, drain and uncordon (SPEC, Nodes: cordon, drain, maintenance windows): state
stored as a cordon row, derived when read, every step a node event."""

from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from nodes.models import Cordon, Node, NodeEvent, NodeEventKind, node_state
from nodes.services import node_cordon, node_set_labels
from tasks import node_work as node_work_module
from tasks import services
from tasks.models import FailureCause, HistoryAction, Task, TaskHistory, TaskStatus
from tests.api import assert_json_error
from tests.concurrency import at_once, pause_at
from tests.factories import AdminFactory, NodeFactory, TaskFactory
from tests.mariadb import row_lock_test

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS = TaskStatus.PENDING, TaskStatus.IN_PROGRESS


def seen(*nodes):
    User.objects.filter(pk__in=[node.pk for node in nodes]).update(last_seen=timezone.now())


def post(client, node, verb, **body):
    return client.post(f"/api/nodes/{node.pk}/{verb}", body)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def future(minutes=30):
    return (timezone.now() + timedelta(minutes=minutes)).isoformat()


def test_a_cordoned_node_gets_no_new_work_but_keeps_and_claims_its_own(
    admin_client, admin_user, node, node_client
):
    own = TaskFactory(assigned_node=node)
    other = TaskFactory(assigned_node=NodeFactory())

    state = post(admin_client, node, "cordon", reason="disk swap").json()

    assert (state["state"], state["schedulable"], state["reason"]) == (
        "cordoned",
        False,
        "disk swap",
    )
    assert state["by"] == str(admin_user.pk)
    create = admin_client.post(
        "/api/tasks",
        {"taskName": "n", "taskDetails": "d", "assignedNode": str(node.pk), "lockedAt": future()},
    )
    assert assert_json_error(create, 409)["message"].startswith("node is cordoned")
    assign = admin_client.put(
        "/api/tasks/assign", {"taskId": str(other.pk), "nodeId": str(node.pk)}
    )
    assert_json_error(assign, 409)
    assert Task.objects.get(pk=other.pk).assigned_node_id != node.pk
    assert node_client.post("/api/tasks/claim").json()["task"]["id"] == str(own.pk)
    beat = node_client.post("/api/nodes/heartbeat").json()
    assert (beat["schedulable"], beat["drainDeadline"]) == (False, None)


def test_an_edit_that_keeps_a_cordoned_nodes_task_on_it_is_allowed(admin_client, node):
    task = TaskFactory(assigned_node=node)
    node_cordon(node_id=node.pk, reason="x", actor=None)

    edit = admin_client.put(
        "/api/tasks",
        {
            "taskId": str(task.pk),
            "taskName": "renamed",
            "taskDetails": "d",
            "assignedNode": str(node.pk),
            "lockedAt": future(),
        },
    )

    assert edit.status_code == 200, edit.content


def test_a_drain_moves_pending_work_now_and_lets_running_work_finish(
    admin_client, admin_user, node, node_client
):
    other = NodeFactory()
    seen(node, other)
    pending = TaskFactory.create_batch(3, assigned_node=node)
    running = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)

    state = post(admin_client, node, "drain", reason="kernel upgrade").json()

    assert (state["state"], state["movedCount"], state["stayedCount"]) == ("draining", 3, 0)
    assert state["drainDeadline"] is not None
    for task in pending:
        task.refresh_from_db()
        assert (task.assigned_node_id, task.status) == (other.pk, PENDING)
        # Moved at once by the admin's request: in the admin's name (SPEC: performedBy).
        row = TaskHistory.objects.get(task=task, action=HistoryAction.ASSIGNEE_CHANGE)
        assert (row.performed_by, row.cause) == (admin_user, FailureCause.DRAINED)
    beat = node_client.post("/api/nodes/heartbeat").json()
    assert beat["schedulable"] is False and beat["drainDeadline"] == state["drainDeadline"]
    # Its running task may still finish; nothing new is claimed.
    TaskFactory(assigned_node=node)  # one that had nowhere to go, say
    assert node_client.post("/api/tasks/claim").status_code == 204
    done = node_client.put(
        "/api/tasks/shift-status",
        {"taskId": str(running.pk), "taskStatus": "completed", "attempt": 1},
    )
    assert done.json()["task"]["status"] == "completed"


def test_a_drain_with_nowhere_to_go_says_how_many_stay(admin_client, node):
    TaskFactory.create_batch(2, assigned_node=node)

    state = post(admin_client, node, "drain", reason="r").json()

    assert (state["movedCount"], state["stayedCount"]) == (0, 2)
    assert Task.objects.filter(assigned_node=node, status=PENDING).count() == 2


def test_past_the_drain_deadline_the_sweep_fails_and_moves_the_running_work(node, settings):
    other = NodeFactory()
    seen(node, other)
    running = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    node_cordon(
        node_id=node.pk,
        reason="r",
        actor=None,
        drain_deadline=timezone.now() + timedelta(minutes=5),
    )
    call_command("collect_failed", verbosity=0)
    assert Task.objects.get(pk=running.pk).status == IN_PROGRESS  # before the deadline

    Cordon.objects.filter(node=node).update(drain_deadline=timezone.now() - timedelta(seconds=1))
    call_command("collect_failed", verbosity=0)

    running.refresh_from_db()
    assert (running.assigned_node_id, running.status) == (other.pk, PENDING)
    failed = TaskHistory.objects.get(task=running, to_value=TaskStatus.FAILED)
    assert failed.cause == FailureCause.DRAINED


def test_automatic_moves_skip_a_cordoned_node(node, settings):
    settings.FAILOVER, settings.NODE_DOWN_AFTER = "reassign", 30
    cordoned, free = NodeFactory(), NodeFactory()
    seen(cordoned, free)
    User.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    node_cordon(node_id=cordoned.pk, reason="r", actor=None)
    tasks = TaskFactory.create_batch(4, assigned_node=node)

    call_command("collect_failed", verbosity=0)

    assert {Task.objects.get(pk=t.pk).assigned_node_id for t in tasks} == {free.pk}
    assert set(Node.objects.schedulable()) >= {node, free}
    assert cordoned not in set(Node.objects.schedulable())


def test_uncordon_makes_the_node_schedulable_and_every_step_is_an_event(
    admin_client, admin_user, node
):
    post(admin_client, node, "cordon", reason="one")
    post(admin_client, node, "drain", reason="two", deadline=future(10))

    state = post(admin_client, node, "uncordon", reason="done").json()

    assert (state["state"], state["schedulable"]) == ("schedulable", True)
    events = admin_client.get(f"/api/nodes/{node.pk}/events").json()["events"]
    assert [(e["kind"], e["reason"], e["actor"]) for e in events] == [
        (NodeEventKind.UNCORDON, "done", str(admin_user.pk)),
        (NodeEventKind.DRAIN, "two", str(admin_user.pk)),
        (NodeEventKind.CORDON, "one", str(admin_user.pk)),
    ]
    assert events[1]["deadline"] is not None
    listed = admin_client.get("/api/nodes").json()["nodes"]
    assert [n["state"] for n in listed if n["nodeId"] == str(node.pk)] == ["schedulable"]


@pytest.mark.parametrize(
    ("verb", "body", "field"),
    [
        ("cordon", {}, "reason"),
        ("cordon", {"reason": ""}, "reason"),
        ("cordon", {"reason": "x" * 501}, "reason"),
        ("drain", {"reason": "r", "deadline": "2020-01-01T00:00:00Z"}, "deadline"),
        ("drain", {"reason": "r", "deadline": "soon"}, "deadline"),
        ("uncordon", {"reason": ""}, "reason"),
        ("uncordon", {"reason": "x" * 501}, "reason"),
        ("uncordon", {"reason": 5}, "reason"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(
    admin_client, node, verb, body, field
):
    TaskFactory(assigned_node=node)
    error = assert_json_error(post(admin_client, node, verb, **body), 400)

    assert [e["field"] for e in error["errors"]] == [field]
    assert not Cordon.objects.exists() and not NodeEvent.objects.exists()


@pytest.mark.parametrize(
    ("raw", "reason"), [(None, ""), ("{}", ""), ('{"reason": "fan replaced"}', "fan replaced")]
)
def test_uncordon_needs_no_reason_and_records_one_when_given(
    admin_client, admin_user, node, raw, reason
):
    post(admin_client, node, "cordon", reason="fan")

    if raw is None:  # no body at all
        response = admin_client.generic("POST", f"/api/nodes/{node.pk}/uncordon")
    else:
        response = admin_client.generic(
            "POST", f"/api/nodes/{node.pk}/uncordon", raw, content_type="application/json"
        )

    assert response.status_code == 200, response.content
    assert (response.json()["state"], response.json()["schedulable"]) == ("schedulable", True)
    event = NodeEvent.objects.filter(node=node).first()
    assert (event.kind, event.reason, event.actor) == (NodeEventKind.UNCORDON, reason, admin_user)


def test_uncordon_of_a_schedulable_node_is_a_409(admin_client, node):
    assert_json_error(post(admin_client, node, "uncordon", reason="r"), 409)
    assert not NodeEvent.objects.exists()


@pytest.mark.parametrize("node_id", ["00000000-0000-0000-0000-000000000000", "nope"])
@pytest.mark.parametrize("verb", ["cordon", "drain", "uncordon"])
def test_an_unknown_node_is_a_404(admin_client, node_id, verb):
    response = admin_client.post(f"/api/nodes/{node_id}/{verb}", {"reason": "r"})
    assert_json_error(response, 404)
    assert_json_error(admin_client.get(f"/api/nodes/{node_id}/events"), 404)


def test_only_an_admin_cordons_or_reads_events(node_client, node):
    assert_json_error(post(node_client, node, "cordon", reason="r"), 403)
    assert_json_error(node_client.get(f"/api/nodes/{node.pk}/events"), 403)
    assert not Cordon.objects.exists()


def test_node_events_are_append_only(node):
    event = NodeEvent.objects.create(node=node, kind=NodeEventKind.CORDON, reason="r")
    with pytest.raises(Exception, match="cannot be"):
        event.save()
    with pytest.raises(Exception, match="cannot be"):
        NodeEvent.objects.all().delete()


def test_the_admin_site_neither_offers_nor_takes_a_cordoned_node(admin_site_client, node):
    from django.urls import reverse

    node_cordon(node_id=node.pk, reason="r", actor=None)
    add = admin_site_client.post(
        reverse("admin:tasks_task_add"),
        {
            "name": "n",
            "details": "d",
            "assigned_node": str(node.pk),
            "locked_at_0": (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%d"),
            "locked_at_1": "12:00:00",
        },
    )
    assert add.status_code == 200 and b"node is cordoned" in add.content
    assert not Task.objects.exists()


def test_metrics_count_nodes_by_scheduling_state(client, node, settings):
    settings.METRICS_TOKEN = "scrape"
    NodeFactory()
    node_cordon(node_id=NodeFactory().pk, reason="r", actor=None)
    node_cordon(
        node_id=node.pk, reason="r", actor=None, drain_deadline=timezone.now() + timedelta(hours=1)
    )

    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape").content.decode()

    for state, count in (("schedulable", 1), ("cordoned", 1), ("draining", 1)):
        assert f'taskmgmt_nodes_by_schedule{{state="{state}"}} {count}.0' in text


def test_a_cordon_over_a_drain_keeps_the_drain_and_its_deadline(admin_client, node, settings):
    other = NodeFactory()
    seen(node, other)
    running = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    drained = post(admin_client, node, "drain", reason="disk", deadline=future(10)).json()

    state = post(admin_client, node, "cordon", reason="disk, and a fan")

    assert state.status_code == 200, state.content
    assert (state.json()["state"], state.json()["drainDeadline"], state.json()["reason"]) == (
        "draining",
        drained["drainDeadline"],
        "disk, and a fan",
    )
    event = NodeEvent.objects.filter(node=node).first()
    assert (event.kind, event.detail) == (NodeEventKind.CORDON, "reason changed; still draining")
    # The drain still ends the running work at its deadline.
    Cordon.objects.filter(node=node).update(drain_deadline=timezone.now() - timedelta(seconds=1))
    call_command("collect_failed", verbosity=0)
    running.refresh_from_db()
    assert (running.assigned_node_id, running.status) == (other.pk, PENDING)


def test_a_repeat_cordon_keeps_who_cordoned_and_since_when(
    admin_client, admin_user, node, client_for
):
    first = post(admin_client, node, "cordon", reason="fan").json()
    second_admin = client_for(AdminFactory())

    same = post(second_admin, node, "cordon", reason="fan").json()
    changed = post(second_admin, node, "cordon", reason="fan and psu").json()

    for state in (same, changed):
        assert (state["state"], state["by"], state["since"]) == (
            "cordoned",
            str(admin_user.pk),
            first["since"],
        )
    assert changed["reason"] == "fan and psu"
    # The same cordon again is no event; a new reason is one, by whoever gave it.
    events = admin_client.get(f"/api/nodes/{node.pk}/events").json()["events"]
    assert [(e["kind"], e["reason"], e["detail"]) for e in events] == [
        ("cordon", "fan and psu", "reason changed"),
        ("cordon", "fan", ""),
    ]


def test_a_repeat_drain_keeps_its_deadline_unless_it_names_one(admin_client, admin_user, node):
    cordoned = post(admin_client, node, "cordon", reason="fan").json()
    first = post(admin_client, node, "drain", reason="fan").json()
    assert (first["state"], first["by"], first["since"]) == (
        "draining",
        str(admin_user.pk),
        cordoned["since"],
    )

    again = post(admin_client, node, "drain", reason="fan, still").json()
    assert again["drainDeadline"] == first["drainDeadline"]
    assert again["since"] == cordoned["since"]

    later = future(240)
    moved = post(admin_client, node, "drain", reason="fan", deadline=later).json()
    assert parse(moved["drainDeadline"]) == parse(later)
    events = NodeEvent.objects.filter(node=node, kind=NodeEventKind.DRAIN)
    assert [event.deadline for event in events] == [
        parse(moved["drainDeadline"]),
        parse(first["drainDeadline"]),
        parse(first["drainDeadline"]),
    ]


def test_the_sweeps_moves_at_a_drains_deadline_are_the_systems(admin_client, node):
    other = NodeFactory()
    seen(node, other)
    running = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    post(admin_client, node, "drain", reason="r", deadline=future(10))

    Cordon.objects.filter(node=node).update(drain_deadline=timezone.now() - timedelta(seconds=1))
    call_command("collect_failed", verbosity=0)

    rows = TaskHistory.objects.filter(task=running, cause=FailureCause.DRAINED)
    assert {row.action for row in rows} >= {HistoryAction.ASSIGNEE_CHANGE}
    assert {row.performed_by for row in rows} == {None}
    history = admin_client.get(f"/api/tasks/history/{running.pk}").json()["history"]
    assert {row["performedBy"] for row in history if row["action"] == "assignee_change"} == {None}


def test_at_a_drains_deadline_pending_tasks_with_nowhere_to_go_stay_pending(admin_client, node):
    """SPEC: a drain's pending tasks with nowhere to go stay; only its in-progress ones
    are failed (cause drained) at the deadline. A drained node is not a lost one: once
    uncordoned, or its window over, it claims them again."""
    other = NodeFactory()
    seen(node, other)
    node_set_labels(node=node, labels={"gpu": "true"})
    gpu_only = TaskFactory(assigned_node=node, node_selector={"gpu": "true"})
    pinned = TaskFactory(assigned_node=node, pinned=True)
    running = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    state = post(admin_client, node, "drain", reason="r", deadline=future(10)).json()
    assert state["stayedCount"] == 2
    late = TaskFactory(assigned_node=node)  # one that could move by the deadline, say

    Cordon.objects.filter(node=node).update(drain_deadline=timezone.now() - timedelta(seconds=1))
    call_command("collect_failed", verbosity=0)

    for task in (gpu_only, pinned):
        task.refresh_from_db()
        assert (task.status, task.assigned_node_id, task.failure_cause) == (PENDING, node.pk, "")
    late.refresh_from_db()
    assert (late.status, late.assigned_node_id) == (PENDING, other.pk)
    running.refresh_from_db()
    assert (running.status, running.assigned_node_id) == (PENDING, other.pk)
    assert TaskHistory.objects.get(task=running, to_value=TaskStatus.FAILED).cause == (
        FailureCause.DRAINED
    )
    # Uncordoned, the node claims what stayed.
    post(admin_client, node, "uncordon")
    assert Task.objects.claimable_count(node, timezone.now()) == 2


def test_a_draining_node_s_heartbeat_counts_nothing_to_claim(admin_client, node, node_client):
    # Its pending tasks had nowhere to go (no other node), so they stay on it.
    TaskFactory.create_batch(2, assigned_node=node)
    assert node_client.post("/api/nodes/heartbeat").json()["pendingCount"] == 2

    post(admin_client, node, "drain", reason="kernel upgrade")

    # Its claims answer 204: a count of 2 would send its worker claiming for nothing.
    assert node_client.post("/api/nodes/heartbeat").json()["pendingCount"] == 0
    assert node_client.post("/api/tasks/claim").status_code == 204
    # Cordoned only, it still claims its own, and the count says so.
    post(admin_client, node, "uncordon")
    post(admin_client, node, "cordon", reason="just no new work")
    assert node_client.post("/api/nodes/heartbeat").json()["pendingCount"] == 2


def test_a_drain_deadline_with_a_nul_is_a_400_and_nothing_changes(admin_client, node):
    response = post(admin_client, node, "drain", reason="r", deadline=future() + "\x00")

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["deadline"]
    assert node_state(node.pk)["state"] == "schedulable"


@row_lock_test
def test_concurrent_cordons_and_drains_of_one_node_all_answer_200():
    # Each looked for the node's cordon row FOR UPDATE, found none (a gap lock on
    # MariaDB), then inserted it: two at once deadlocked, a 503 "database unavailable".
    node, admin = NodeFactory(), AdminFactory()
    verbs = ["cordon", "drain"] * 4

    def send(verb):
        return lambda client: post(client, node, verb, reason=verb).status_code

    answers = at_once(admin, [send(verb) for verb in verbs])

    assert answers == [200] * len(verbs)
    assert Cordon.objects.filter(node=node).count() == 1
    assert NodeEvent.objects.filter(node=node).count() >= 2


def _new_work_for(node, other):
    """Each way of giving `node` new work: (the services' function to pause after, a send)."""
    other_task = TaskFactory(assigned_node=other)
    body = {"taskName": "n", "taskDetails": "d", "assignedNode": str(node.pk), "lockedAt": future()}
    return {
        "create": ("check_schedulable", lambda client: client.post("/api/tasks", body)),
        "assign": (
            "check_schedulable",
            lambda client: client.put(
                "/api/tasks/assign", {"taskId": str(other_task.pk), "nodeId": str(node.pk)}
            ),
        ),
        "bulk": (
            "labels_by_node",
            lambda client: client.post("/api/tasks/bulk", {"tasks": [body]}),
        ),
    }


@row_lock_test
@pytest.mark.parametrize("way", ["create", "assign", "bulk"])
def test_new_work_racing_a_drain_is_refused_or_moved_never_left_on_the_node(monkeypatch, way):
    # The write checked the node schedulable, the drain committed and moved the node's
    # pending tasks, then the write inserted its task: pending on a draining node,
    # which no claim takes, though the create answered 201.
    node, other, admin = NodeFactory(), NodeFactory(), AdminFactory()
    seen(node, other)
    pause_after, send_work = _new_work_for(node, other)[way]
    # The drain waits for this write's lock once fixed.
    pause = pause_at(monkeypatch, services, pause_after)
    drain = pause.then(lambda client: post(client, node, "drain", reason="r").status_code)

    work, drain_status = at_once(admin, [lambda client: send_work(client), drain])

    assert pause.paused.is_set()
    assert drain_status == 200
    assert work.status_code in (200, 201, 409), work.content
    assert not Task.objects.filter(assigned_node=node, status=PENDING).exists()


@row_lock_test
def test_a_drain_moves_a_pending_task_an_admin_is_editing_that_instant(monkeypatch):
    # The drain's move skipped the tasks another transaction held (SKIP LOCKED): a task
    # an admin was editing in place that instant stayed pending on the draining node,
    # where no claim takes it, counted neither moved nor stayed.
    node, other, admin = NodeFactory(), NodeFactory(), AdminFactory()
    seen(node, other)
    task = TaskFactory(assigned_node=node)
    # Paused once the edit holds the task's lock; the drain waits for it once fixed.
    pause = pause_at(monkeypatch, services, "_locked_task")
    body = {
        "taskId": str(task.pk),
        "taskName": "renamed",
        "taskDetails": "d",
        "assignedNode": str(node.pk),
        "lockedAt": future(),
    }

    drain = pause.then(lambda client: post(client, node, "drain", reason="r"))

    edited, drain_answer = at_once(admin, [lambda client: client.put("/api/tasks", body), drain])

    assert pause.paused.is_set()
    assert edited.status_code == 200, edited.content
    assert drain_answer.status_code == 200, drain_answer.content
    assert (drain_answer.json()["movedCount"], drain_answer.json()["stayedCount"]) == (1, 0)
    task.refresh_from_db()
    assert (task.assigned_node_id, task.status, task.name) == (other.pk, PENDING, "renamed")


@row_lock_test
def test_a_drain_leaves_a_task_its_node_claims_that_instant_to_run(monkeypatch):
    # The drain's move waits for the claim's lock, then reads the task again: started,
    # it is no pending task to move (it may finish until the drain's deadline).
    node, other, admin = NodeFactory(), NodeFactory(), AdminFactory()
    seen(node, other)
    task = TaskFactory(assigned_node=node)
    # The drain waits for this claim's lock.
    pause = pause_at(monkeypatch, type(Task.objects), "claimable_first")
    drain = pause.then(lambda client: post(client, node, "drain", reason="r"))

    node_token = str(RefreshToken.for_user(node).access_token)

    def claim(client):
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {node_token}")
        return client.post("/api/tasks/claim")

    claim_answer, drain_answer = at_once(admin, [claim, drain])

    assert pause.paused.is_set()
    assert claim_answer.status_code == 200, claim_answer.content
    assert drain_answer.status_code == 200, drain_answer.content
    assert (drain_answer.json()["movedCount"], drain_answer.json()["stayedCount"]) == (0, 0)
    task.refresh_from_db()
    assert (task.assigned_node_id, task.status) == (node.pk, IN_PROGRESS)
    assert not TaskHistory.objects.filter(task=task, action=HistoryAction.ASSIGNEE_CHANGE).exists()


@row_lock_test
def test_a_drain_uncordoned_before_its_move_never_moves_a_task_to_its_own_node(monkeypatch):
    # The drain's cordon committed, an uncordon committed, then the drain moved the node's
    # pending work: the node, schedulable again and the least loaded, was placement's
    # pick, and its task "moved" to itself, an assignee_change from the node to the node.
    node, other, admin = NodeFactory(), NodeFactory(), AdminFactory()
    seen(node, other)
    task = TaskFactory(assigned_node=node)
    TaskFactory.create_batch(3, assigned_node=other)
    pause = pause_at(monkeypatch, node_work_module, "tasks_drain_pending", before=True, wait=5)
    uncordon = pause.then(lambda client: post(client, node, "uncordon"))

    drain = lambda client: post(client, node, "drain", reason="r")  # noqa: E731
    drained, undone = at_once(admin, [drain, uncordon])

    assert pause.paused.is_set()
    assert (drained.status_code, undone.status_code) == (200, 200)
    task.refresh_from_db()
    assert task.assigned_node_id == other.pk
    assert not TaskHistory.objects.filter(
        task=task, action=HistoryAction.ASSIGNEE_CHANGE, to_value=str(node.pk)
    ).exists()
