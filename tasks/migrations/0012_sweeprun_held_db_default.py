"""A database default for tasks_sweeprun.failover_held_count (0004 added it NOT NULL
without one): during a rolling upgrade from the release before 0004, the old hosts'
sweep, which does not name the column, failed to record every run ("Field
'failover_held_count' doesn't have a default value"). On MariaDB an ALTER of the
column's default only: no rows are touched. Reversible."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0011_sweep_totals"),
    ]

    operations = [
        migrations.AlterField(
            model_name="sweeprun",
            name="failover_held_count",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
    ]
