"""Creating, editing, reassigning and deleting tasks through the API, as an admin."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus, deadline_text
from tests.api import TASK_FIELDS
from tests.concurrency import at_once
from tests.factories import AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db


def in_days(days: float) -> datetime:
    return timezone.now() + timedelta(days=days)


def task_body(node, **changes) -> dict:
    body = {
        "taskName": "Reindex",
        "taskDetails": "Rebuild the search index.",
        "assignedNode": str(node.pk),
        "lockedAt": in_days(1).isoformat(),
    }
    return {**body, **changes}


def error_fields(response) -> list:
    assert set(response.json()) == {"title", "message", "errors"}
    return [error["field"] for error in response.json()["errors"]]


# --- POST /api/tasks ----------------------------------------------------------


def test_admin_creates_a_pending_task_for_a_node(admin_client, admin_user, node):
    deadline = in_days(2)

    response = admin_client.post("/api/tasks", task_body(node, lockedAt=deadline.isoformat()))

    assert response.status_code == 201
    task = response.json()["task"]
    assert set(task) == TASK_FIELDS
    assert task["taskName"] == "Reindex"
    assert task["taskDetails"] == "Rebuild the search index."
    assert task["assignedNode"] == str(node.pk)
    assert task["status"] == "pending"
    assert task["active"] is True
    assert datetime.fromisoformat(task["lockedAt"]) == deadline
    stored = Task.objects.get(pk=task["id"])
    assert (stored.name, stored.assigned_node, stored.locked_at) == ("Reindex", node, deadline)
    history = list(stored.history.values_list("action", "to_value", "performed_by"))
    assert history == [(HistoryAction.INITIAL_ASSIGN, str(node.pk), admin_user.pk)]


def test_a_deadline_without_offset_is_taken_as_utc(admin_client, node):
    response = admin_client.post("/api/tasks", task_body(node, lockedAt="2099-01-02T10:30:00"))

    assert response.status_code == 201
    assert response.json()["task"]["lockedAt"] == "2099-01-02T10:30:00Z"


def test_a_deadline_with_an_offset_keeps_its_instant(admin_client, node):
    response = admin_client.post(
        "/api/tasks", task_body(node, lockedAt="2099-01-02T10:30:00+02:00")
    )

    assert response.status_code == 201
    assert response.json()["task"]["lockedAt"] == "2099-01-02T08:30:00Z"
    task = Task.objects.get(pk=response.json()["task"]["id"])
    assert task.locked_at == datetime(2099, 1, 2, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize("sent", ["2099-01-02t10:30:00z", "2099-01-02T10:30:00.000z"])
def test_a_deadline_in_rfc_3339_s_lowercase_form_is_read(admin_client, node, sent):
    # RFC 3339 5.6 allows a lowercase t and z; the z was a 400.
    response = admin_client.post("/api/tasks", task_body(node, lockedAt=sent))

    assert response.status_code == 201
    assert response.json()["task"]["lockedAt"] == "2099-01-02T10:30:00Z"


@pytest.mark.parametrize("field", ["taskName", "taskDetails", "assignedNode", "lockedAt"])
def test_every_task_field_is_required_on_create(admin_client, node, field):
    body = task_body(node)
    del body[field]

    response = admin_client.post("/api/tasks", body)

    assert response.status_code == 400
    assert error_fields(response) == [field]
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("taskName", ""),
        ("taskName", "x" * 256),
        ("taskName", {"nested": "object"}),
        ("taskName", ["a", "list"]),
        ("taskDetails", ""),
        ("taskDetails", "x" * 10_001),
        ("taskDetails", {"nested": "object"}),
        # A JSON number or boolean is not a string: DRF would take it as "0" or "True".
        ("taskName", 0),
        ("taskDetails", 0),
        ("taskDetails", True),
        ("taskName", "\u0000"),
        ("taskDetails", " \t\u001f "),
        ("lockedAt", "tomorrow"),
        ("lockedAt", {"nested": "object"}),
        ("lockedAt", 4102444800),
        ("lockedAt", "2001-01-01T00:00:00Z"),
        ("lockedAt", "9999-12-31T23:00:00-05:00"),
        ("assignedNode", "not-a-uuid"),
        ("assignedNode", 12345),
        ("assignedNode", True),
        ("assignedNode", {"id": "x"}),
        ("assignedNode", str(uuid.UUID(int=1))),
        ("taskName", None),
    ],
)
def test_invalid_task_fields_are_400_naming_the_field(admin_client, node, field, value):
    response = admin_client.post("/api/tasks", task_body(node, **{field: value}))

    assert response.status_code == 400
    assert error_fields(response) == [field]
    assert not Task.objects.exists()


def test_longest_allowed_name_and_details_are_accepted(admin_client, node):
    body = task_body(node, taskName="n" * 255, taskDetails="d" * 10_000)

    response = admin_client.post("/api/tasks", body)

    assert response.status_code == 201


def test_a_task_cannot_be_assigned_to_an_admin(admin_client, admin_user):
    response = admin_client.post("/api/tasks", task_body(admin_user))

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "assignedNode", "message": "Tasks can only be assigned to a node, not an admin."}
    ]


def test_a_task_cannot_be_assigned_to_an_inactive_node(admin_client):
    retired = NodeFactory(is_active=False)

    response = admin_client.post("/api/tasks", task_body(retired))

    assert response.status_code == 400
    assert error_fields(response) == ["assignedNode"]


MANGLED_MOMENTS = [
    "2099-01-02T10:30:00\x00Z",  # a NUL Django's parser read past
    "2099-01-02T10:30:00Z\x00",
    "2099-01-02T10:30:00\x01Z",
    "\u0662099-01-02T10:30:00Z",  # an Arabic-Indic digit, which \d matches
    "2099-01-02T10:30:00\u00a0Z",
]


@pytest.mark.parametrize("moment", MANGLED_MOMENTS)
def test_a_deadline_with_characters_no_moment_has_is_a_400_and_nothing_stored(
    admin_client, node, moment
):
    created = admin_client.post("/api/tasks", task_body(node, lockedAt=moment))
    task = TaskFactory(assigned_node=node)
    edited = admin_client.put("/api/tasks", task_body(node, taskId=str(task.pk), lockedAt=moment))
    assigned = admin_client.put(
        "/api/tasks/assign", {"taskId": str(task.pk), "nodeId": str(node.pk), "lockedAt": moment}
    )

    for response in (created, edited, assigned):
        assert response.status_code == 400, response.content
        assert error_fields(response) == ["lockedAt"]
    assert Task.objects.count() == 1
    assert Task.objects.get().locked_at == task.locked_at


def test_a_past_deadline_is_refused(admin_client, node):
    response = admin_client.post("/api/tasks", task_body(node, lockedAt=in_days(-1).isoformat()))

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "lockedAt", "message": "The deadline must be in the future."}
    ]


def test_server_owned_fields_in_the_body_are_ignored(admin_client, node):
    chosen_id = str(uuid.uuid4())
    body = task_body(
        node,
        id=chosen_id,
        status="completed",
        active=False,
        createdAt="2000-01-01T00:00:00Z",
        somethingElse="ignored",
    )

    response = admin_client.post("/api/tasks", body)

    assert response.status_code == 201
    task = response.json()["task"]
    assert task["id"] != chosen_id
    assert (task["status"], task["active"]) == ("pending", True)
    assert datetime.fromisoformat(task["createdAt"]) > in_days(-1)


@pytest.mark.parametrize("body", [[], "text", 7, None])
def test_a_body_that_is_not_an_object_is_400(admin_client, body):
    response = admin_client.post("/api/tasks", body, format="json")

    assert response.status_code == 400
    assert set(response.json()) >= {"title", "message"}


# --- PUT /api/tasks -------------------------------------------------------------


def test_admin_edits_a_pending_task(admin_client, admin_user, node, other_node):
    task = TaskFactory(assigned_node=node)
    deadline = in_days(3)
    body = task_body(
        other_node,
        taskId=str(task.pk),
        taskName="Renamed",
        taskDetails="New details.",
        lockedAt=deadline.isoformat(),
    )

    response = admin_client.put("/api/tasks", body)

    assert response.status_code == 200
    shown = response.json()["task"]
    assert (shown["id"], shown["taskName"], shown["taskDetails"]) == (
        str(task.pk),
        "Renamed",
        "New details.",
    )
    assert shown["assignedNode"] == str(other_node.pk)
    task.refresh_from_db()
    assert (task.name, task.assigned_node, task.locked_at) == ("Renamed", other_node, deadline)
    new_rows = task.history.exclude(action=HistoryAction.INITIAL_ASSIGN)
    assert sorted(new_rows.values_list("action", "to_value", "performed_by")) == [
        (HistoryAction.ASSIGNEE_CHANGE, str(other_node.pk), admin_user.pk),
        (HistoryAction.DEADLINE_CHANGE, deadline_text(deadline), admin_user.pk),
        (HistoryAction.EDIT, "taskName,taskDetails", admin_user.pk),
    ]


def test_an_edit_that_changes_nothing_writes_no_history(admin_client, node):
    task = TaskFactory(assigned_node=node)
    body = task_body(
        node,
        taskId=str(task.pk),
        taskName=task.name,
        taskDetails=task.details,
        lockedAt=task.locked_at.isoformat(),
    )

    response = admin_client.put("/api/tasks", body)

    assert response.status_code == 200
    assert task.history.count() == 1


def test_an_edit_cannot_set_the_status(admin_client, node):
    task = TaskFactory(assigned_node=node)

    response = admin_client.put(
        "/api/tasks", task_body(node, taskId=str(task.pk), status="completed", active=False)
    )

    assert response.status_code == 200
    task.refresh_from_db()
    assert (task.status, task.active) == (TaskStatus.PENDING, True)


@pytest.mark.parametrize(
    "status", [TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED, TaskStatus.FAILED]
)
def test_only_a_pending_task_can_be_edited(admin_client, node, status):
    task = TaskFactory(assigned_node=node, status=status)

    response = admin_client.put("/api/tasks", task_body(node, taskId=str(task.pk)))

    assert response.status_code == 409
    assert status in response.json()["message"]
    task.refresh_from_db()
    assert task.name != "Reindex"


@pytest.mark.parametrize("field", ["taskId", "taskName", "taskDetails", "assignedNode", "lockedAt"])
def test_every_field_is_required_on_edit(admin_client, node, field):
    task = TaskFactory(assigned_node=node)
    body = task_body(node, taskId=str(task.pk))
    del body[field]

    response = admin_client.put("/api/tasks", body)

    assert response.status_code == 400
    assert error_fields(response) == [field]


@pytest.mark.parametrize("task_id", ["not-a-uuid", 42, {"id": 1}])
def test_a_malformed_task_id_in_a_body_is_400(admin_client, node, task_id):
    response = admin_client.put("/api/tasks", task_body(node, taskId=task_id))

    assert response.status_code == 400
    assert error_fields(response) == ["taskId"]


def test_editing_an_unknown_task_is_404(admin_client, node):
    response = admin_client.put("/api/tasks", task_body(node, taskId=str(uuid.uuid4())))

    assert response.status_code == 404
    assert set(response.json()) == {"title", "message"}


def test_editing_a_deleted_task_is_404(admin_client, node):
    task = TaskFactory(assigned_node=node, active=False)

    response = admin_client.put("/api/tasks", task_body(node, taskId=str(task.pk)))

    assert response.status_code == 404


def test_an_edit_with_a_past_deadline_is_refused(admin_client, node):
    task = TaskFactory(assigned_node=node)
    body = task_body(node, taskId=str(task.pk), lockedAt=in_days(-1).isoformat())

    response = admin_client.put("/api/tasks", body)

    assert response.status_code == 400
    assert error_fields(response) == ["lockedAt"]


# --- PUT /api/tasks/assign ------------------------------------------------------


def test_the_originals_reassign_call_gives_an_expired_failed_task_a_fresh_deadline(
    admin_client, admin_user, node, other_node, settings
):
    """`{taskId, nodeId}` alone, as the original's README documents it."""
    settings.REASSIGN_DEADLINE_MINUTES = 60
    expired = in_days(-1)
    task = TaskFactory(
        assigned_node=node, status=TaskStatus.FAILED, locked_at=expired, failure_cause="deadline"
    )

    before = timezone.now()
    response = admin_client.put(
        "/api/tasks/assign", {"taskId": str(task.pk), "nodeId": str(other_node.pk)}
    )
    after = timezone.now()

    assert response.status_code == 200
    shown = response.json()["task"]
    deadline = datetime.fromisoformat(shown["lockedAt"])
    assert before + timedelta(minutes=60) <= deadline <= after + timedelta(minutes=60)
    assert (shown["status"], shown["assignedNode"]) == ("pending", str(other_node.pk))
    task.refresh_from_db()
    assert (task.locked_at, task.failure_cause) == (deadline, "")
    row = task.history.get(action=HistoryAction.DEADLINE_CHANGE)
    assert (row.from_value, row.to_value, row.performed_by) == (
        deadline_text(expired),
        shown["lockedAt"],
        admin_user,
    )


