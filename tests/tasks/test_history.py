"""The audit history: written by signals for every save, by the services for bulk
changes, naming the acting user, and never changed or deleted afterwards."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models.deletion import ProtectedError
from django.utils import timezone

from tasks.actor import acting_as, current_actor
from tasks.models import (
    AppendOnlyError,
    HistoryAction,
    Task,
    TaskHistory,
    TaskStatus,
    deadline_text,
)
from tasks.services import (
    task_assign,
    task_change_status,
    task_create,
    tasks_fail,
    tasks_reassign,
)
from tests.factories import AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

INITIAL, STATUS, ASSIGNEE, DEADLINE = (
    HistoryAction.INITIAL_ASSIGN,
    HistoryAction.STATUS_CHANGE,
    HistoryAction.ASSIGNEE_CHANGE,
    HistoryAction.DEADLINE_CHANGE,
)


def rows(task):
    """The task's history, oldest first, as (action, from, to, performed_by id)."""
    return [
        (row.action, row.from_value, row.to_value, row.performed_by_id)
        for row in TaskHistory.objects.filter(task=task).order_by("created_at", "id")
    ]


def in_days(days):
    return timezone.now() + timedelta(days=days)


# --- What the signals record --------------------------------------------------------


def test_creating_a_task_records_its_initial_assignment_by_the_acting_user():
    admin = AdminFactory()
    node = NodeFactory()

    with acting_as(admin):
        task = Task.objects.create(name="T", details="d", assigned_node=node, locked_at=in_days(1))

    assert rows(task) == [(INITIAL, None, str(node.pk), admin.pk)]


def test_a_save_with_nobody_acting_is_recorded_as_the_system():
    task = TaskFactory()

    assert current_actor() is None
    assert rows(task) == [(INITIAL, None, str(task.assigned_node_id), None)]


def test_an_orm_save_that_changes_the_status_records_a_status_change():
    task = TaskFactory()
    task.status = TaskStatus.IN_PROGRESS

    with acting_as(task.assigned_node):
        task.save()

    assert rows(task)[1:] == [(STATUS, "pending", "in_progress", task.assigned_node_id)]


def test_an_orm_save_that_changes_the_assignee_records_an_assignee_change():
    task = TaskFactory()
    old_node, new_node, admin = task.assigned_node, NodeFactory(), AdminFactory()
    task.assigned_node = new_node

    with acting_as(admin):
        task.save()

    assert rows(task)[1:] == [(ASSIGNEE, str(old_node.pk), str(new_node.pk), admin.pk)]


def test_one_save_changing_assignee_and_status_records_both():
    task = TaskFactory(status=TaskStatus.FAILED)
    old_node, new_node = task.assigned_node, NodeFactory()
    task.assigned_node, task.status = new_node, TaskStatus.PENDING
    task.save()

    assert rows(task)[1:] == [
        (ASSIGNEE, str(old_node.pk), str(new_node.pk), None),
        (STATUS, "failed", "pending", None),
    ]


def test_a_save_that_changes_nothing_records_nothing():
    task = TaskFactory()
    task.updated_at = in_days(1)
    task.save()

    assert len(rows(task)) == 1


def test_every_save_is_compared_with_the_previous_save_not_the_first_load():
    task = TaskFactory()
    for status in (TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED):
        task.status = status
        task.save()

    assert [row[1:3] for row in rows(task)[1:]] == [
        ("pending", "in_progress"),
        ("in_progress", "completed"),
    ]


def test_a_save_limited_to_other_fields_records_no_unsaved_status_change():
    task = TaskFactory()
    task.status = TaskStatus.IN_PROGRESS
    task.name = "Renamed"
    task.save(update_fields=["name"])

    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING
    assert rows(task)[1:] == [(HistoryAction.EDIT, None, "taskName", None)]

    task.save(update_fields=["status"])
    assert rows(task)[2:] == [(STATUS, "pending", "in_progress", None)]


def test_a_refreshed_task_compares_with_what_the_database_had_at_the_refresh():
    task = TaskFactory()
    other_copy = Task.objects.get(pk=task.pk)  # changes the row behind `task`'s back
    other_copy.status = TaskStatus.IN_PROGRESS
    other_copy.save()

    task.refresh_from_db()
    task.status = TaskStatus.COMPLETED
    task.save()

    assert [row[1:3] for row in rows(task)[1:]] == [
        ("pending", "in_progress"),
        ("in_progress", "completed"),
    ]


