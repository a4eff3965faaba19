"""A progress report and a task's detail on the hot path (taskmgmt.hot_paths): the
views' checks and answers, without the request plumbing around them."""

from accounts.permissions import IsNodeRole
from taskmgmt.hot_paths import Fallback, register
from tasks.permissions import IsAssignedNodeOrAdmin
from tasks.selectors import active_task_row
from tasks.serializers import task_representation
from tasks.views import progress_answer


def progress(request, match) -> dict:
    return progress_answer(request)


def detail(request, match) -> dict:
    """TaskViewSet.retrieve: the active task, to an admin or its assigned node."""
    task = active_task_row(match["task_id"])
    if task is None or not IsAssignedNodeOrAdmin().has_object_permission(request, None, task):
        raise Fallback  # Django's 404 or 403
    return {"task": task_representation(task)}


def register_all() -> None:
    register(
        "PUT",
        r"/api/tasks/progress",
        progress,
        permission=IsNodeRole,
        allow="PUT, OPTIONS",
        example="/api/tasks/progress",
    )
    # A task id in its usual form only: "all", "node", ... are other routes.
    register(
        "GET",
        r"/api/tasks/(?P<task_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
        detail,
        permission=IsAssignedNodeOrAdmin,
        allow="GET, DELETE, HEAD, OPTIONS",
        example="/api/tasks/00000000-0000-0000-0000-000000000000",
    )
