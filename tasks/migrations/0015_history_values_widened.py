"""History values from 64 to 500 characters: a cancel request's row keeps the whole
reason (at most CANCEL_REASON_MAX_LENGTH), not its first 64 characters.

On MariaDB a longer VARCHAR with the same two length bytes is an instant, metadata-only
ALTER, indexes and all (tests/tasks/test_migrations.py proves it with
ALGORITHM=INSTANT): no copy of the history table, whatever its size. SQLite rebuilds
the table, as for any altered column.

Backwards, values are cut to 64 characters first (only reasons can be longer), then
the columns narrowed: that way copies the table on MariaDB (a shorter VARCHAR is not
instant) and loses the end of each longer reason (the task keeps the whole one).
"""

from django.db import migrations, models
from django.db.models.functions import Length, Substr

OLD_LENGTH = 64


def cut_to_old_length(apps, schema_editor):
    history = apps.get_model("tasks", "TaskHistory")
    for field in ("from_value", "to_value"):
        longer = history.objects.annotate(length=Length(field)).filter(length__gt=OLD_LENGTH)
        longer.update(**{field: Substr(field, 1, OLD_LENGTH)})


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0014_drained_label"),
    ]

    operations = [
        migrations.AlterField(
            model_name="taskhistory",
            name="from_value",
            field=models.CharField(blank=True, max_length=500, null=True),
        ),
        migrations.AlterField(
            model_name="taskhistory",
            name="to_value",
            field=models.CharField(blank=True, max_length=500, null=True),
        ),
        # Run first on the way back, before the columns narrow.
        migrations.RunPython(migrations.RunPython.noop, cut_to_old_length),
    ]
