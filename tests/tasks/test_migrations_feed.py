"""Migrations 0009 (a sweep run's counts by cause) and 0010 (the activity feed's history
indexes) are reversible, and on MariaDB rewrite no table: 0009's columns are added
with ALGORITHM=INSTANT, 0010's indexes built with ALGORITHM=INPLACE, LOCK=NONE (reads
and writes of the history go on)."""

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tasks.models import SWEEP_CAUSE_COUNTS, SweepRun, TaskHistory
from tests.tasks.migration_probes import collected_sql

BEFORE = ("tasks", "0008_cancelled_status_check")
CAUSES = ("tasks", "0009_sweep_run_causes")
FEED = ("tasks", "0010_history_feed_indexes")
RUN_COLUMNS = {count.field for count in SWEEP_CAUSE_COUNTS} | {"history_after", "history_last"}
INDEXES = {"history_action", "history_cause", "history_to_value", "history_from_value"}


def columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(cursor, table)}


def indexes(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


@pytest.mark.django_db(transaction=True)
def test_the_cause_and_feed_migrations_go_back_and_forth():
    runs, history = SweepRun._meta.db_table, TaskHistory._meta.db_table
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([BEFORE])
        assert not RUN_COLUMNS & columns(runs)
        assert not INDEXES & indexes(history)
        executor = MigrationExecutor(connection)
        executor.migrate([FEED])
        assert columns(runs) >= RUN_COLUMNS
        assert indexes(history) >= INDEXES
    finally:
        call_command("migrate", verbosity=0)


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="ALGORITHM=INSTANT is MariaDB's")
@pytest.mark.django_db(transaction=True)
def test_neither_migration_rewrites_a_table_on_mariadb():
    runs, history = SweepRun._meta.db_table, TaskHistory._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS runs_probe")
        cursor.execute("DROP TABLE IF EXISTS history_probe")
        # Both tables as they were before, with a row each: an empty table proves nothing.
        cursor.execute(f"CREATE TABLE runs_probe LIKE {runs}")
        cursor.execute(f"CREATE TABLE history_probe LIKE {history}")
        try:
            for column in RUN_COLUMNS:
                cursor.execute(f"ALTER TABLE runs_probe DROP COLUMN {column}")
            for index in INDEXES:
                cursor.execute(f"ALTER TABLE history_probe DROP INDEX {index}")
            cursor.execute(
                "INSERT INTO runs_probe (started_at, finished_at, failed_count,"
                " reassigned_count, failover_held_count) VALUES (NOW(), NOW(), 0, 0, 0)"
            )
            cursor.execute(
                "INSERT INTO history_probe (task_id, action, cause, created_at)"
                " VALUES (REPLACE(UUID(), '-', ''), 'edit', '', NOW())"
            )
            alters = collected_sql(CAUSES, BEFORE)
            assert len(alters) == len(RUN_COLUMNS)
            for sql in alters:
                # Refused by MariaDB if the change would need a table copy or rebuild.
                cursor.execute(f"{sql.replace(f'`{runs}`', 'runs_probe')}, ALGORITHM=INSTANT")
            creates = collected_sql(FEED, CAUSES)
            assert [sql.split()[:2] for sql in creates] == [["CREATE", "INDEX"]] * len(INDEXES)
            for sql in creates:
                # Refused if the index could not be built while reads and writes go on.
                probe = sql.replace(f"`{history}`", "history_probe")
                cursor.execute(f"{probe} ALGORITHM=INPLACE LOCK=NONE")
        finally:
            cursor.execute("DROP TABLE IF EXISTS runs_probe")
            cursor.execute("DROP TABLE IF EXISTS history_probe")
