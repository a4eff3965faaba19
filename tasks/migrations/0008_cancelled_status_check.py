"""The status CHECK constraint admits `cancelled`.

The one step of cancellation that is not instant: MariaDB (10.11) validates every
row when a CHECK constraint is added, so ADD CONSTRAINT copies tasks_task
(ALGORITHM=COPY; INSTANT, NOCOPY and INPLACE are refused). Kept apart from 0006 so
an operator can time it; on SQLite Django rebuilds the table, as for any constraint.
A million rows take minutes on MariaDB: run it in a quiet hour. Reversible (the old
CHECK comes back; it fails while cancelled rows exist, as it should).
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
