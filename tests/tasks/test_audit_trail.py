"""Every change of a task has its history row, on every path: the API, the admin
form, the admin actions, a shell `save()`, the sweep. Each case makes one change
and names the row it must leave: who, what, from → to."""

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.urls import reverse
from django.utils import timezone

from tasks.actor import acting_as
from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus, deadline_text
from tasks.services import tasks_expire, tasks_set_active
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")
NEW_DEADLINE = timezone.now().replace(microsecond=0) + timedelta(days=30)
ADMIN, SYSTEM = "admin", "system"


def edit_body(task, **changes) -> dict:
    return {
        "taskId": str(task.pk),
        "taskName": task.name,
        "taskDetails": task.details,
        "assignedNode": str(task.assigned_node_id),
        "lockedAt": task.locked_at.isoformat(),
    } | changes


def admin_form(task, **changes) -> dict:
    deadline = timezone.localtime(changes.pop("locked_at", task.locked_at))
    return {
        "name": task.name,
        "details": task.details,
        "assigned_node": task.assigned_node_id,
        "locked_at_0": deadline.strftime("%Y-%m-%d"),
        "locked_at_1": deadline.strftime("%H:%M:%S"),
        "history-TOTAL_FORMS": "0",
        "history-INITIAL_FORMS": "0",
    } | changes


def admin_action(action: str, task, **fields) -> dict:
    """An action as its confirmation page posts it."""
    return {"action": action, "_selected_action": [task.pk], "apply": "yes"} | fields


def shell_save(task, **changes):
    for field, value in changes.items():
        setattr(task, field, value)
    task.save()


# Each case: (path, the task's starting state, the change, the expected row: action, from, to, by).
# `task` is the task made from the state; `api` and `site` are an admin's API and admin clients.
CASES = {
    "api edit: deadline": (
        {},
        lambda task, api, site: api.put(
            "/api/tasks", edit_body(task, lockedAt=NEW_DEADLINE.isoformat())
        ),
        lambda task: (HistoryAction.DEADLINE_CHANGE, deadline_text(task.locked_at), "new", ADMIN),
    ),
    "api edit: name and details": (
        {},
        lambda task, api, site: api.put(
            "/api/tasks", edit_body(task, taskName="New name", taskDetails="New details.")
        ),
        lambda task: (HistoryAction.EDIT, None, "taskName,taskDetails", ADMIN),
    ),
    "api edit: details only": (
        {},
        lambda task, api, site: api.put("/api/tasks", edit_body(task, taskDetails="Other.")),
        lambda task: (HistoryAction.EDIT, None, "taskDetails", ADMIN),
    ),
    "api assign: explicit deadline": (
        {"status": TaskStatus.FAILED},
        lambda task, api, site: api.put(
            "/api/tasks/assign",
            {
                "taskId": str(task.pk),
                "nodeId": str(task.assigned_node_id),
                "lockedAt": NEW_DEADLINE.isoformat(),
            },
        ),
        lambda task: (HistoryAction.DEADLINE_CHANGE, deadline_text(task.locked_at), "new", ADMIN),
    ),
    "api assign: the fresh deadline": (
        {"status": TaskStatus.FAILED, "locked_at": timezone.now() - timedelta(days=1)},
        lambda task, api, site: api.put(
            "/api/tasks/assign", {"taskId": str(task.pk), "nodeId": str(task.assigned_node_id)}
        ),
        lambda task: (HistoryAction.DEADLINE_CHANGE, deadline_text(task.locked_at), "new", ADMIN),
    ),
    "api delete": (
        {},
        lambda task, api, site: api.delete(f"/api/tasks/{task.pk}"),
        lambda task: (HistoryAction.SOFT_DELETE, None, None, ADMIN),
    ),
    "admin form: deadline": (
        {},
        lambda task, api, site: site.post(
            reverse("admin:tasks_task_change", args=[task.pk]),
            admin_form(task, locked_at=NEW_DEADLINE),
        ),
        lambda task: (HistoryAction.DEADLINE_CHANGE, deadline_text(task.locked_at), "new", ADMIN),
    ),
    "admin form: name": (
        {},
        lambda task, api, site: site.post(
            reverse("admin:tasks_task_change", args=[task.pk]), admin_form(task, name="New")
        ),
        lambda task: (HistoryAction.EDIT, None, "taskName", ADMIN),
    ),
    "admin action: reassign with a deadline": (
        {"status": TaskStatus.FAILED},
        lambda task, api, site: site.post(
            CHANGELIST,
            admin_action(
                "reassign",
                task,
                node=task.assigned_node_id,
                locked_at=NEW_DEADLINE.strftime("%Y-%m-%dT%H:%M:%S"),
            ),
        ),
        lambda task: (HistoryAction.DEADLINE_CHANGE, deadline_text(task.locked_at), "new", ADMIN),
    ),
    "admin action: reassign, the fresh deadline": (
        {"status": TaskStatus.FAILED, "locked_at": timezone.now() - timedelta(days=1)},
        lambda task, api, site: site.post(
            CHANGELIST,
            admin_action("reassign", task, node=task.assigned_node_id, locked_at=""),
        ),
        lambda task: (HistoryAction.DEADLINE_CHANGE, deadline_text(task.locked_at), "new", ADMIN),
    ),
    "admin action: soft delete": (
        {},
        lambda task, api, site: site.post(CHANGELIST, admin_action("soft_delete", task)),
        lambda task: (HistoryAction.SOFT_DELETE, None, None, ADMIN),
    ),
    "admin action: restore": (
        {"active": False},
        lambda task, api, site: site.post(
            f"{CHANGELIST}?deleted=only", admin_action("restore", task)
        ),
        lambda task: (HistoryAction.RESTORE, None, None, ADMIN),
    ),
    "admin action: mark failed": (
        {},
        lambda task, api, site: site.post(CHANGELIST, admin_action("mark_failed", task)),
        lambda task: (HistoryAction.STATUS_CHANGE, "pending", "failed", ADMIN),
    ),
    "shell: deadline": (
        {},
        lambda task, api, site: shell_save(task, locked_at=NEW_DEADLINE),
        lambda task: (HistoryAction.DEADLINE_CHANGE, deadline_text(task.locked_at), "new", SYSTEM),
    ),
    "shell: name": (
        {},
        lambda task, api, site: shell_save(task, name="New"),
        lambda task: (HistoryAction.EDIT, None, "taskName", SYSTEM),
    ),
    "shell: soft delete": (
        {},
        lambda task, api, site: shell_save(task, active=False),
        lambda task: (HistoryAction.SOFT_DELETE, None, None, SYSTEM),
    ),
    "shell: restore": (
        {"active": False},
        lambda task, api, site: shell_save(task, active=True),
        lambda task: (HistoryAction.RESTORE, None, None, SYSTEM),
    ),
    "sweep": (
        {"locked_at": timezone.now() - timedelta(minutes=1)},
        lambda task, api, site: tasks_expire(batch_size=10),
        lambda task: (HistoryAction.STATUS_CHANGE, "pending", "failed", SYSTEM),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_path_records_its_change(case, admin_user, admin_client, admin_site_client):
    state, change, expected = CASES[case]
    task = TaskFactory(**state)
    action, from_value, to_value, by = expected(task)
    before = set(TaskHistory.objects.filter(task=task).values_list("pk", flat=True))

    response = change(Task.objects.get(pk=task.pk), admin_client, admin_site_client)

    assert getattr(response, "status_code", 200) in (200, 302)
    new_rows = TaskHistory.objects.filter(task=task).exclude(pk__in=before)
    row = new_rows.get(action=action)
    stored = Task.objects.get(pk=task.pk)
    if to_value == "new":  # the deadline the task has now
        to_value = deadline_text(stored.locked_at)
        assert stored.locked_at > timezone.now()
    assert (row.from_value, row.to_value) == (from_value, to_value)
    assert row.performed_by == (admin_user if by == ADMIN else None)
    # Only what changed: one row per kind of change.
    assert len({r.action for r in new_rows}) == new_rows.count()


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        (lambda task, site: tasks_expire(batch_size=10), "deadline"),
        (
            lambda task, site: site.post(CHANGELIST, admin_action("mark_failed", task)),
            "admin",
        ),
    ],
)
def test_a_failure_shows_its_cause_in_the_api_history(
    admin_client, admin_site_client, change, cause
):
    task = TaskFactory(locked_at=timezone.now() - timedelta(minutes=1))

    change(task, admin_site_client)

    rows = admin_client.get(f"/api/tasks/history/{task.pk}").json()["history"]
    assert [(r["action"], r["toValue"], r["cause"]) for r in rows] == [
        ("status_change", "failed", cause),
        ("initial_assign", str(task.assigned_node_id), None),
    ]
    assert Task.objects.get(pk=task.pk).failure_cause == cause


