"""A sweep run keeps what it did by cause and the range of history ids it wrote.

Nullable columns on tasks_sweeprun only (a run from before reads "not recorded"):
instant on MariaDB, nothing rewritten; reversible (the columns go).
"""

from django.db import migrations, models


def count(name):
    return migrations.AddField(
        model_name="sweeprun",
        name=name,
        field=models.PositiveIntegerField(blank=True, null=True),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0008_cancelled_status_check"),
    ]

    operations = [
        count("deadline_failed"),
        count("node_lost_failed"),
        count("node_lost_moved"),
        count("drained_failed"),
        count("drained_moved"),
        count("cancel_timeout_cancelled"),
        migrations.AddField(
            model_name="sweeprun",
            name="history_after",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="sweeprun",
            name="history_last",
            field=models.BigIntegerField(blank=True, null=True),
        ),
    ]