def test_reassigning_a_failed_task_puts_it_back_to_pending(
    admin_client, admin_user, node, other_node
):
    task = TaskFactory(assigned_node=node, status=TaskStatus.FAILED, locked_at=in_days(-1))
    deadline = in_days(1)
    body = {"taskId": str(task.pk), "nodeId": str(other_node.pk), "lockedAt": deadline.isoformat()}

    response = admin_client.put("/api/tasks/assign", body)

    assert response.status_code == 200
    shown = response.json()["task"]
    assert (shown["status"], shown["assignedNode"]) == ("pending", str(other_node.pk))
    task.refresh_from_db()
    assert (task.assigned_node, task.status, task.locked_at) == (
        other_node,
        TaskStatus.PENDING,
        deadline,
    )
    new_rows = task.history.exclude(action=HistoryAction.INITIAL_ASSIGN)
    assert sorted(new_rows.values_list("action", "to_value", "performed_by")) == [
        (HistoryAction.ASSIGNEE_CHANGE, str(other_node.pk), admin_user.pk),
        (HistoryAction.DEADLINE_CHANGE, deadline_text(deadline), admin_user.pk),
        (HistoryAction.STATUS_CHANGE, "pending", admin_user.pk),
    ]


def test_reassigning_keeps_a_deadline_that_has_not_passed(admin_client, node, other_node):
    deadline = in_days(1)
    task = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS, locked_at=deadline)

    response = admin_client.put(
        "/api/tasks/assign",
        {"taskId": str(task.pk), "nodeId": str(other_node.pk), "lockedAt": None},
    )

    assert response.status_code == 200
    task.refresh_from_db()
    assert (task.assigned_node, task.status, task.locked_at) == (
        other_node,
        TaskStatus.PENDING,
        deadline,
    )


