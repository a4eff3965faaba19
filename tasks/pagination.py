"""The task lists' pages: taskmgmt.pagination's keyset pages over tasks, by UUID id."""

from django.conf import settings

from taskmgmt.pagination import KeysetPagination


class TaskPagination(KeysetPagination):
    """`{tasks, nextCursor}`; no `limit` means every task, as the original did."""

    results_key = "tasks"
    limit_description = "Tasks per page; left out or empty, every task."


class CappedTaskPagination(TaskPagination):
    """The same pages, but no `limit` means MAX_PAGE_SIZE, not every task: for the
    profile, whose unpaged list of a busy node's tasks ran to megabytes."""

    limit_description = "Tasks per page; left out or empty, MAX_PAGE_SIZE (1000 by default)."

    def get_limit(self, request) -> int:
        limit = super().get_limit(request)
        return settings.MAX_PAGE_SIZE if limit is None else limit
