"""Sweep totals: every sweep run's counts summed in one row, so /metrics' sweep
counters survive old runs being let go (SWEEP_RUNS_KEEP_DAYS) and a scrape reads one
row. A new table, filled from the runs kept (one grouped read of tasks_sweeprun);
nothing else is touched. Reversible: the table goes, the runs stay."""

from django.db import migrations, models
from django.db.models import Count, Q, Sum


def sum_runs(apps, schema_editor):
    SweepRun = apps.get_model("tasks", "SweepRun")
    SweepTotals = apps.get_model("tasks", "SweepTotals")
    db = schema_editor.connection.alias
    totals = SweepRun.objects.using(db).aggregate(
        runs=Count("pk"),
        failed=Sum("failed_count"),
        reassigned=Sum("reassigned_count"),
        held=Count("pk", filter=Q(failover_held_count__gt=0)),
    )
    SweepTotals.objects.using(db).create(
        pk=1, **{field: value or 0 for field, value in totals.items()}
    )


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0010_history_feed_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="SweepTotals",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("runs", models.PositiveBigIntegerField(default=0)),
                ("failed", models.PositiveBigIntegerField(default=0)),
                ("reassigned", models.PositiveBigIntegerField(default=0)),
                ("held", models.PositiveBigIntegerField(default=0)),
            ],
            options={"verbose_name_plural": "sweep totals"},
        ),
        migrations.RunPython(sum_runs, migrations.RunPython.noop),
    ]
