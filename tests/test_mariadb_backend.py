"""taskmgmt.mariadb: Django's MySQL backend with START TRANSACTION sent with a
transaction's first statement and nothing after its COMMIT. Each test checks what
the server did (its own statement counters, a second connection), on MariaDB."""

import MySQLdb
import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from taskmgmt.sql import get_one
from tasks import services
from tasks.models import Task, TaskHistory, TaskStatus
from tests.factories import TaskFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "mysql", reason="the backend is MariaDB's"),
]


def server_counts() -> dict:
    """This session's statement counters on the server (SHOW counts itself, not these)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SHOW SESSION STATUS WHERE Variable_name IN "
            "('Com_begin', 'Com_commit', 'Com_rollback', 'Com_set_option', 'Questions')"
        )
        return {name: int(value) for name, value in cursor.fetchall()}


def sent_during(action) -> dict:
    before = server_counts()
    action()
    after = server_counts()
    # Questions counts every statement, the SHOW that reads the counters too.
    return {name: after[name] - before[name] - (name == "Questions") for name in before}


def round_trips(action) -> int:
    """How many times `action` waited for the server: queries, commits, rollbacks and
    autocommit switches on this connection (mysqlclient sends each as its own)."""
    connection.ensure_connection()
    raw = connection.connection
    counted = [0]

    def counting(name):
        method = getattr(raw, name)

        def call(*args):
            counted[0] += 1
            return method(*args)

        return call

    names = ("query", "commit", "rollback", "autocommit")
    originals = {name: getattr(raw, name) for name in names}
    for name in names:
        setattr(raw, name, counting(name))
    try:
        action()
    finally:
        for name, method in originals.items():
            setattr(raw, name, method)  # the C type cannot delete them
    return counted[0]


def other_connection():
    settings = connection.settings_dict
    return MySQLdb.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=int(settings["PORT"] or 3306),
        user=settings["USER"],
        password=settings["PASSWORD"],
        database=settings["NAME"],
        autocommit=True,
    )


def test_a_transaction_is_begun_with_its_first_statement_and_ends_with_its_commit():
    task = TaskFactory()

    def change():
        with transaction.atomic():
            locked = Task.objects.select_for_update().get(pk=task.pk)
            locked.name = "renamed"
            locked.save(update_fields=["name"])

    sent = sent_during(change)
    # Django's own backend: SET autocommit=0, SELECT, UPDATE, INSERT, COMMIT, SET autocommit=1.
    assert sent == {
        "Com_begin": 1,
        "Com_commit": 1,
        "Com_rollback": 0,
        "Com_set_option": 0,
        # START TRANSACTION; SELECT (one query of two statements), UPDATE, INSERT, COMMIT
        "Questions": 5,
    }
    task.refresh_from_db()
    assert task.name == "renamed"
    assert TaskHistory.objects.filter(task=task, action="edit").count() == 1


def test_a_transaction_that_ran_nothing_sends_nothing():
    def empty():
        with transaction.atomic():
            pass

    assert sent_during(empty) == {
        "Com_begin": 0,
        "Com_commit": 0,
        "Com_rollback": 0,
        "Com_set_option": 0,
        "Questions": 0,
    }


def test_the_first_statement_holds_its_locks_until_the_commit():
    task = TaskFactory()
    other = other_connection()
    try:
        with transaction.atomic():
            Task.objects.select_for_update().get(pk=task.pk)
            # Begun with the SELECT: its row lock stands (in autocommit it would be gone).
            with pytest.raises(MySQLdb.OperationalError) as refused:
                other.cursor().execute(
                    "SELECT id FROM tasks_task WHERE id = %s FOR UPDATE NOWAIT", [task.pk.hex]
                )
            assert refused.value.args[0] == 1205  # lock wait timeout (NOWAIT)
        other.cursor().execute(
            "SELECT id FROM tasks_task WHERE id = %s FOR UPDATE NOWAIT", [task.pk.hex]
        )
    finally:
        other.close()


def test_an_error_rolls_back_every_statement_of_the_transaction():
    task = TaskFactory(name="before")
    with pytest.raises(RuntimeError), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(name="inside")
        TaskFactory(name="also inside")
        raise RuntimeError("undo")
    task.refresh_from_db()
    assert task.name == "before"
    assert not Task.objects.filter(name="also inside").exists()


def test_a_savepoint_rolls_back_alone():
    task = TaskFactory(name="before")
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(name="outer")
        with pytest.raises(RuntimeError), transaction.atomic():
            Task.objects.filter(pk=task.pk).update(name="inner")
            raise RuntimeError("undo the inner block")
    task.refresh_from_db()
    assert task.name == "outer"


def test_the_first_statement_reports_its_own_rowcount_and_insert_id():
    tasks = TaskFactory.create_batch(2)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tasks_task SET name = 'x' WHERE id IN (%s, %s)",
            [tasks[0].pk.hex, tasks[1].pk.hex],
        )
        assert cursor.rowcount == 2
    last = TaskHistory.objects.order_by("-pk").first()
    with transaction.atomic():
        row = TaskHistory.objects.create(task=tasks[0], action="edit", to_value="y")
    assert row.pk > last.pk
    assert TaskHistory.objects.get(pk=row.pk).to_value == "y"


def test_an_integrity_error_in_the_first_statement_is_djangos_and_rolls_back():
    task = TaskFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(status="not-a-status")  # CHECK constraint
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING
    # The connection goes on: the next transaction begins and commits.
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(name="after the error")
    task.refresh_from_db()
    assert task.name == "after the error"


def test_executemany_first_begins_the_transaction_too():
    tasks = TaskFactory.create_batch(2, name="before")
    with pytest.raises(RuntimeError), transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            "UPDATE tasks_task SET name = %s WHERE id = %s",
            [("inside", task.pk.hex) for task in tasks],
        )
        assert Task.objects.filter(name="inside").count() == 2
        raise RuntimeError("undo")
    assert Task.objects.filter(name="before").count() == 2


def test_manual_transactions_keep_djangos_meaning():
    """set_autocommit(False): each commit() ends one transaction and the next statement
    is in the next one; turning autocommit back on commits what is open."""
    task = TaskFactory(name="start")
    transaction.set_autocommit(False)
    try:
        Task.objects.filter(pk=task.pk).update(name="first")
        transaction.commit()
        Task.objects.filter(pk=task.pk).update(name="second")
        transaction.rollback()
        task.refresh_from_db()
        assert task.name == "first"
        Task.objects.filter(pk=task.pk).update(name="third")
    finally:
        transaction.set_autocommit(True)
    other = other_connection()
    try:
        cursor = other.cursor()
        cursor.execute("SELECT name FROM tasks_task WHERE id = %s", [task.pk.hex])
        assert cursor.fetchone() == ("third",)
    finally:
        other.close()


def started(task):
    return services.task_change_status(
        task_id=task.pk, node=task.assigned_node, status=TaskStatus.IN_PROGRESS
    )


def test_a_status_change_is_two_queries_its_write_going_with_the_commit():
    task = TaskFactory()
    history = TaskHistory.objects.filter(task=task).count()
    # Django's backend: SET autocommit=0, SELECT ... FOR UPDATE, UPDATE, INSERT, COMMIT,
    # SET autocommit=1. Here: START TRANSACTION with the SELECT; UPDATE, INSERT, COMMIT.
    assert round_trips(lambda: started(task)) == 2
    task.refresh_from_db()
    assert (task.status, task.attempts) == (TaskStatus.IN_PROGRESS, 1)
    assert TaskHistory.objects.filter(task=task).count() == history + 1


def test_deferred_writes_are_counted_and_logged_where_they_are_asked_for():
    task = TaskFactory()
    with CaptureQueriesContext(connection) as queries:
        started(task)
    # As with Django's backend, each statement alone: BEGIN, the lock, the UPDATE, the
    # history INSERT, COMMIT.
    assert [query["sql"].split()[0] for query in queries] == [
        "BEGIN",
        "SELECT",
        "UPDATE",
        "INSERT",
        "COMMIT",
    ]


def test_the_next_statement_reads_a_deferred_write():
    task = TaskFactory(name="before")
    with transaction.atomic():
        locked = get_one(Task, for_update=True, id=task.pk)
        locked.name = "deferred"
        locked.save(update_fields=["name"])
        assert Task.objects.get(pk=task.pk).name == "deferred"
        assert TaskHistory.objects.filter(task=task, action="edit").count() == 1


def test_percent_signs_in_a_deferred_write_survive_the_next_statements_parameters():
    task = TaskFactory()
    text = "100% odd %s %(x)s text"
    with transaction.atomic():
        locked = get_one(Task, for_update=True, id=task.pk)
        locked.failure_reason = text
        locked.save(update_fields=["failure_reason"])
        assert Task.objects.filter(pk=task.pk).values_list("failure_reason", flat=True)[0] == text
    task.refresh_from_db()
    assert task.failure_reason == text


def test_an_error_in_a_deferred_write_rolls_the_transaction_back_where_it_is_sent():
    task = TaskFactory(name="before")
    history = TaskHistory.objects.filter(task=task).count()
    with pytest.raises(IntegrityError), transaction.atomic():
        locked = get_one(Task, for_update=True, id=task.pk)
        locked.name = "changed"
        locked.save(update_fields=["name"])
        locked.status = "not-a-status"  # refused by the CHECK constraint, at the COMMIT
        locked.save(update_fields=["status"])
    task.refresh_from_db()
    assert (task.name, task.status) == ("before", TaskStatus.PENDING)
    assert TaskHistory.objects.filter(task=task).count() == history
    with pytest.raises(IntegrityError), transaction.atomic():
        locked = get_one(Task, for_update=True, id=task.pk)
        locked.status = "not-a-status"
        locked.save(update_fields=["status"])
        Task.objects.filter(pk=task.pk).exists()  # sent with this statement: raises here
    started(task)  # the connection goes on
    task.refresh_from_db()
    assert task.status == TaskStatus.IN_PROGRESS


def test_a_rolled_back_transaction_never_sends_its_deferred_writes():
    task = TaskFactory(name="before")
    with pytest.raises(RuntimeError), transaction.atomic():
        locked = get_one(Task, for_update=True, id=task.pk)
        locked.name = "never"
        locked.save(update_fields=["name"])
        raise RuntimeError("undo")
    task.refresh_from_db()
    assert task.name == "before"
    with transaction.atomic():
        locked = get_one(Task, for_update=True, id=task.pk)
        with pytest.raises(RuntimeError), transaction.atomic():
            locked.name = "inner"
            locked.save(update_fields=["name"])
            raise RuntimeError("undo the inner block")
    task.refresh_from_db()
    assert task.name == "before"


def test_a_row_locked_in_an_earlier_transaction_is_written_at_once():
    task = TaskFactory()
    with transaction.atomic():
        locked = get_one(Task, for_update=True, id=task.pk)
    locked.name = "later"

    def save_later():
        with transaction.atomic():
            locked.save(update_fields=["name"])

    # The UPDATE (with START TRANSACTION) at once, then the history INSERT with the
    # COMMIT: its lock ended with the earlier transaction, so the row may be gone.
    assert round_trips(save_later) == 2
    assert Task.objects.get(pk=task.pk).name == "later"
    Task.objects.filter(pk=task.pk).update(name="x")

    def save_after_autocommit_lock():
        unlocked = get_one(Task, for_update=True, id=task.pk)  # autocommit: no lock kept
        unlocked.name = "again"
        with transaction.atomic():
            unlocked.save(update_fields=["name"])

    assert round_trips(save_after_autocommit_lock) == 3
    assert Task.objects.get(pk=task.pk).name == "again"
