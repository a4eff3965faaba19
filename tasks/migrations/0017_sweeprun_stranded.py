"""Each sweep run records how many open tasks of down nodes it left in place, for want
of an alive schedulable node (`SweepRun.stranded_count`): the dashboard shows it, and
`collect_failed` under cron reports the count only when it differs from the last run's,
as `--every` does, instead of mailing the same warning every minute.

A nullable column on tasks_sweeprun (not tasks_task): instant on MariaDB, and the
previous release's sweep, which does not name it, still records its runs (null).
Runs from before it keep null ("not recorded"). Reversible (the column is dropped).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0016_history_node"),
    ]

    operations = [
        migrations.AddField(
            model_name="sweeprun",
            name="stranded_count",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
    ]
