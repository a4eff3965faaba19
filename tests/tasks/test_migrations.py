"""Migrations 0005 (work data), 0007-0008 (cancellation) and 0015 (history values) are
reversible, and on MariaDB alter their tables without rewriting them (each ALTER
succeeds with ALGORITHM=INSTANT), but for 0008's CHECK, which must copy."""

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

from tasks.models import Task
from tests.tasks.migration_probes import collected_sql, insert_probe_row, task_columns

WORK_DATA = ("tasks", "0005_work_data")
BEFORE = ("tasks", "0004_sweep_failover_held")
COLUMNS = {
    "payload",
    "result",
    "progress_percent",
    "progress_message",
    "progress_updated_at",
    "checkpoint",
}


@pytest.mark.django_db(transaction=True)
def test_the_work_data_migration_goes_back_and_forth():
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([BEFORE])
        assert not COLUMNS & task_columns()
        executor = MigrationExecutor(connection)
        executor.migrate([WORK_DATA])
        assert task_columns() >= COLUMNS
    finally:
        call_command("migrate", verbosity=0)


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="ALGORITHM=INSTANT is MariaDB's")
@pytest.mark.django_db(transaction=True)
def test_the_work_data_columns_are_added_instantly_on_mariadb():
    table = Task._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS work_data_probe")
        # tasks_task as it was before 0005, with a row: an empty table proves nothing.
        cursor.execute(f"CREATE TABLE work_data_probe LIKE {table}")
        try:
            for column in COLUMNS:
                cursor.execute(f"ALTER TABLE work_data_probe DROP COLUMN {column}")
            insert_probe_row(cursor, "work_data_probe")
            sql = collected_sql(WORK_DATA, BEFORE, table=table, probe="work_data_probe")
            alters = [statement for statement in sql if statement.startswith("ALTER TABLE")]
            assert len(alters) == len(COLUMNS)
            for alter in alters:
                # Refused by MariaDB if the change would need a table copy or rebuild.
                cursor.execute(f"{alter}, ALGORITHM=INSTANT")
        finally:
            cursor.execute("DROP TABLE IF EXISTS work_data_probe")


CANCELLATION = ("tasks", "0007_cancellation")
STATUS_CHECK = ("tasks", "0008_cancelled_status_check")
CANCEL_COLUMNS = {"cancel_requested_at", "cancel_reason"}


@pytest.mark.django_db(transaction=True)
def test_the_cancellation_migrations_go_back_and_forth():
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([WORK_DATA])
        assert not CANCEL_COLUMNS & task_columns()
        executor = MigrationExecutor(connection)
        executor.migrate([STATUS_CHECK])
        assert task_columns() >= CANCEL_COLUMNS
    finally:
        call_command("migrate", verbosity=0)


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="ALGORITHM=INSTANT is MariaDB's")
@pytest.mark.django_db(transaction=True)
def test_the_cancel_columns_are_added_instantly_on_mariadb():
    table = Task._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS cancellation_probe")
        cursor.execute(f"CREATE TABLE cancellation_probe LIKE {table}")
        try:
            for column in CANCEL_COLUMNS:
                cursor.execute(f"ALTER TABLE cancellation_probe DROP COLUMN {column}")
            insert_probe_row(cursor, "cancellation_probe")
            sql = collected_sql(CANCELLATION, WORK_DATA, table=table, probe="cancellation_probe")
            alters = [statement for statement in sql if statement.startswith("ALTER TABLE")]
            # The new choices send no SQL: only the two columns are altered.
            assert len(alters) == len(CANCEL_COLUMNS)
            for alter in alters:
                cursor.execute(f"{alter}, ALGORITHM=INSTANT")
        finally:
            cursor.execute("DROP TABLE IF EXISTS cancellation_probe")


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="ALGORITHM clauses are MariaDB's")
@pytest.mark.django_db(transaction=True)
def test_the_status_check_is_dropped_instantly_and_added_only_by_a_copy_on_mariadb():
    # 0008's docstring and docs/performance.md say its ADD copies tasks_task because
    # nothing cheaper is accepted: if a MariaDB upgrade accepts INPLACE, use it there.
    table = Task._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS status_check_probe")
        cursor.execute(f"CREATE TABLE status_check_probe LIKE {table}")
        try:
            insert_probe_row(cursor, "status_check_probe")
            sql = collected_sql(STATUS_CHECK, CANCELLATION, table=table, probe="status_check_probe")
            drop, add = [statement for statement in sql if statement.startswith("ALTER TABLE")]
            assert "DROP CONSTRAINT" in drop and "ADD CONSTRAINT" in add
            cursor.execute(f"{drop}, ALGORITHM=INSTANT")
            # Skipping validation does not spare the copy either.
            cursor.execute("SET SESSION check_constraint_checks = 0")
            with pytest.raises(DatabaseError, match="ALGORITHM=COPY"):
                cursor.execute(f"{add}, ALGORITHM=INPLACE")
            cursor.execute(f"{add}, ALGORITHM=COPY, LOCK=SHARED")
        finally:
            cursor.execute("SET SESSION check_constraint_checks = DEFAULT")
            cursor.execute("DROP TABLE IF EXISTS status_check_probe")


