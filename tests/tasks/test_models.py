"""Task invariants and the status rules, through the model and the services."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from tasks.actor import acting_as
from tasks.models import (
    DeadlinePassed,
    HistoryAction,
    InvalidStatusTransition,
    Task,
    TaskConflict,
    TaskHistory,
    TaskStatus,
)
from tasks.services import (
    NotAssignee,
    task_assign,
    task_change_status,
    task_create,
    task_update,
)
from tests.factories import AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
COMPLETED, FAILED = TaskStatus.COMPLETED, TaskStatus.FAILED


def in_days(days):
    return timezone.now() + timedelta(days=days)


def change_status(task, status):
    """What the API does for the assigned node."""
    with acting_as(task.assigned_node):
        return task_change_status(task_id=task.pk, node=task.assigned_node, status=status)


def status_rows(task):
    return list(
        TaskHistory.objects.filter(task=task, action=HistoryAction.STATUS_CHANGE).values_list(
            "from_value", "to_value", "performed_by"
        )
    )


# --- Transitions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "new"), [(PENDING, IN_PROGRESS), (IN_PROGRESS, COMPLETED), (IN_PROGRESS, FAILED)]
)
def test_an_allowed_transition_changes_the_status_and_records_it_once(start, new):
    task = TaskFactory(status=start)

    changed = change_status(task, new)

    assert changed.status == new
    assert Task.objects.get(pk=task.pk).status == new
    assert status_rows(task) == [(start, new, task.assigned_node_id)]


@pytest.mark.parametrize("status", [PENDING, IN_PROGRESS, COMPLETED, FAILED])
def test_the_same_status_again_is_a_no_op_without_history(status):
    task = TaskFactory(status=status)

    assert change_status(task, status).status == status
    assert status_rows(task) == []


@pytest.mark.parametrize(
    ("start", "new", "allowed"),
    [
        (IN_PROGRESS, PENDING, "completed, failed"),  # regression
        (PENDING, COMPLETED, "in_progress"),  # skipping a step
        (PENDING, FAILED, "in_progress"),
        (COMPLETED, IN_PROGRESS, "none: the task is in a final state"),
        (COMPLETED, FAILED, "none: the task is in a final state"),
        (FAILED, IN_PROGRESS, "none: the task is in a final state"),
        (FAILED, COMPLETED, "none: the task is in a final state"),
    ],
)
def test_a_forbidden_transition_is_refused_naming_the_allowed_next_statuses(start, new, allowed):
    task = TaskFactory(status=start)

    with pytest.raises(InvalidStatusTransition) as error:
        change_status(task, new)

    assert error.value.status_code == 400
    assert error.value.message.startswith(f"invalid status transition from {start} to {new}")
    assert error.value.message.endswith(f"allowed next statuses: {allowed}")
    assert Task.objects.get(pk=task.pk).status == start
    assert status_rows(task) == []


@pytest.mark.parametrize(("start", "new"), [(PENDING, IN_PROGRESS), (IN_PROGRESS, COMPLETED)])
def test_a_node_cannot_start_or_complete_a_task_after_its_deadline(start, new):
    task = TaskFactory(status=start, locked_at=in_days(-1))

    with pytest.raises(DeadlinePassed) as error:
        change_status(task, new)

    assert error.value.status_code == 409
    assert error.value.message == "task deadline has passed"
    assert Task.objects.get(pk=task.pk).status == start


def test_a_node_may_report_failure_after_the_deadline():
    task = TaskFactory(status=IN_PROGRESS, locked_at=in_days(-1))

    assert change_status(task, FAILED).status == FAILED
    assert status_rows(task) == [(IN_PROGRESS, FAILED, task.assigned_node_id)]


def test_an_invalid_transition_is_reported_before_an_expired_deadline():
    task = TaskFactory(status=PENDING, locked_at=in_days(-1))

    with pytest.raises(InvalidStatusTransition):
        change_status(task, COMPLETED)


def test_only_the_assigned_node_may_change_the_status():
    task = TaskFactory()
    stranger = NodeFactory()

    with pytest.raises(NotAssignee):
        task_change_status(task_id=task.pk, node=stranger, status=IN_PROGRESS)
    assert Task.objects.get(pk=task.pk).status == PENDING


def test_a_soft_deleted_task_cannot_be_changed():
    task = TaskFactory(active=False)

    with pytest.raises(Task.DoesNotExist):
        change_status(task, IN_PROGRESS)


# --- Editing and reassigning ----------------------------------------------------


@pytest.mark.parametrize("status", [IN_PROGRESS, COMPLETED, FAILED])
def test_only_a_pending_task_can_be_edited(status):
    task = TaskFactory(status=status)

    with pytest.raises(TaskConflict):
        task_update(
            task_id=task.pk,
            name="New name",
            details="x",
            assigned_node=task.assigned_node,
            locked_at=in_days(2),
        )
    assert Task.objects.get(pk=task.pk).name == task.name


def test_a_completed_task_cannot_be_reassigned():
    task = TaskFactory(status=COMPLETED)

    with pytest.raises(TaskConflict):
        task_assign(task_id=task.pk, node=NodeFactory(), locked_at=in_days(2))


@pytest.mark.parametrize("minutes_left", [-24 * 60, -1, 0, 59])
def test_reassigning_without_a_deadline_replaces_one_past_or_too_close(settings, minutes_left):
    settings.REASSIGN_DEADLINE_MINUTES = 60
    task = TaskFactory(status=FAILED, locked_at=timezone.now() + timedelta(minutes=minutes_left))

    before = timezone.now()
    task_assign(task_id=task.pk, node=NodeFactory())
    after = timezone.now()

    task.refresh_from_db()
    assert task.status == PENDING
    assert before + timedelta(minutes=60) <= task.locked_at <= after + timedelta(minutes=60)


def test_reassigning_without_a_deadline_keeps_one_far_enough_away(settings):
    settings.REASSIGN_DEADLINE_MINUTES = 60
    deadline = timezone.now() + timedelta(minutes=61)
    task = TaskFactory(status=TaskStatus.IN_PROGRESS, locked_at=deadline)

    task_assign(task_id=task.pk, node=NodeFactory())

    assert Task.objects.get(pk=task.pk).locked_at == deadline


def test_the_fresh_deadline_follows_the_setting(settings):
    settings.REASSIGN_DEADLINE_MINUTES = 5
    task = TaskFactory(status=FAILED, locked_at=in_days(-1))

    task_assign(task_id=task.pk, node=NodeFactory())

    left = Task.objects.get(pk=task.pk).locked_at - timezone.now()
    assert timedelta(minutes=4) < left <= timedelta(minutes=5)


def test_an_explicit_deadline_wins_over_the_fresh_one():
    task = TaskFactory(status=FAILED, locked_at=in_days(-1))
    deadline = timezone.now() + timedelta(minutes=2)

    task_assign(task_id=task.pk, node=NodeFactory(), locked_at=deadline)

    assert Task.objects.get(pk=task.pk).locked_at == deadline


def test_an_explicit_deadline_must_still_be_in_the_future():
    task = TaskFactory(status=FAILED, locked_at=in_days(-1))

    with pytest.raises(ValidationError) as error:
        task_assign(task_id=task.pk, node=NodeFactory(), locked_at=in_days(-1))

    assert "locked_at" in error.value.message_dict
    assert Task.objects.get(pk=task.pk).status == FAILED


def test_giving_a_failed_task_out_again_forgets_its_failure():
    task = TaskFactory(status=FAILED, failure_cause="deadline", failure_reason="disk full")

    task_assign(task_id=task.pk, node=NodeFactory())

    task.refresh_from_db()
    assert (task.failure_cause, task.failure_reason) == ("", "")


def test_reassigning_a_failed_task_puts_it_back_to_pending_for_the_new_node():
    task = TaskFactory(status=FAILED, locked_at=in_days(-1))
    new_node = NodeFactory()

    task_assign(task_id=task.pk, node=new_node, locked_at=in_days(3))

    task.refresh_from_db()
    assert (task.status, task.assigned_node) == (PENDING, new_node)
    assert task.locked_at > timezone.now()


# --- Bad input: model and service validation ---------------------------------------


def test_an_admin_cannot_be_assigned_a_task():
    admin = AdminFactory()

    with pytest.raises(ValidationError) as error:
        task_create(name="T", details="d", assigned_node=admin, locked_at=in_days(1))

    assert error.value.message_dict["assigned_node"] == [
        "Tasks can only be assigned to a node, not an admin."
    ]
    assert not Task.objects.exists()
    assert not TaskHistory.objects.exists()


def test_full_clean_refuses_an_admin_or_inactive_assignee():
    for assignee in (AdminFactory(), NodeFactory(is_active=False)):
        task = Task(name="T", details="d", assigned_node=assignee, locked_at=in_days(1))
        with pytest.raises(ValidationError) as error:
            task.full_clean()
        assert "assigned_node" in error.value.message_dict


def test_a_past_deadline_is_refused_on_create_and_nothing_is_saved():
    with pytest.raises(ValidationError) as error:
        task_create(name="T", details="d", assigned_node=NodeFactory(), locked_at=in_days(-1))

    assert error.value.message_dict["locked_at"] == ["The deadline must be in the future."]
    assert not Task.objects.exists()
    assert not TaskHistory.objects.exists()


def test_a_naive_deadline_is_refused():
    naive = datetime(2099, 1, 1, 12, 0)
    node = NodeFactory()

    with pytest.raises(ValidationError) as error:
        task_create(name="T", details="d", assigned_node=node, locked_at=naive)
    assert error.value.message_dict["locked_at"] == ["The deadline must include a time zone."]

    task = Task(name="T", details="d", assigned_node=node, locked_at=naive)
    with pytest.raises(ValidationError) as error:
        task.full_clean()
    assert "locked_at" in error.value.message_dict
    assert not Task.objects.exists()


def test_an_unknown_status_fails_validation():
    task = Task(
        name="T", details="d", assigned_node=NodeFactory(), locked_at=in_days(1), status="done"
    )

    with pytest.raises(ValidationError) as error:
        task.full_clean()

    assert "status" in error.value.message_dict


def test_the_database_refuses_an_unknown_status_even_without_validation():
    task = TaskFactory()
    history_before = TaskHistory.objects.count()

    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(status="done")

    assert Task.objects.get(pk=task.pk).status == PENDING
    assert TaskHistory.objects.count() == history_before


def test_a_task_is_overdue_only_while_open_and_past_its_deadline():
    past = in_days(-1)

    assert TaskFactory(status=PENDING, locked_at=past).is_overdue
    assert TaskFactory(status=IN_PROGRESS, locked_at=past).is_overdue
    assert not TaskFactory(status=COMPLETED, locked_at=past).is_overdue
    assert not TaskFactory(status=FAILED, locked_at=past).is_overdue
    assert not TaskFactory(status=PENDING, locked_at=in_days(1)).is_overdue


def test_expired_selects_active_open_tasks_past_their_deadline():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    before = now - timedelta(seconds=1)
    expired = {
        TaskFactory(status=PENDING, locked_at=before).pk,
        TaskFactory(status=IN_PROGRESS, locked_at=before).pk,
    }
    TaskFactory(status=PENDING, locked_at=now + timedelta(seconds=1))
    TaskFactory(status=COMPLETED, locked_at=before)
    TaskFactory(status=FAILED, locked_at=before)
    TaskFactory(status=PENDING, locked_at=before, active=False)

    assert set(Task.objects.expired(now).values_list("pk", flat=True)) == expired


def test_visible_to_gives_an_admin_every_active_task_and_a_node_its_own():
    mine = TaskFactory()
    theirs = TaskFactory()
    TaskFactory(assigned_node=mine.assigned_node, active=False)

    assert set(Task.objects.visible_to(AdminFactory())) == {mine, theirs}
    assert list(Task.objects.visible_to(mine.assigned_node)) == [mine]
