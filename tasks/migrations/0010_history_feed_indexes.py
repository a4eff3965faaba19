"""Four indexes on tasks_taskhistory for the activity feed (tasks.activity): newest
first by action, by cause, and by the node a row gave a task to or took it from.

No table rewrite: MariaDB builds each in place while reads and writes go on
(ALGORITHM=INPLACE, LOCK=NONE; tests/tasks/test_migrations_feed.py), SQLite with
CREATE INDEX. Its time and what each index costs a history write:
docs/performance.md, "Activity feed". Reversible (the indexes are dropped).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0009_sweep_run_causes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="taskhistory",
            index=models.Index(fields=["action", "id"], name="history_action"),
        ),
        migrations.AddIndex(
            model_name="taskhistory",
            index=models.Index(fields=["cause", "id"], name="history_cause"),
        ),
        migrations.AddIndex(
            model_name="taskhistory",
            index=models.Index(fields=["to_value", "id"], name="history_to_value"),
        ),
        migrations.AddIndex(
            model_name="taskhistory",
            index=models.Index(fields=["from_value", "id"], name="history_from_value"),
        ),
    ]
