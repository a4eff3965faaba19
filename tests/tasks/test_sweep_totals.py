"""Sweep runs are let go after SWEEP_RUNS_KEEP_DAYS, and /metrics' sweep counters,
summed in SweepTotals as each run is recorded, never go down for it."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from tasks import services
from tasks.models import SweepRun, SweepTotals, TaskStatus
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