def test_a_task_loaded_without_its_tracked_fields_still_records_changes():
    task = TaskFactory()
    partial = Task.objects.only("id", "name").get(pk=task.pk)
    partial.status = TaskStatus.IN_PROGRESS
    partial.save()

    assert rows(task)[1:] == [(STATUS, "pending", "in_progress", None)]


def test_loaddata_style_raw_saves_write_no_history():
    task = TaskFactory()
    task.status = TaskStatus.IN_PROGRESS
    Task.save_base(task, raw=True)

    assert len(rows(task)) == 1


# --- History written by the services (single and bulk) ---------------------------------


def test_task_create_records_the_admin_as_the_assigner():
    admin, node = AdminFactory(), NodeFactory()

    with acting_as(admin):
        task = task_create(name="T", details="d", assigned_node=node, locked_at=in_days(1))

    assert rows(task) == [(INITIAL, None, str(node.pk), admin.pk)]


def test_task_assign_records_the_new_assignee_and_the_return_to_pending():
    task = TaskFactory(status=TaskStatus.FAILED)
    old_node, new_node, admin = task.assigned_node, NodeFactory(), AdminFactory()

    old_deadline, new_deadline = task.locked_at, in_days(2)

    with acting_as(admin):
        task_assign(task_id=task.pk, node=new_node, locked_at=new_deadline)

    assert rows(task)[1:] == [
        (ASSIGNEE, str(old_node.pk), str(new_node.pk), admin.pk),
        (STATUS, "failed", "pending", admin.pk),
        (DEADLINE, deadline_text(old_deadline), deadline_text(new_deadline), admin.pk),
    ]


def test_bulk_fail_writes_one_row_per_task_it_failed():
    open_tasks = [TaskFactory(status=s) for s in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)]
    done = TaskFactory(status=TaskStatus.COMPLETED)
    admin = AdminFactory()

    with acting_as(admin):
        count = tasks_fail(task_ids=[t.pk for t in [*open_tasks, done]])

    assert count == 2
    for task, old in zip(open_tasks, ("pending", "in_progress"), strict=True):
        assert rows(task)[1:] == [(STATUS, old, "failed", admin.pk)]
    assert len(rows(done)) == 1


def test_bulk_reassign_writes_rows_only_for_what_changed():
    node, admin = NodeFactory(), AdminFactory()
    already_there = TaskFactory(assigned_node=node)
    moved = TaskFactory(status=TaskStatus.FAILED)
    old_node = moved.assigned_node

    new_deadline = already_there.locked_at

    with acting_as(admin):
        changed = tasks_reassign(
            task_ids=[already_there.pk, moved.pk], node=node, locked_at=new_deadline
        )

    assert set(changed) == {already_there.pk, moved.pk}
    assert len(rows(already_there)) == 1
    assert rows(moved)[1:] == [
        (ASSIGNEE, str(old_node.pk), str(node.pk), admin.pk),
        (STATUS, "failed", "pending", admin.pk),
        (DEADLINE, deadline_text(moved.locked_at), deadline_text(new_deadline), admin.pk),
    ]


def test_history_is_listed_newest_first():
    task = TaskFactory()
    task.status = TaskStatus.IN_PROGRESS
    task.save()

    assert [row.action for row in task.history.all()] == [STATUS, INITIAL]


def test_history_keeps_naming_a_user_who_was_deactivated():
    admin = AdminFactory()
    with acting_as(admin):
        task = TaskFactory()
    admin.is_active = False
    admin.save()

    assert task.history.get().performed_by == admin


# --- Append-only -----------------------------------------------------------------------


@pytest.fixture
def row():
    return TaskFactory().history.get()


def test_saving_an_existing_history_row_is_refused(row):
    row.to_value = "tampered"

    with pytest.raises(AppendOnlyError):
        row.save()
    assert TaskHistory.objects.get(pk=row.pk).to_value != "tampered"


def test_a_new_row_reusing_an_existing_id_cannot_overwrite_it(row):
    forged = TaskHistory(
        pk=row.pk, task_id=row.task_id, action=STATUS, from_value="x", to_value="y"
    )

    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()
    assert TaskHistory.objects.get(pk=row.pk).action == INITIAL


def test_deleting_a_history_row_is_refused(row):
    with pytest.raises(AppendOnlyError):
        row.delete()
    assert TaskHistory.objects.filter(pk=row.pk).exists()


