"""The `drained` cause reads "Node drained": "Drain deadline passed" also labelled the
moves a drain makes at once, long before its deadline. Choices only: no SQL on either
database (sqlmigrate: no-op), so nothing of tasks_task or its history is touched."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0013_sweep_totals_cancelled"),
    ]

    operations = [
        migrations.AlterField(
            model_name="task",
            name="failure_cause",
            field=models.CharField(
                blank=True,
                choices=[
                    ("node_reported", "Reported by its node"),
                    ("deadline", "Deadline passed"),
                    ("node_lost", "Node lost"),
                    ("admin", "Failed by an admin"),
                    ("drained", "Node drained"),
                    ("cancel_timeout", "Cancel unanswered"),
                ],
                default="",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="taskhistory",
            name="cause",
            field=models.CharField(
                blank=True,
                choices=[
                    ("node_reported", "Reported by its node"),
                    ("deadline", "Deadline passed"),
                    ("node_lost", "Node lost"),
                    ("admin", "Failed by an admin"),
                    ("drained", "Node drained"),
                    ("cancel_timeout", "Cancel unanswered"),
                ],
                default="",
                max_length=16,
            ),
        ),
    ]
