"""Migration 0006 (placement) is reversible, and on MariaDB changes a large tasks_task
without rewriting it: each ADD COLUMN with ALGORITHM=INSTANT, the claim's new index
with ALGORITHM=INPLACE, LOCK=NONE (as test_migrations.py proves migration 0005's)."""

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tasks.models import CLAIM_INDEX, Task
from tests.tasks.migration_probes import collected_sql, insert_probe_row, task_columns

PLACEMENT = ("tasks", "0006_placement")
BEFORE = ("tasks", "0005_work_data")
COLUMNS = {"node_selector", "priority", "pinned"}
OLD_INDEX = "task_node_claim"


def task_indexes() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, "tasks_task"))


@pytest.mark.django_db(transaction=True)
def test_the_placement_migration_goes_back_and_forth():
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([BEFORE])
        assert not COLUMNS & task_columns()
        assert OLD_INDEX in task_indexes() and CLAIM_INDEX not in task_indexes()
        executor = MigrationExecutor(connection)
        executor.migrate([PLACEMENT])
        assert task_columns() >= COLUMNS
        assert CLAIM_INDEX in task_indexes() and OLD_INDEX not in task_indexes()
    finally:
        call_command("migrate", verbosity=0)


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="ALGORITHM=INSTANT is MariaDB's")
@pytest.mark.django_db(transaction=True)
def test_the_placement_migration_rewrites_no_table_on_mariadb():
    table = Task._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS placement_probe")
        # tasks_task as it was before 0006, with a row: an empty table proves nothing.
        cursor.execute(f"CREATE TABLE placement_probe LIKE {table}")
        try:
            cursor.execute(f"ALTER TABLE placement_probe DROP INDEX {CLAIM_INDEX}")
            for column in COLUMNS:
                cursor.execute(f"ALTER TABLE placement_probe DROP COLUMN {column}")
            cursor.execute(
                f"CREATE INDEX {OLD_INDEX} ON placement_probe"
                " (assigned_node_id, status, active, locked_at, created_at)"
            )
            insert_probe_row(cursor, "placement_probe")
            statements = collected_sql(PLACEMENT, BEFORE)
            alters = [sql for sql in statements if sql.startswith("ALTER TABLE")]
            indexes = [sql for sql in statements if not sql.startswith("ALTER TABLE")]
            assert len(alters) == 3  # three ADD COLUMNs, the defaults kept
            assert [sql.split()[0] for sql in indexes] == ["CREATE", "DROP"]
            for sql in alters:
                # Refused by MariaDB if the change would need a table copy or rebuild.
                cursor.execute(f"{sql.replace(f'`{table}`', 'placement_probe')}, ALGORITHM=INSTANT")
            create, drop = indexes
            # Refused if the index could not be built while reads and writes go on.
            cursor.execute(
                f"{create.replace(f'`{table}`', 'placement_probe')} ALGORITHM=INPLACE LOCK=NONE"
            )
            # DROP INDEX takes no options: the same, as the ALTER TABLE it stands for.
            old = drop.split()[2]
            cursor.execute(
                f"ALTER TABLE placement_probe DROP INDEX {old}, ALGORITHM=NOCOPY, LOCK=NONE"
            )
        finally:
            cursor.execute("DROP TABLE IF EXISTS placement_probe")
