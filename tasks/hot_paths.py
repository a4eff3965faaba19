"""A node's progress reports, status changes, claims and task reads on the hot path
(taskmgmt.hot_paths): the views' checks and answers, without the request plumbing
around them."""

from accounts.permissions import IsNodeRole
from taskmgmt.hot_paths import Fallback, register
from tasks import services
from tasks.actor import acting_as
from tasks.permissions import IsAssignedNodeOrAdmin
from tasks.selectors import active_task_from, active_task_read, active_task_row
from tasks.serializers import task_representation
from tasks.views import progress_answer, shift_status_change


def progress(request, match) -> dict:
    return progress_answer(request)


def shift_status(request, match) -> dict:
    with acting_as(request.user):  # the history row's actor, as ActorMiddleware sets it
        task = shift_status_change(request)
    request.changed = True  # committed: never run again through Django
    return {"task": task_representation(task)}


def claim(request, match) -> dict:
    if not isinstance(request.data, dict):
        raise Fallback  # Django's 400: a body must be a JSON object
    with acting_as(request.user):
        task = services.task_claim(node=request.user)
    if task is None:
        raise Fallback  # Django's 204, after a second look (nothing was claimed)
    request.changed = True
    return {"task": task_representation(task)}


def detail(request, match) -> dict:
    """TaskViewSet.retrieve: the active task, to an admin or its assigned node."""
    rows = request.read_with_user
    task = active_task_row(match["task_id"]) if rows is None else active_task_from(rows)
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
    register(
        "PUT",
        r"/api/tasks/shift-status",
        shift_status,
        permission=IsNodeRole,
        allow="PUT, OPTIONS",
        example="/api/tasks/shift-status",
    )
    register(
        "POST",
        r"/api/tasks/claim",
        claim,
        permission=IsNodeRole,
        allow="POST, OPTIONS",
        example="/api/tasks/claim",
    )
    # A task id in its usual form only: "all", "node", ... are other routes.
    register(
        "GET",
        r"/api/tasks/(?P<task_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
        detail,
        permission=IsAssignedNodeOrAdmin,
        allow="GET, DELETE, HEAD, OPTIONS",
        example="/api/tasks/00000000-0000-0000-0000-000000000000",
        # The task in one round trip with the caller's user.
        read_with_user=lambda request, match, user_id: active_task_read(match["task_id"]),
    )
