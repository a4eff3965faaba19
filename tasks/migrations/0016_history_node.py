"""Each history row names the task's node once its change is made (`TaskHistory.node`),
so the activity feed by node finds what happened to a node's tasks that no value names:
the sweep's failures (deadline, node_lost, drained, cancel_timeout), an admin's edits,
soft deletes and cancel requests.

No table rewrite: on MariaDB the nullable column is added with ALGORITHM=INSTANT and its
index built with ALGORITHM=INPLACE, LOCK=NONE while reads and writes go on
(tests/tasks/test_migrations_history_node.py); there is no FOREIGN KEY in the database,
since adding one copies the table. Rows written before it keep a null node (which node
held the task then is not recorded anywhere): the feed still finds them by their values.
Reversible (the index and the column are dropped).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0015_history_values_widened"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="taskhistory",
            name="node",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="taskhistory",
            index=models.Index(fields=["node", "id"], name="history_node"),
        ),
    ]