def test_a_completed_task_cannot_be_reassigned(admin_client, node, other_node):
    task = TaskFactory(assigned_node=node, status=TaskStatus.COMPLETED)

    response = admin_client.put(
        "/api/tasks/assign", {"taskId": str(task.pk), "nodeId": str(other_node.pk)}
    )

    assert response.status_code == 409
    task.refresh_from_db()
    assert task.assigned_node == node


@pytest.mark.parametrize("who", ["admin", "inactive node", "unknown", "not a uuid"])
def test_reassigning_to_anything_but_an_active_node_is_400(admin_client, node, who):
    target = {
        "admin": lambda: str(AdminFactory().pk),
        "inactive node": lambda: str(NodeFactory(is_active=False).pk),
        "unknown": lambda: str(uuid.uuid4()),
        "not a uuid": lambda: "node-1",
    }[who]()
    task = TaskFactory(assigned_node=node)

    response = admin_client.put("/api/tasks/assign", {"taskId": str(task.pk), "nodeId": target})

    assert response.status_code == 400
    assert error_fields(response) == ["nodeId"]


def test_reassigning_with_a_past_deadline_is_400(admin_client, node, other_node):
    task = TaskFactory(assigned_node=node)
    body = {
        "taskId": str(task.pk),
        "nodeId": str(other_node.pk),
        "lockedAt": in_days(-1).isoformat(),
    }

    response = admin_client.put("/api/tasks/assign", body)

    assert response.status_code == 400
    assert error_fields(response) == ["lockedAt"]


