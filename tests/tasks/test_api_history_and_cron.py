"""GET /api/tasks/history/{taskId} and /cron/collect-failed, through the API."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def in_days(days: float) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


def history(client, task_id) -> list[dict]:
    response = client.get(f"/api/tasks/history/{task_id}")
    assert response.status_code == 200
    return response.json()["history"]


def test_history_names_who_did_each_step_newest_first(
    admin_client, admin_user, node, other_node, client_for
):
    created = admin_client.post(
        "/api/tasks",
        {
            "taskName": "Backup",
            "taskDetails": "Nightly dump.",
            "assignedNode": str(node.pk),
            "lockedAt": in_days(1),
        },
    )
    task_id = created.json()["task"]["id"]
    shifted = client_for(node).put(
        "/api/tasks/shift-status", {"taskId": task_id, "taskStatus": "in_progress"}
    )
    reassigned = admin_client.put(
        "/api/tasks/assign", {"taskId": task_id, "nodeId": str(other_node.pk)}
    )
    assert (created.status_code, shifted.status_code, reassigned.status_code) == (201, 200, 200)

    rows = history(admin_client, task_id)

    steps = [(r["action"], r["fromValue"], r["toValue"], r["performedBy"]) for r in rows]
    admin_id, node_id, other_id = str(admin_user.pk), str(node.pk), str(other_node.pk)
    assert steps[2:] == [
        ("status_change", "pending", "in_progress", node_id),
        ("initial_assign", None, node_id, admin_id),
    ]
    # One reassign writes both rows; their order within the same save is not part of the contract.
    assert sorted(steps[:2]) == [
        ("assignee_change", node_id, other_id, admin_id),
        ("status_change", "in_progress", "pending", admin_id),
    ]
    assert [r["createdAt"] for r in rows] == sorted((r["createdAt"] for r in rows), reverse=True)
    assert set(rows[0]) == {
        "id",
        "action",
        "fromValue",
        "toValue",
        "performedBy",
        "cause",
        "createdAt",
    }


def test_history_of_a_task_made_outside_a_request_names_the_system(admin_client, node):
    task = TaskFactory(assigned_node=node)

    rows = history(admin_client, task.pk)

    assert [(r["action"], r["performedBy"]) for r in rows] == [("initial_assign", None)]


@pytest.mark.parametrize("task_id", [str(uuid.UUID(int=1)), "not-a-uuid"])
def test_history_of_an_unknown_task_is_404(admin_client, task_id):
    response = admin_client.get(f"/api/tasks/history/{task_id}")

    assert response.status_code == 404
    # The words of every other task route (it said "No Task matches the given query.").
    assert response.json()["message"] == "No task has this taskId."


@pytest.mark.parametrize("task_id", [str(uuid.UUID(int=1)), "not-a-uuid"])
def test_deleting_an_unknown_task_is_404_in_the_task_routes_words(admin_client, task_id):
    response = admin_client.delete(f"/api/tasks/{task_id}")

    assert response.status_code == 404
    assert response.json()["message"] == "No task has this taskId."


def test_history_of_a_deleted_task_is_404(admin_client, node):
    task = TaskFactory(assigned_node=node, active=False)

    assert admin_client.get(f"/api/tasks/history/{task.pk}").status_code == 404


def test_history_costs_three_queries_however_long(
    admin_client, node, other_node, django_assert_max_num_queries
):
    task = TaskFactory(assigned_node=node)
    for owner in (other_node, node) * 5:
        task.assigned_node = owner
        task.save()

    # The token's user, the task, its rows.
    with django_assert_max_num_queries(3):
        rows = history(admin_client, task.pk)

    assert len(rows) == 11


# --- /cron/collect-failed -----------------------------------------------------------


def expired(node, status=TaskStatus.PENDING) -> Task:
    return TaskFactory(
        assigned_node=node, status=status, locked_at=timezone.now() - timedelta(minutes=5)
    )


@pytest.mark.parametrize("method", ["get", "post"])
def test_collect_failed_fails_expired_tasks_as_the_system(admin_client, node, method):
    stale = [expired(node), expired(node, TaskStatus.IN_PROGRESS)]
    fresh = TaskFactory(assigned_node=node)

    response = getattr(admin_client, method)("/cron/collect-failed")

    assert response.status_code == 200
    assert response.json() == {"failedCount": 2}
    for task in stale:
        task.refresh_from_db()
        assert task.status == TaskStatus.FAILED
        row = task.history.first()
        assert (row.action, row.to_value, row.performed_by) == (
            HistoryAction.STATUS_CHANGE,
            "failed",
            None,
        )
    fresh.refresh_from_db()
    assert fresh.status == TaskStatus.PENDING


def test_collect_failed_with_nothing_to_do_reports_zero(admin_client, node):
    TaskFactory(assigned_node=node)

    response = admin_client.post("/cron/collect-failed")

    assert response.json() == {"failedCount": 0}
    assert not TaskHistory.objects.filter(action=HistoryAction.STATUS_CHANGE).exists()


def test_collect_failed_works_through_every_batch(admin_client, node, settings):
    settings.SWEEP_BATCH_SIZE = 2
    for _ in range(5):
        expired(node)

    response = admin_client.post("/cron/collect-failed")

    assert response.json() == {"failedCount": 5}
    assert not Task.objects.expired().exists()


def test_collect_failed_leaves_deleted_tasks_alone(admin_client, node):
    deleted = expired(node)
    deleted.active = False
    deleted.save()

    assert admin_client.post("/cron/collect-failed").json() == {"failedCount": 0}
    deleted.refresh_from_db()
    assert deleted.status == TaskStatus.PENDING


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_collect_failed_answers_only_get_and_post(admin_client, method):
    response = getattr(admin_client, method)("/cron/collect-failed")

    assert response.status_code == 405
    assert set(response.json()) == {"title", "message"}
