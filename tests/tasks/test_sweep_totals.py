"""Sweep runs are let go after SWEEP_RUNS_KEEP_DAYS, and /metrics' sweep counters,
summed in SweepTotals as each run is recorded, never go down for it."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from tasks import services
from tasks.models import SweepRun, SweepTotals, Task, TaskStatus
from tasks.selectors import sweep_totals
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def old_run(days: int, failed: int = 0) -> SweepRun:
    started = timezone.now() - timedelta(days=days)
    return SweepRun.objects.create(started_at=started, finished_at=started, failed_count=failed)


def test_each_run_adds_what_it_did_to_the_totals():
    before = sweep_totals()
    TaskFactory.create_batch(
        3, status=TaskStatus.PENDING, locked_at=timezone.now() - timedelta(minutes=1)
    )

    services.sweep_run(batch_size=100)
    services.sweep_run(batch_size=100)

    after = sweep_totals()
    assert after["runs"] - before["runs"] == 2
    assert after["failed"] - before["failed"] == 3
    assert after["reassigned"] == before["reassigned"]


def test_runs_older_than_the_kept_days_go_and_the_totals_stay(settings):
    settings.SWEEP_RUNS_KEEP_DAYS = 30
    gone, kept = old_run(days=31, failed=5), old_run(days=29, failed=1)
    before = sweep_totals()

    run, _ = services.sweep_run(batch_size=100)

    assert set(SweepRun.objects.values_list("pk", flat=True)) == {kept.pk, run.pk}
    assert not SweepRun.objects.filter(pk=gone.pk).exists()
    assert sweep_totals()["runs"] == before["runs"] + 1  # the one gone is not taken off


def test_zero_keeps_every_run(settings):
    settings.SWEEP_RUNS_KEEP_DAYS = 0
    ancient = old_run(days=3650)

    services.sweep_run(batch_size=100)

    assert SweepRun.objects.filter(pk=ancient.pk).exists()


def test_a_run_lets_go_of_a_bounded_batch_oldest_first(settings, monkeypatch):
    settings.SWEEP_RUNS_KEEP_DAYS = 30
    monkeypatch.setattr(services, "PRUNE_BATCH", 2)
    oldest, older, old = old_run(days=40), old_run(days=35), old_run(days=33)

    assert services.sweep_runs_prune(now=timezone.now()) == 2

    assert list(SweepRun.objects.filter(started_at__lt=timezone.now() - timedelta(days=30))) == [
        old
    ]
    assert not SweepRun.objects.filter(pk__in=[oldest.pk, older.pk]).exists()


def test_a_missing_totals_row_is_made_again():
    SweepTotals.objects.all().delete()

    services.sweep_run(batch_size=100)

    assert sweep_totals()["runs"] == 1


BEFORE = ("tasks", "0010_history_feed_indexes")
TOTALS = ("tasks", "0011_sweep_totals")


@pytest.mark.django_db(transaction=True)
def test_the_migration_sums_the_runs_kept_and_goes_back():
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([BEFORE])
        now = timezone.now()
        with connection.cursor() as cursor:
            for failed, reassigned, held in [(3, 1, 0), (4, 0, 2)]:
                cursor.execute(
                    "INSERT INTO tasks_sweeprun (started_at, finished_at, failed_count,"
                    " reassigned_count, failover_held_count) VALUES (%s, %s, %s, %s, %s)",
                    [now, now, failed, reassigned, held],
                )
        executor = MigrationExecutor(connection)
        executor.migrate([TOTALS])
        apps = executor.loader.project_state([TOTALS]).apps
        row = apps.get_model("tasks", "SweepTotals").objects.get(pk=1)
        assert (row.runs, row.failed, row.reassigned, row.held) == (2, 7, 1, 1)
        executor = MigrationExecutor(connection)
        executor.migrate([BEFORE])
        assert "tasks_sweeptotals" not in connection.introspection.table_names()
        assert SweepRun.objects.count() == 2
    finally:
        SweepRun.objects.all().delete()
        call_command("migrate", verbosity=0)


CANCELLED_BEFORE = ("tasks", "0011_sweep_totals")
CANCELLED = ("tasks", "0013_sweep_totals_cancelled")


@pytest.mark.django_db(transaction=True)
def test_the_previous_release_s_sweep_still_records_runs_and_cancels_are_summed():
    """A rolling upgrade: the old hosts' sweep inserts runs without the columns it does
    not know (0004's failover_held_count had no database default: every run failed),
    and 0013 sums the cancellations of the runs kept."""
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([CANCELLED_BEFORE])
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO tasks_sweeprun (started_at, finished_at, failed_count,"
                " reassigned_count, failover_held_count, cancel_timeout_cancelled)"
                " VALUES (%s, %s, 1, 0, 0, 2)",
                [now, now],
            )
            cursor.execute("DELETE FROM tasks_sweeptotals")  # as 0011 left it: one row
            cursor.execute(
                "INSERT INTO tasks_sweeptotals (id, runs, failed, reassigned, held)"
                " VALUES (1, 1, 1, 0, 0)"
            )
        executor = MigrationExecutor(connection)
        executor.migrate([CANCELLED])
        with connection.cursor() as cursor:
            # The release before 0004 names neither failover_held_count nor the causes.
            cursor.execute(
                "INSERT INTO tasks_sweeprun (started_at, finished_at, failed_count,"
                " reassigned_count) VALUES (%s, %s, 0, 0)",
                [now, now],
            )
        apps = executor.loader.project_state([CANCELLED]).apps
        assert apps.get_model("tasks", "SweepTotals").objects.get(pk=1).cancelled == 2
        assert list(SweepRun.objects.values_list("failover_held_count", flat=True)) == [0, 0]
        executor = MigrationExecutor(connection)
        executor.migrate([CANCELLED_BEFORE])
        assert SweepRun.objects.count() == 2
    finally:
        SweepRun.objects.all().delete()
        call_command("migrate", verbosity=0)


def test_a_run_adds_its_cancellations_to_the_totals():
    task = TaskFactory(
        status=TaskStatus.IN_PROGRESS,
        cancel_requested_at=timezone.now() - timedelta(hours=1),
    )

    services.sweep_run(batch_size=100)

    assert Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED
    assert sweep_totals()["cancelled"] == 1