def test_reassigning_an_unknown_task_is_404(admin_client, node):
    response = admin_client.put(
        "/api/tasks/assign", {"taskId": str(uuid.uuid4()), "nodeId": str(node.pk)}
    )

    assert response.status_code == 404


@pytest.mark.parametrize("field", ["taskId", "nodeId"])
def test_task_and_node_are_required_to_reassign(admin_client, node, field):
    task = TaskFactory(assigned_node=node)
    body = {"taskId": str(task.pk), "nodeId": str(node.pk)}
    del body[field]

    response = admin_client.put("/api/tasks/assign", body)

    assert response.status_code == 400
    assert error_fields(response) == [field]


# --- DELETE /api/tasks/{taskId} ---------------------------------------------------


def test_deleting_a_task_hides_it_everywhere(admin_client, node, client_for):
    task = TaskFactory(assigned_node=node)
    node_client = client_for(node)

    response = admin_client.delete(f"/api/tasks/{task.pk}")

    assert response.status_code == 200
    assert response.json() == {"message": "Task deleted."}
    task.refresh_from_db()
    assert task.active is False
    assert admin_client.get(f"/api/tasks/{task.pk}").status_code == 404
    assert node_client.get(f"/api/tasks/{task.pk}").status_code == 404
    assert admin_client.get(f"/api/tasks/history/{task.pk}").status_code == 404
    assert admin_client.get("/api/tasks/all").json()["tasks"] == []
    assert admin_client.get("/api/tasks/filter/pending").json()["tasks"] == []
    assert node_client.get("/api/tasks/node").json()["tasks"] == []
    assert node_client.get("/api/tasks").json()["tasks"] == []
    shift = {"taskId": str(task.pk), "taskStatus": "in_progress"}
    assert node_client.put("/api/tasks/shift-status", shift).status_code == 404