def test_the_api_history_shows_an_edit_newest_first_with_every_kind(admin_client, admin_user):
    task = TaskFactory()
    other = NodeFactory()
    body = edit_body(
        task,
        taskName="New name",
        assignedNode=str(other.pk),
        lockedAt=NEW_DEADLINE.isoformat(),
    )

    assert admin_client.put("/api/tasks", body).status_code == 200

    rows = admin_client.get(f"/api/tasks/history/{task.pk}").json()["history"]
    assert sorted((r["action"], r["toValue"]) for r in rows[:3]) == [
        ("assignee_change", str(other.pk)),
        ("deadline_change", deadline_text(NEW_DEADLINE)),
        ("edit", "taskName"),
    ]
    assert rows[3]["action"] == "initial_assign"
    assert {r["performedBy"] for r in rows[:3]} == {str(admin_user.pk)}


# --- Same transaction: a change whose row cannot be written does not happen -------------------


def ghost():
    """A user who acts but is not in the database: their history row breaks its foreign key."""
    return NodeFactory.build(pk=uuid.uuid4())


@pytest.mark.django_db(transaction=True)
def test_a_shell_save_whose_history_fails_changes_nothing():
    task = TaskFactory()
    task.name = "Renamed"

    with pytest.raises(IntegrityError), acting_as(ghost()):
        task.save()

    assert Task.objects.get(pk=task.pk).name != "Renamed"
    assert TaskHistory.objects.filter(task=task).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_bulk_soft_delete_whose_history_fails_changes_nothing():
    tasks = TaskFactory.create_batch(2)

    with pytest.raises(IntegrityError), acting_as(ghost()):
        tasks_set_active(task_ids=[task.pk for task in tasks], active=False)

    assert Task.objects.filter(active=True).count() == 2
    assert TaskHistory.objects.count() == 2
