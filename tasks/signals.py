"""Audit history, written for every save of a task, whatever path made it.

Bulk changes (the sweep, admin actions on many tasks) use one UPDATE and write
their rows themselves, in bulk and in the same transaction (see `tasks.services`).
"""

import logging

from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from taskmgmt.sql import insert_rows
from tasks.actor import current_actor
from tasks.models import HistoryAction, Task, TaskHistory

logger = logging.getLogger("taskmgmt.tasks")


@receiver(pre_save, sender=Task)
def load_saved_values(sender, instance, raw, **kwargs):
    """Fetch the stored values a save is about to replace, if not loaded already."""
    if raw or instance._state.adding:
        return
    saved = getattr(instance, "saved_values", {})
    if all(field in saved for field in Task.TRACKED_FIELDS):
        return
    stored = Task.objects.filter(pk=instance.pk).values(*Task.TRACKED_FIELDS).first() or {}
    instance.saved_values = {**stored, **saved}


@receiver(post_save, sender=Task)
def record_task_history(sender, instance, created, raw, update_fields, **kwargs):
    if raw:  # loaddata: a fixture brings its own history
        return
    actor = current_actor()
    # A save limited by update_fields writes only those: an unsaved change elsewhere is no event.
    written = Task.tracked_among(update_fields)
    if created:
        rows = [
            TaskHistory(
                task=instance,
                action=HistoryAction.INITIAL_ASSIGN,
                to_value=str(instance.assigned_node_id),
                node_id=instance.assigned_node_id,
            )
        ]
    else:
        after = {field: getattr(instance, field) for field in written}
        rows = TaskHistory.for_change(
            instance.pk,
            instance.saved_values,
            after,
            node_id=instance.assigned_node_id,
            cause=instance.failure_cause,
        )
    for row in rows:
        row.performed_by = actor
    # Every task change writes these: one INSERT built once per process, not bulk_create's,
    # sent with the transaction's COMMIT where the backend can (nothing reads its ids).
    insert_rows(TaskHistory, rows, defer=True)
    for row in rows:
        logger.info(
            "task changed",
            extra={
                "event": row.action,
                "task_id": str(instance.pk),
                "from_value": row.from_value,
                "to_value": row.to_value,
                "performed_by": str(actor.pk) if actor else None,
            },
        )
    instance.remember_saved_values(written)
