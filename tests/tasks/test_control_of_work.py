"""Control of the work (SPEC, Control of the work): attempts as fencing tokens with the
late success they make safe, and cancellation that the node acknowledges."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import User
from nodes.models import Cordon
from nodes.services import node_cordon
from tasks.actor import acting_as
from tasks.models import FailureCause, HistoryAction, Task, TaskHistory, TaskStatus
from tasks.services import sweep_run, task_cancel, tasks_fail_over
from tests.api import TASK_FIELDS, assert_json_error
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
COMPLETED, FAILED, CANCELLED = TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED


def shift(client, task, status, **fields):
    return client.put(
        "/api/tasks/shift-status", {"taskId": str(task.pk), "taskStatus": status, **fields}
    )


def cancel(client, task, **body):
    return client.post(f"/api/tasks/{task.pk}/cancel", body)


def history(task):
    return list(
        TaskHistory.objects.filter(task=task)
        .order_by("created_at", "id")
        .values_list("action", "from_value", "to_value", "performed_by", "cause")
    )


def failed_by(cause, node, attempts=2):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=attempts)
    Task.objects.filter(pk=task.pk).update(status=FAILED, failure_cause=cause)
    TaskHistory.objects.create(
        task=task,
        action=HistoryAction.STATUS_CHANGE,
        from_value=IN_PROGRESS,
        to_value=FAILED,
        cause=cause,
    )
    return task


# --- fencing: every start counts, stale reports refused -----------------------------------


def test_every_start_increments_the_attempt_claim_and_shift_status_alike(node_client, node):
    task = TaskFactory(assigned_node=node)
    assert node_client.post("/api/tasks/claim").json()["task"]["attempt"] == 1
    Task.objects.filter(pk=task.pk).update(status=PENDING)
    assert shift(node_client, task, IN_PROGRESS).json()["task"]["attempt"] == 2
    assert shift(node_client, task, COMPLETED, attempt=1).status_code == 409
    assert shift(node_client, task, COMPLETED, attempt=2).json()["task"]["status"] == COMPLETED


# --- the late success -------------------------------------------------------------------


@pytest.mark.parametrize("cause", [FailureCause.NODE_LOST, FailureCause.DRAINED])
def test_a_late_success_for_the_same_attempt_completes_a_lost_task(node_client, node, cause):
    task = failed_by(cause, node)

    response = shift(node_client, task, COMPLETED, attempt=2, result={"rows": 3})

    assert response.status_code == 200, response.content
    assert response.json()["task"]["status"] == COMPLETED
    assert response.json()["task"]["result"] == {"rows": 3}
    assert history(task)[1:] == [
        (HistoryAction.STATUS_CHANGE, IN_PROGRESS, FAILED, None, cause),
        (HistoryAction.STATUS_CHANGE, FAILED, COMPLETED, node.pk, ""),
    ]


@pytest.mark.parametrize(
    ("cause", "fields", "status_code"),
    [
        (FailureCause.NODE_LOST, {}, 400),  # without the attempt it cannot be told apart
        (FailureCause.NODE_LOST, {"attempt": 1}, 409),  # another attempt's report
        (FailureCause.NODE_REPORTED, {"attempt": 2}, 400),
        (FailureCause.DEADLINE, {"attempt": 2}, 400),
        (FailureCause.ADMIN, {"attempt": 2}, 400),
    ],
)
def test_any_other_report_on_a_failed_task_is_refused(
    node_client, node, cause, fields, status_code
):
    task = failed_by(cause, node)
    rows = history(task)

    assert_json_error(shift(node_client, task, COMPLETED, **fields), status_code)

    assert Task.objects.get(pk=task.pk).status == FAILED
    assert history(task) == rows


@pytest.mark.parametrize("cause", [FailureCause.NODE_LOST, FailureCause.DRAINED])
def test_the_refusal_of_a_completed_without_its_attempt_says_the_late_success_is_kept(
    node_client, node, cause
):
    # It said "allowed next statuses: none: the task is in a final state", while the
    # same completed sent with attempt 2 is accepted.
    task = failed_by(cause, node)

    body = assert_json_error(shift(node_client, task, COMPLETED), 400)

    assert "completed for attempt 2, sent with that attempt, is kept" in body["message"]
    deadline = failed_by(FailureCause.DEADLINE, node)
    other = assert_json_error(shift(node_client, deadline, COMPLETED), 400)
    assert other["message"].endswith("allowed next statuses: none: the task is in a final state")


def test_a_late_success_is_refused_once_the_task_was_given_out_again(
    settings, node_client, node, other_node
):
    settings.FAILOVER, settings.NODE_DOWN_AFTER = "reassign", 30
    type(node).objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    type(node).objects.filter(pk=other_node.pk).update(last_seen=timezone.now())
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    assert tasks_fail_over(batch_size=10).reassigned == 1

    body = assert_json_error(shift(node_client, task, COMPLETED, attempt=1), 403)

    assert "assigned node" in body["message"]
    assert Task.objects.get(pk=task.pk).status == PENDING


@pytest.mark.parametrize("attempts", [0, 1])
def test_a_task_failed_while_pending_has_no_late_success(
    settings, node_client, node, other_node, attempts
):
    # Failover fails a down node's pinned pending task for a human (node_lost). No attempt
    # was running: a completed naming its attempt (0, never started; or 1, an attempt an
    # admin's assign took back) skipped pending -> in_progress and was kept, 200.
    settings.FAILOVER, settings.NODE_DOWN_AFTER = "reassign", 30
    type(node).objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    type(node).objects.filter(pk=other_node.pk).update(last_seen=timezone.now())
    task = TaskFactory(assigned_node=node, status=PENDING, attempts=attempts, pinned=True)
    tasks_fail_over(batch_size=10)
    assert Task.objects.filter(pk=task.pk, status=FAILED, failure_cause="node_lost").exists()
    rows = history(task)

    body = assert_json_error(shift(node_client, task, COMPLETED, attempt=attempts), 400)

    assert "is kept" not in body["message"]
    assert Task.objects.get(pk=task.pk).status == FAILED
    assert history(task) == rows


# --- cancellation -----------------------------------------------------------------------


def test_cancelling_a_pending_task_cancels_it_at_once(admin_client, admin_user, node):
    task = TaskFactory(assigned_node=node)

    response = cancel(admin_client, task, reason="not needed")

    assert response.status_code == 200, response.content
    shown = response.json()["task"]
    assert set(shown) == TASK_FIELDS
    assert (shown["status"], shown["cancelReason"]) == (CANCELLED, "not needed")
    assert history(task)[1:] == [
        (HistoryAction.CANCEL_REQUEST, PENDING, "not needed", admin_user.pk, ""),
        (HistoryAction.STATUS_CHANGE, PENDING, CANCELLED, admin_user.pk, ""),
    ]


def test_cancelling_a_running_task_asks_its_node_which_acknowledges(
    admin_client, admin_user, node_client, node
):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    started = Task.objects.get(pk=task.pk).updated_at

    shown = cancel(admin_client, task).json()["task"]

    assert shown["status"] == IN_PROGRESS and shown["cancelRequestedAt"] is not None
    # Still running since it started (the task page's and the dashboard's reading).
    assert Task.objects.get(pk=task.pk).updated_at == started
    beat = node_client.post("/api/nodes/heartbeat").json()
    assert beat["cancelTaskIds"] == [str(task.pk)]
    progress = node_client.put("/api/tasks/progress", {"taskId": str(task.pk), "percent": 5})
    assert progress.json()["task"]["cancelRequestedAt"] == shown["cancelRequestedAt"]

    acknowledged = shift(node_client, task, CANCELLED, attempt=1)

    assert acknowledged.json()["task"]["status"] == CANCELLED
    assert node_client.post("/api/nodes/heartbeat").json()["cancelTaskIds"] == []
    assert history(task)[1:] == [
        (HistoryAction.CANCEL_REQUEST, IN_PROGRESS, None, admin_user.pk, ""),
        (HistoryAction.STATUS_CHANGE, IN_PROGRESS, CANCELLED, node.pk, ""),
    ]


def test_an_acknowledgement_keeps_the_result_it_sends_as_what_was_done(
    admin_client, node_client, node
):
    """The SPEC names `result` with completed and failed; a node stopping on request may
    say how far it got, and refusing that would refuse the acknowledgement itself."""
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    cancel(admin_client, task)

    answer = shift(node_client, task, CANCELLED, attempt=1, result={"rows": 1200})

    assert answer.json()["task"]["result"] == {"rows": 1200}
    assert Task.objects.get(pk=task.pk).result == {"rows": 1200}


def test_a_cancel_request_s_history_row_keeps_the_whole_reason(admin_client, admin_user, node):
    """The audit's copy of the reason is the reason (it kept 64 characters before 0015)."""
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    reason = ("The export was run on the wrong file; " * 20)[:500]

    assert cancel(admin_client, task, reason=reason).status_code == 200

    rows = admin_client.get(f"/api/tasks/history/{task.pk}").json()["history"]
    (request,) = [row for row in rows if row["action"] == HistoryAction.CANCEL_REQUEST]
    assert (request["fromValue"], request["toValue"]) == (IN_PROGRESS, reason)
    assert Task.objects.get(pk=task.pk).cancel_reason == reason


