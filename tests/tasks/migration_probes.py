"""What the migration tests share: the columns of tasks_task, and a probe copy of it
with one row (an empty table proves nothing about a table copy)."""

from django.db import connection


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
