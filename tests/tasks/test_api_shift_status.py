"""PUT /api/tasks/shift-status: the assigned node advances its task, race-safe."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from tasks.models import FAILURE_REASON_MAX_LENGTH, HistoryAction, TaskHistory, TaskStatus
from tests.api import assert_json_error
from tests.concurrency import at_once
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS, COMPLETED, FAILED = (
    TaskStatus.PENDING,
    TaskStatus.IN_PROGRESS,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
)


ROW_LOCKS_NEEDED = "needs row locks and concurrent writers: SQLite runs one writer at a time"


def shift(client, task, status):
    return client.put("/api/tasks/shift-status", {"taskId": str(task.pk), "taskStatus": status})


def status_rows(task):
    return list(
        TaskHistory.objects.filter(task=task, action=HistoryAction.STATUS_CHANGE).values_list(
            "from_value", "to_value", "performed_by"
        )
    )


def past_deadline_task(node, status):
    return TaskFactory(
        assigned_node=node, status=status, locked_at=timezone.now() - timedelta(minutes=1)
    )


@pytest.mark.parametrize(
    ("start", "to"), [(PENDING, IN_PROGRESS), (IN_PROGRESS, COMPLETED), (IN_PROGRESS, FAILED)]
)
def test_the_assigned_node_advances_its_task(node_client, node, start, to):
    task = TaskFactory(assigned_node=node, status=start)

    response = shift(node_client, task, to)

    assert response.status_code == 200
    assert response.json()["task"]["status"] == to
    task.refresh_from_db()
    assert task.status == to
    assert status_rows(task) == [(start, to, node.pk)]


@pytest.mark.parametrize(
    ("start", "to", "allowed"),
    [
        (PENDING, COMPLETED, "in_progress"),
        (PENDING, FAILED, "in_progress"),
        (IN_PROGRESS, PENDING, "completed, failed"),
        (COMPLETED, IN_PROGRESS, "none"),
        (FAILED, COMPLETED, "none"),
        (COMPLETED, PENDING, "none"),
    ],
)
def test_an_invalid_transition_is_400_naming_the_allowed_statuses(
    node_client, node, start, to, allowed
):
    task = TaskFactory(assigned_node=node, status=start)

    response = shift(node_client, task, to)

    assert response.status_code == 400
    message = response.json()["message"]
    assert "invalid status transition" in message
    assert f"allowed next statuses: {allowed}" in message
    task.refresh_from_db()
    assert task.status == start
    assert status_rows(task) == []


@pytest.mark.parametrize(("start", "to"), [(PENDING, IN_PROGRESS), (IN_PROGRESS, COMPLETED)])
def test_a_node_cannot_start_or_complete_after_the_deadline(node_client, node, start, to):
    task = past_deadline_task(node, start)

    response = shift(node_client, task, to)

    assert response.status_code == 409
    assert response.json()["message"] == "task deadline has passed"
    task.refresh_from_db()
    assert task.status == start


def test_a_node_may_report_failure_after_the_deadline(node_client, node):
    task = past_deadline_task(node, IN_PROGRESS)

    response = shift(node_client, task, FAILED)

    assert response.status_code == 200
    assert status_rows(task) == [(IN_PROGRESS, FAILED, node.pk)]


def test_an_invalid_transition_is_reported_before_an_expired_deadline(node_client, node):
    task = past_deadline_task(node, PENDING)

    response = shift(node_client, task, COMPLETED)

    assert response.status_code == 400


@pytest.mark.parametrize("status", TaskStatus.values)
def test_the_same_status_again_is_a_no_op(node_client, node, status):
    task = TaskFactory(assigned_node=node, status=status)
    rows_before = TaskHistory.objects.filter(task=task).count()

    response = shift(node_client, task, status)

    assert response.status_code == 200
    assert response.json()["task"]["status"] == status
    assert TaskHistory.objects.filter(task=task).count() == rows_before


def test_another_node_cannot_shift_the_task(client_for, node, other_node):
    task = TaskFactory(assigned_node=node)

    response = shift(client_for(other_node), task, IN_PROGRESS)

    assert response.status_code == 403
    task.refresh_from_db()
    assert task.status == PENDING


def test_an_admin_cannot_shift_a_task(admin_client, node):
    task = TaskFactory(assigned_node=node)

    response = shift(admin_client, task, IN_PROGRESS)

    assert response.status_code == 403
    task.refresh_from_db()
    assert task.status == PENDING


@pytest.mark.parametrize("status", ["done", "", "IN_PROGRESS", None, {"a": 1}, ["pending"]])
def test_an_unknown_task_status_is_400(node_client, node, status):
    task = TaskFactory(assigned_node=node)

    response = shift(node_client, task, status)

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["taskStatus"]


@pytest.mark.parametrize("status", [r"\ud800", r"done\udfff", r"\udfff\ud800"])
def test_a_task_status_with_a_lone_surrogate_is_400_not_500(node_client, node, status):
    # The error names the value sent: a lone surrogate in it could not be encoded (a 500).
    task = TaskFactory(assigned_node=node)
    body = f'{{"taskId": "{task.pk}", "taskStatus": "{status}"}}'

    response = node_client.generic(
        "PUT", "/api/tasks/shift-status", body.encode(), content_type="application/json"
    )

    body = assert_json_error(response, 400)
    assert [error["field"] for error in body["errors"]] == ["taskStatus"]
    task.refresh_from_db()
    assert task.status == PENDING


@pytest.mark.parametrize(
    ("body", "field"),
    [({"taskStatus": "in_progress"}, "taskId"), ({"taskId": "not-a-uuid"}, "taskId")],
)
def test_a_missing_or_malformed_field_is_400(node_client, body, field):
    response = node_client.put("/api/tasks/shift-status", body)

    assert response.status_code == 400
    assert field in [error["field"] for error in response.json()["errors"]]


def test_shifting_an_unknown_task_is_404(node_client):
    response = node_client.put(
        "/api/tasks/shift-status", {"taskId": str(uuid.uuid4()), "taskStatus": "in_progress"}
    )

    assert response.status_code == 404


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor == "sqlite", reason=ROW_LOCKS_NEEDED)
@pytest.mark.django_db(transaction=True)
def test_concurrent_shifts_make_exactly_one_transition(node):
    task = TaskFactory(assigned_node=node)
    token = str(RefreshToken.for_user(node).access_token)
    workers = 8
    start = threading.Barrier(workers)
    answers = []

    def send():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            start.wait()
            answers.append(shift(client, task, IN_PROGRESS).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [200] * workers
    task.refresh_from_db()
    assert task.status == IN_PROGRESS
    assert status_rows(task) == [(PENDING, IN_PROGRESS, node.pk)]


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor == "sqlite", reason=ROW_LOCKS_NEEDED)
@pytest.mark.django_db(transaction=True)
def test_concurrent_complete_and_fail_leave_one_final_state(node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS)
    targets = [COMPLETED, FAILED] * 4

    def send(status):
        return lambda client: (status, shift(client, task, status).status_code)

    answers = at_once(node, [send(status) for status in targets])

    task.refresh_from_db()
    assert status_rows(task) == [(IN_PROGRESS, task.status, node.pk)]
    # Same final status again is a no-op 200; the other final status is refused.
    assert sorted(code for status, code in answers if status == task.status) == [200] * 4
    assert sorted(code for status, code in answers if status != task.status) == [400] * 4


# --- Attempts and failure causes ----------------------------------------------------------


def test_starting_a_task_counts_an_attempt(node_client, node):
    task = TaskFactory(assigned_node=node)

    shown = shift(node_client, task, IN_PROGRESS).json()["task"]

    assert shown["attempts"] == 1
    task.refresh_from_db()
    assert task.attempts == 1


@pytest.mark.parametrize("reason", ["disk full", ""])
def test_a_node_reports_a_failure_with_its_reason(node_client, node, reason):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS)

    response = node_client.put(
        "/api/tasks/shift-status",
        {"taskId": str(task.pk), "taskStatus": FAILED, "reason": reason},
        format="json",
    )

    assert response.status_code == 200
    shown = response.json()["task"]
    assert (shown["failureCause"], shown["failureReason"]) == ("node_reported", reason or None)
    task.refresh_from_db()
    assert (task.failure_cause, task.failure_reason) == ("node_reported", reason)
    rows = TaskHistory.objects.filter(task=task, action=HistoryAction.STATUS_CHANGE)
    assert list(rows.values_list("to_value", "cause")) == [(FAILED, "node_reported")]


def test_a_failure_without_a_reason_is_node_reported(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS)

    shown = shift(node_client, task, FAILED).json()["task"]

    assert (shown["failureCause"], shown["failureReason"]) == ("node_reported", None)


def test_a_reason_with_another_status_is_not_kept(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS)

    node_client.put(
        "/api/tasks/shift-status",
        {"taskId": str(task.pk), "taskStatus": COMPLETED, "reason": "why not"},
        format="json",
    )

    task.refresh_from_db()
    assert (task.status, task.failure_cause, task.failure_reason) == (COMPLETED, "", "")


@pytest.mark.parametrize(
    "reason",
    [
        "x" * (FAILURE_REASON_MAX_LENGTH + 1),
        "before\x00after",
        123,
        ["a list"],
        None,
    ],
)
def test_a_bad_reason_is_400_and_changes_nothing(node_client, node, reason):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS)

    response = node_client.put(
        "/api/tasks/shift-status",
        {"taskId": str(task.pk), "taskStatus": FAILED, "reason": reason},
        format="json",
    )

    body = assert_json_error(response, 400)
    assert [error["field"] for error in body["errors"]] == ["reason"]
    task.refresh_from_db()
    assert (task.status, task.failure_cause) == (IN_PROGRESS, "")
    assert status_rows(task) == []


def test_a_reason_of_the_maximum_length_is_kept_whole(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS)
    reason = "é" * FAILURE_REASON_MAX_LENGTH

    response = node_client.put(
        "/api/tasks/shift-status",
        {"taskId": str(task.pk), "taskStatus": FAILED, "reason": reason},
        format="json",
    )

    assert response.json()["task"]["failureReason"] == reason