def test_a_completion_that_arrives_first_wins_over_the_cancel_request(
    admin_client, node_client, node
):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    cancel(admin_client, task)

    assert shift(node_client, task, COMPLETED, attempt=1).json()["task"]["status"] == COMPLETED
    assert_json_error(shift(node_client, task, CANCELLED, attempt=1), 400)


def test_a_repeat_while_the_request_stands_changes_nothing(admin_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    first = cancel(admin_client, task, reason="first").json()["task"]
    rows = history(task)

    again = cancel(admin_client, task, reason="second")

    assert again.status_code == 200
    assert again.json()["task"] == first
    assert history(task) == rows


@pytest.mark.parametrize("status", [COMPLETED, FAILED, CANCELLED])
def test_cancelling_a_finished_task_is_a_409_and_changes_nothing(admin_client, node, status):
    task = TaskFactory(assigned_node=node, status=status)
    rows = history(task)

    body = assert_json_error(cancel(admin_client, task), 409)

    assert status in body["message"]
    assert Task.objects.get(pk=task.pk).status == status
    assert history(task) == rows


@pytest.mark.parametrize(
    ("body", "field"), [({"reason": "x" * 501}, "reason"), ({"reason": 5}, "reason")]
)
def test_a_bad_cancel_body_is_a_400_naming_the_field(admin_client, node, body, field):
    task = TaskFactory(assigned_node=node)
    error = assert_json_error(cancel(admin_client, task, **body), 400)
    assert [e["field"] for e in error["errors"]] == [field]
    assert Task.objects.get(pk=task.pk).status == PENDING


@pytest.mark.parametrize("task_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_cancelling_an_unknown_task_is_a_404(admin_client, task_id):
    assert_json_error(admin_client.post(f"/api/tasks/{task_id}/cancel"), 404)


def test_a_node_cannot_cancel_or_decide_a_cancel(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    assert_json_error(cancel(node_client, task), 403)
    body = assert_json_error(shift(node_client, task, CANCELLED), 400)
    assert body["message"].endswith("allowed next statuses: completed, failed")
    assert Task.objects.get(pk=task.pk).status == IN_PROGRESS


def test_the_sweep_cancels_a_request_unanswered_past_the_grace(node, settings):
    settings.CANCEL_GRACE_SECONDS = 60
    old = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    young = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    for task in (old, young):
        task_cancel(task_id=task.pk)
    Task.objects.filter(pk=old.pk).update(
        cancel_requested_at=timezone.now() - timedelta(seconds=61)
    )

    call_command("collect_failed", verbosity=0)

    assert Task.objects.get(pk=young.pk).status == IN_PROGRESS
    ended = Task.objects.get(pk=old.pk)
    assert (ended.status, ended.failure_cause) == (CANCELLED, FailureCause.CANCEL_TIMEOUT)
    assert history(old)[-1] == (
        HistoryAction.STATUS_CHANGE,
        IN_PROGRESS,
        CANCELLED,
        None,
        FailureCause.CANCEL_TIMEOUT,
    )
    sweep_run(batch_size=10)  # idempotent
    assert len(history(old)) == 3


def test_cancelled_tasks_have_their_filter_and_can_be_reassigned(admin_client, node, other_node):
    task = TaskFactory(assigned_node=node)
    cancel(admin_client, task)
    TaskFactory(assigned_node=node)

    listed = admin_client.get("/api/tasks/filter/cancelled")
    assert [row["id"] for row in listed.json()["tasks"]] == [str(task.pk)]

    moved = admin_client.put(
        "/api/tasks/assign", {"taskId": str(task.pk), "nodeId": str(other_node.pk)}
    ).json()["task"]
    assert (moved["status"], moved["cancelRequestedAt"], moved["cancelReason"]) == (
        PENDING,
        None,
        None,
    )


def test_the_cancel_history_names_the_system_when_nobody_acts(node):
    task = TaskFactory(assigned_node=node)
    with acting_as(None):
        task_cancel(task_id=task.pk, reason="")
    assert [row[3] for row in history(task)] == [None, None, None]


def test_metrics_count_cancellations_and_the_requests_waiting(client, node, settings):
    settings.METRICS_TOKEN = "scrape"
    TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    running = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    task_cancel(task_id=running.pk)
    task_cancel(task_id=TaskFactory(assigned_node=node).pk)

    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape").content.decode()

    assert "taskmgmt_cancel_requests_waiting 1.0" in text
    assert 'taskmgmt_task_cancellations_total{how="pending"}' in text


@pytest.mark.parametrize("taken_by", ["failover", "drain"])
def test_a_running_task_asked_to_cancel_is_not_given_out_again(
    node, other_node, settings, taken_by
):
    """Its node lost, or its drain's deadline past: the request stands and the sweep
    cancels it after the grace, instead of moving it, request forgotten, to run again."""
    settings.FAILOVER, settings.NODE_DOWN_AFTER = "reassign", 30
    settings.FAILOVER_MAX_DOWN_SHARE, settings.CANCEL_GRACE_SECONDS = 1, 60
    now = timezone.now()
    User.objects.filter(pk=other_node.pk).update(last_seen=now)
    if taken_by == "failover":
        User.objects.filter(pk=node.pk).update(last_seen=now - timedelta(minutes=5))
    else:
        User.objects.filter(pk=node.pk).update(last_seen=now)
        node_cordon(node_id=node.pk, reason="r", actor=None, drain_deadline=now + timedelta(1))
        Cordon.objects.filter(node=node).update(drain_deadline=now - timedelta(seconds=1))
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    task_cancel(task_id=task.pk)

    call_command("collect_failed", verbosity=0)

    kept = Task.objects.get(pk=task.pk)
    assert (kept.assigned_node_id, kept.status) == (node.pk, IN_PROGRESS)
    assert kept.cancel_requested_at is not None

    Task.objects.filter(pk=task.pk).update(cancel_requested_at=now - timedelta(seconds=61))
    call_command("collect_failed", verbosity=0)

    ended = Task.objects.get(pk=task.pk)
    assert (ended.assigned_node_id, ended.status) == (node.pk, CANCELLED)
    assert ended.failure_cause == FailureCause.CANCEL_TIMEOUT
