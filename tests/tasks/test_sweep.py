"""The expiry sweep (`services.tasks_expire`): batches, what it leaves alone, crashes.

Concurrency on MariaDB is in test_sweep_concurrency.py; the command's output in
test_sweep_command.py.
"""

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks.actor import acting_as
from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tasks.services import tasks_expire
from tests.factories import AdminFactory

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
COMPLETED, FAILED = TaskStatus.COMPLETED, TaskStatus.FAILED


def make_tasks(node, count, *, status=None, deadline=None, **fields):
    """`count` tasks in one INSERT (no history rows), by default an hour past their
    deadline and alternately pending and in progress."""
    deadline = deadline or timezone.now() - timedelta(hours=1)
    return Task.objects.bulk_create(
        Task(
            name=f"task {i}",
            details="-",
            assigned_node=node,
            status=status or (IN_PROGRESS if i % 2 else PENDING),
            locked_at=deadline,
            **fields,
        )
        for i in range(count)
    )


def sweep(batch_size=3, **options):
    """Run the sweep; returns (failed count, the size of each batch)."""
    batches = []
    failed = tasks_expire(batch_size=batch_size, on_batch=batches.append, **options)
    return failed, batches


def status_rows(task):
    return [
        (row.from_value, row.to_value, row.performed_by_id)
        for row in TaskHistory.objects.filter(task=task, action=HistoryAction.STATUS_CHANGE)
    ]


def assert_failed_by_the_sweep(task, old_status):
    task.refresh_from_db()
    assert task.status == FAILED
    assert status_rows(task) == [(old_status, FAILED, None)]


def assert_untouched(task, status):
    task.refresh_from_db()
    assert task.status == status
    assert status_rows(task) == []


@pytest.mark.parametrize(
    ("count", "batches"),
    [(0, []), (1, [1]), (3, [3]), (4, [3, 1]), (7, [3, 3, 1])],
)
def test_batches_of_three_fail_every_expired_task_once(node, count, batches):
    tasks = make_tasks(node, count)
    old_statuses = [task.status for task in tasks]

    assert sweep(batch_size=3) == (count, batches)
    for task, old in zip(tasks, old_statuses, strict=True):
        assert_failed_by_the_sweep(task, old)
    assert TaskHistory.objects.filter(action=HistoryAction.STATUS_CHANGE).count() == count


def test_round_trips_grow_with_batches_not_with_tasks(node):
    def statements_to_sweep(count):
        make_tasks(node, count)
        with CaptureQueriesContext(connection) as queries:
            sweep(batch_size=5)
        return len(queries)

    one_batch_of_one, one_full_batch = statements_to_sweep(1), statements_to_sweep(5)
    two_batches_of_six, two_full_batches = statements_to_sweep(6), statements_to_sweep(10)

    assert one_batch_of_one == one_full_batch
    assert two_batches_of_six == two_full_batches > one_full_batch


def test_tasks_that_are_final_deleted_or_not_yet_due_are_left_alone(node):
    now = timezone.now()
    left_alone = [
        *make_tasks(node, 2, status=COMPLETED),
        *make_tasks(node, 2, status=FAILED),
        *make_tasks(node, 2, active=False),
        *make_tasks(node, 2, deadline=now + timedelta(minutes=1)),
        *make_tasks(node, 1, deadline=now),
    ]
    expired = make_tasks(node, 3)

    assert sweep(batch_size=2, now=now) == (3, [2, 1])
    for task in expired:
        assert_failed_by_the_sweep(task, task.status)
    for task in left_alone:
        assert_untouched(task, task.status)


def test_a_second_sweep_finds_nothing_and_writes_nothing(node):
    make_tasks(node, 4)
    sweep()
    rows = TaskHistory.objects.count()

    assert sweep() == (0, [])
    assert TaskHistory.objects.count() == rows


def test_the_sweep_records_the_system_even_when_an_admin_triggers_it(node):
    (task,) = make_tasks(node, 1)

    with acting_as(AdminFactory()):
        sweep()

    assert_failed_by_the_sweep(task, PENDING)


@pytest.mark.django_db(transaction=True)
def test_a_crash_between_batches_keeps_the_committed_batch_and_leaves_the_rest(node):
    tasks = make_tasks(node, 7)

    def crash_after_first_batch(count):
        raise RuntimeError("the sweep process died")

    with pytest.raises(RuntimeError):
        tasks_expire(batch_size=3, on_batch=crash_after_first_batch)

    failed = [task for task in tasks if Task.objects.get(pk=task.pk).status == FAILED]
    assert len(failed) == 3
    for task in tasks:
        if task in failed:
            assert_failed_by_the_sweep(task, task.status)
        else:
            assert_untouched(task, task.status)


# A database that refuses the UPDATE of the second batch, after that batch's history
# rows went in (a lost connection, a full disk): the rows must go with it.
REFUSE_SECOND_UPDATE = {
    "sqlite": """
        CREATE TRIGGER sweep_test_refuse BEFORE UPDATE ON {tasks}
        WHEN (SELECT COUNT(*) FROM {history}) > {batch}
        BEGIN SELECT RAISE(ABORT, 'update refused'); END""",
    "mysql": """
        CREATE TRIGGER sweep_test_refuse BEFORE UPDATE ON {tasks} FOR EACH ROW
        BEGIN IF (SELECT COUNT(*) FROM {history}) > {batch} THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'update refused'; END IF; END""",
}


@pytest.fixture
def second_batch_update_refused():
    def install(batch):
        sql = REFUSE_SECOND_UPDATE[connection.vendor].format(
            tasks=Task._meta.db_table, history=TaskHistory._meta.db_table, batch=batch
        )
        with connection.cursor() as cursor:
            cursor.execute(sql)

    yield install
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS sweep_test_refuse")


@pytest.mark.django_db(transaction=True)
def test_a_batch_failing_midway_leaves_neither_failed_tasks_nor_history_rows(
    node, second_batch_update_refused
):
    tasks = make_tasks(node, 7)
    second_batch_update_refused(3)

    with pytest.raises(DatabaseError, match="update refused"):
        tasks_expire(batch_size=3)

    statuses = [Task.objects.get(pk=task.pk).status for task in tasks]
    assert statuses.count(FAILED) == 3
    assert TaskHistory.objects.count() == 3
    for task, status in zip(tasks, statuses, strict=True):
        if status == FAILED:
            assert_failed_by_the_sweep(task, task.status)
        else:
            assert_untouched(task, task.status)
