"""Sweep totals count the tasks the sweep cancelled (an unanswered cancel request), for
/metrics' taskmgmt_sweep_cancelled_tasks_total: its event counter lived only in the
sweep's own process (a systemd timer's or cron's), which no scrape sees. A column on
the one-row table (with a database default, so the previous release's sweep can still
make the row), filled from the runs kept; reversible (the column goes)."""

from django.db import migrations, models
from django.db.models import Sum


def sum_cancelled(apps, schema_editor):
    SweepRun = apps.get_model("tasks", "SweepRun")
    SweepTotals = apps.get_model("tasks", "SweepTotals")
    db = schema_editor.connection.alias
    cancelled = SweepRun.objects.using(db).aggregate(n=Sum("cancel_timeout_cancelled"))["n"]
    SweepTotals.objects.using(db).filter(pk=1).update(cancelled=cancelled or 0)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0012_sweeprun_held_db_default"),
    ]

    operations = [
        migrations.AddField(
            model_name="sweeptotals",
            name="cancelled",
            field=models.PositiveBigIntegerField(db_default=0, default=0),
        ),
        migrations.RunPython(sum_cancelled, migrations.RunPython.noop),
    ]
