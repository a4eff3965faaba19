"""What the migration tests share: the columns of tasks_task, a probe copy of it with
one row (an empty table proves nothing about a table copy), and the SQL a migration
sends, to run on such a copy."""

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def task_columns() -> set[str]:
    with connection.cursor() as cursor:
        description = connection.introspection.get_table_description(cursor, "tasks_task")
    return {column.name for column in description}


def insert_probe_row(cursor, table: str) -> None:
    """One pending task in `table`, a `CREATE TABLE … LIKE tasks_task` copy (MariaDB)."""
    cursor.execute(
        f"INSERT INTO {table} (id, name, details, assigned_node_id, status,"
        " locked_at, active, attempts, failure_cause, failure_reason, created_at,"
        " updated_at) VALUES (REPLACE(UUID(), '-', ''), 'a', 'b',"
        " REPLACE(UUID(), '-', ''), 'pending', NOW(), 1, 0, '', '', NOW(), NOW())"
    )


def collected_sql(node, before, *, table: str = "", probe: str = "") -> list[str]:
    """The statements migration `node` sends after `before` (no comments, no `;`); with
    `table` and `probe`, aimed at the probe copy instead of the table."""
    executor = MigrationExecutor(connection)
    migration = executor.loader.graph.nodes[node]
    with connection.schema_editor(collect_sql=True, atomic=False) as editor:
        migration.apply(executor.loader.project_state(before), editor, collect_sql=True)
    statements = [sql.rstrip(";") for sql in editor.collected_sql if sql[:1] != "-"]
    return [sql.replace(f"`{table}`", probe) for sql in statements] if table else statements
