"""Append-only models: the audit trails (task history, node events) are added to, never
changed. One guard for both, so a way around it is closed for both at once."""

from django.db import models


class AppendOnlyError(Exception):
    """An audit trail's rows are added, never changed."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise self.model.append_only_error(f"{self.model.audit_name} cannot be updated.")

    def delete(self):
        raise self.model.append_only_error(f"{self.model.audit_name} cannot be deleted.")


class AppendOnlyModel(models.Model):
    """Refuses updates and deletes of a row, on the instance and on its queryset
    (`objects = AppendOnlyQuerySet.as_manager()`). Bulk inserts stay allowed."""

    # What the errors call the trail ("Task history"), and the error they raise.
    audit_name = "Audit rows"
    append_only_error = AppendOnlyError

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise self.append_only_error(f"{self.audit_name} cannot be updated.")
        # An INSERT always: a new instance given an existing id must not overwrite that row.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise self.append_only_error(f"{self.audit_name} cannot be deleted.")
