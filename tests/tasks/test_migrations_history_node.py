"""Migration 0016 (the task's node on each history row) is reversible, and on MariaDB
rewrites no table: the column is added with ALGORITHM=INSTANT, its index built with
ALGORITHM=INPLACE, LOCK=NONE (reads and writes of the history go on)."""

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tasks.models import HistoryAction, TaskHistory
from tests.factories import TaskFactory
from tests.tasks.migration_probes import collected_sql

BEFORE = ("tasks", "0015_history_values_widened")
HISTORY_NODE = ("tasks", "0016_history_node")


def history_columns() -> set[str]:
    with connection.cursor() as cursor:
        description = connection.introspection.get_table_description(cursor, "tasks_taskhistory")
    return {column.name for column in description}


@pytest.mark.django_db(transaction=True)
def test_the_history_node_migration_goes_back_and_forth_keeping_every_row(node):
    task = TaskFactory(assigned_node=node)
    rows = TaskHistory.objects.count()
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([BEFORE])
        assert "node_id" not in history_columns()
        executor = MigrationExecutor(connection)
        executor.migrate([HISTORY_NODE])
        assert "node_id" in history_columns()
        # A row from before names no node; the rows written now do.
        assert TaskHistory.objects.filter(task=task).values_list("node", flat=True)[0] is None
        assert TaskHistory.objects.count() == rows
    finally:
        call_command("migrate", verbosity=0)
    TaskHistory.objects.create(task=task, action=HistoryAction.EDIT, node=node)
    assert TaskHistory.objects.filter(node=node).count() == 1


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="ALGORITHM clauses are MariaDB's")
@pytest.mark.django_db(transaction=True)
def test_the_history_node_migration_rewrites_nothing_on_mariadb():
    history = TaskHistory._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS history_node_probe")
        # The history table as it was before, with a row: an empty table proves nothing.
        cursor.execute(f"CREATE TABLE history_node_probe LIKE {history}")
        try:
            cursor.execute("ALTER TABLE history_node_probe DROP INDEX history_node")
            cursor.execute("ALTER TABLE history_node_probe DROP COLUMN node_id")
            cursor.execute(
                "INSERT INTO history_node_probe (task_id, action, cause, created_at)"
                " VALUES (REPLACE(UUID(), '-', ''), 'edit', '', NOW())"
            )
            alter, create = collected_sql(
                HISTORY_NODE, BEFORE, table=history, probe="history_node_probe"
            )
            assert alter.startswith("ALTER TABLE") and "ADD COLUMN" in alter
            assert "FOREIGN KEY" not in alter  # adding one copies the table
            # Refused by MariaDB if the change needed a table copy or rebuild.
            cursor.execute(f"{alter}, ALGORITHM=INSTANT")
            assert create.startswith("CREATE INDEX")
            # Refused if the index could not be built while reads and writes go on.
            cursor.execute(f"{create} ALGORITHM=INPLACE LOCK=NONE")
        finally:
            cursor.execute("DROP TABLE IF EXISTS history_node_probe")
