"""The status CHECK constraint admits `cancelled`.

The one step of cancellation that is not instant: MariaDB 10.11 can add a CHECK
constraint only by copying tasks_task (ALGORITHM=COPY, LOCK=SHARED: reads go on,
writes wait), even with check_constraint_checks=0, so this is an unavoidable table
rewrite, kept apart from 0006 and 0007 so an operator can run it in a quiet hour.
Dropping the old CHECK is instant. Measured on a million tasks in
docs/performance.md ("Migrations on a million tasks"). On SQLite Django rebuilds
the table, as for any constraint. Reversible (the old CHECK comes back; it fails
while cancelled rows exist, as it should).
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("tasks", "0007_cancellation"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="task",
            name="task_status_valid",
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("status__in", ["pending", "in_progress", "completed", "failed", "cancelled"])
                ),
                name="task_status_valid",
            ),
        ),
    ]