HISTORY_VALUES = ("tasks", "0015_history_values_widened")
BEFORE_HISTORY_VALUES = ("tasks", "0014_drained_label")


@pytest.mark.django_db(transaction=True)
def test_the_history_values_migration_goes_back_and_forth_cutting_long_reasons(node):
    from tasks.models import HistoryAction, TaskHistory
    from tests.factories import TaskFactory

    task = TaskFactory(assigned_node=node)
    reason = "r" * 300
    row = TaskHistory.objects.create(
        task=task, action=HistoryAction.CANCEL_REQUEST, from_value="pending", to_value=reason
    )
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([BEFORE_HISTORY_VALUES])
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT from_value, to_value FROM tasks_taskhistory WHERE id = %s", [row.pk]
            )
            assert cursor.fetchone() == ("pending", "r" * 64)  # cut, then narrowed
        executor = MigrationExecutor(connection)
        executor.migrate([HISTORY_VALUES])
        # The model as 0015 left it: later migrations add columns the current one writes.
        history = executor.loader.project_state(HISTORY_VALUES).apps.get_model(
            "tasks", "TaskHistory"
        )
        history.objects.create(
            task_id=task.pk,
            action=HistoryAction.CANCEL_REQUEST,
            from_value="pending",
            to_value=reason,
        )
        assert history.objects.filter(to_value=reason).count() == 1
    finally:
        call_command("migrate", verbosity=0)


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="ALGORITHM=INSTANT is MariaDB's")
@pytest.mark.django_db(transaction=True)
def test_the_history_values_are_widened_instantly_on_mariadb():
    """No copy of the history table however long it is: a longer VARCHAR with the same
    length bytes is metadata only, its indexes too."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS history_values_probe")
        cursor.execute("CREATE TABLE history_values_probe LIKE tasks_taskhistory")
        try:
            for column in ("from_value", "to_value"):
                cursor.execute(f"ALTER TABLE history_values_probe MODIFY {column} varchar(64) NULL")
            cursor.execute(
                "INSERT INTO history_values_probe (task_id, action, from_value, to_value, cause,"
                " created_at) VALUES (REPLACE(UUID(), '-', ''), 'status_change', 'pending',"
                " 'in_progress', '', NOW())"
            )
            sql = collected_sql(
                HISTORY_VALUES,
                BEFORE_HISTORY_VALUES,
                table="tasks_taskhistory",
                probe="history_values_probe",
            )
            alters = [statement for statement in sql if statement.startswith("ALTER TABLE")]
            assert len(alters) == 2
            for alter in alters:
                cursor.execute(f"{alter}, ALGORITHM=INSTANT")
        finally:
            cursor.execute("DROP TABLE IF EXISTS history_values_probe")
