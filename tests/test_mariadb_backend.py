"""taskmgmt.mariadb: Django's MySQL backend with START TRANSACTION sent with a
transaction's first statement and nothing after its COMMIT. Each test checks what
the server did (its own statement counters, a second connection), on MariaDB."""

import MySQLdb
import pytest
from django.db import IntegrityError, connection, transaction

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