def test_deleting_records_a_soft_delete_by_the_admin(admin_client, admin_user, node):
    task = TaskFactory(assigned_node=node)

    admin_client.delete(f"/api/tasks/{task.pk}")

    latest = TaskHistory.objects.filter(task=task).first()
    assert (latest.action, latest.performed_by) == (HistoryAction.SOFT_DELETE, admin_user)


@pytest.mark.parametrize("task_id", ["not-a-uuid", str(uuid.UUID(int=1))])
def test_deleting_an_unknown_task_is_404(admin_client, task_id):
    response = admin_client.delete(f"/api/tasks/{task_id}")

    assert response.status_code == 404
    assert set(response.json()) == {"title", "message"}


def test_deleting_a_deleted_task_is_404(admin_client, node):
    task = TaskFactory(assigned_node=node, active=False)

    assert admin_client.delete(f"/api/tasks/{task.pk}").status_code == 404


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor == "sqlite", reason="needs row locks: one writer on SQLite")
@pytest.mark.django_db(transaction=True)
def test_concurrent_deletes_of_one_task_delete_it_once(admin_user, node):
    # Four DELETEs sent at once answered 200 twice and wrote two soft_delete rows.
    task = TaskFactory(assigned_node=node)

    answers = at_once(admin_user, [lambda client: client.delete(f"/api/tasks/{task.pk}")] * 4)

    assert sorted(answer.status_code for answer in answers) == [200, 404, 404, 404]
    deletes = TaskHistory.objects.filter(task=task, action=HistoryAction.SOFT_DELETE)
    assert deletes.count() == 1