def test_queryset_update_delete_and_bulk_update_are_refused(row):
    with pytest.raises(AppendOnlyError):
        TaskHistory.objects.filter(pk=row.pk).update(to_value="tampered")
    with pytest.raises(AppendOnlyError):
        TaskHistory.objects.all().delete()
    row.to_value = "tampered"
    with pytest.raises(AppendOnlyError), transaction.atomic():
        TaskHistory.objects.bulk_update([row], ["to_value"])

    assert TaskHistory.objects.get(pk=row.pk).to_value != "tampered"


def test_a_task_with_history_cannot_be_hard_deleted(row):
    with pytest.raises(ProtectedError):
        row.task.delete()
    assert TaskHistory.objects.filter(pk=row.pk).exists()


def test_a_user_named_in_history_cannot_be_hard_deleted():
    admin = AdminFactory()
    with acting_as(admin):
        TaskFactory()

    with pytest.raises(ProtectedError):
        admin.delete()


def test_every_history_row_is_also_one_structured_log_line(caplog, node):
    with caplog.at_level("INFO", logger="taskmgmt.tasks"):
        task = TaskFactory(assigned_node=node)
        task_change_status(task_id=task.pk, node=node, status=TaskStatus.IN_PROGRESS)
    events = [(r.event, r.task_id, r.from_value, r.to_value) for r in caplog.records]
    assert events == [
        (HistoryAction.INITIAL_ASSIGN, str(task.pk), None, str(node.pk)),
        (HistoryAction.STATUS_CHANGE, str(task.pk), TaskStatus.PENDING, TaskStatus.IN_PROGRESS),
    ]


def test_every_writer_names_the_task_s_node_on_its_rows(node, other_node, settings):
    """The activity feed by node reads `TaskHistory.node`: each service that writes
    history must set it, the signal's rows and the bulk ones alike."""
    from tasks.services import (
        task_cancel,
        task_create,
        task_update,
        tasks_broadcast,
        tasks_create_bulk,
        tasks_expire,
        tasks_set_active,
    )

    settings.FAILOVER = "reassign"
    later = timezone.now() + timedelta(days=1)
    admin = AdminFactory()
    with acting_as(admin):
        one = task_create(name="a", details="x", assigned_node=node, locked_at=later)
        task_update(
            task_id=one.pk, name="b", details="x", assigned_node=node, locked_at=later
        )  # an edit
        task_assign(task_id=one.pk, node=other_node)
        tasks_reassign(task_ids=[one.pk], node=node)
        item = {"name": "c", "details": "x", "assigned_node": other_node.pk, "locked_at": later}
        bulk = tasks_create_bulk(tasks=[item])
        tasks_broadcast(name="d", details="x", locked_at=later)
        tasks_set_active(task_ids=[bulk[0].pk], active=False)
        tasks_set_active(task_ids=[bulk[0].pk], active=True)
        running = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS, attempts=1)
        task_cancel(task_id=running.pk, reason="no")
        tasks_fail(task_ids=[one.pk])
    task_change_status(task_id=running.pk, node=node, status=TaskStatus.CANCELLED, attempt=1)
    stale = TaskFactory(assigned_node=other_node, locked_at=timezone.now() - timedelta(hours=1))
    tasks_expire(batch_size=10)

    written = TaskHistory.objects.all()
    assert set(written.values_list("action", flat=True)) >= {
        HistoryAction.INITIAL_ASSIGN,
        HistoryAction.EDIT,
        HistoryAction.ASSIGNEE_CHANGE,
        HistoryAction.STATUS_CHANGE,
        HistoryAction.SOFT_DELETE,
        HistoryAction.RESTORE,
        HistoryAction.CANCEL_REQUEST,
    }
    assert not written.filter(node__isnull=True).exists()
    # A task that stayed on one node: every row names it.
    assert set(TaskHistory.objects.filter(task=stale).values_list("node", flat=True)) == {
        other_node.pk
    }
    assert set(TaskHistory.objects.filter(task=running).values_list("node", flat=True)) == {node.pk}
    # A task that moved: each row names where it was once its change was made.
    assert list(
        TaskHistory.objects.filter(task=one, action=HistoryAction.ASSIGNEE_CHANGE)
        .order_by("id")
        .values_list("to_value", "node")
    ) == [(str(other_node.pk), other_node.pk), (str(node.pk), node.pk)]
