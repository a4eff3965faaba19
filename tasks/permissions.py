"""Who may touch a task, as DRF permission classes.

Lists are scoped in the views' `get_queryset()` (`Task.objects.visible_to`);
these classes answer the single-object and role questions.
"""

from rest_framework.permissions import BasePermission

from accounts.permissions import IsNodeRole
from taskmgmt.fields import uuid_text


class IsAssignedNodeOrAdmin(BasePermission):
    """An admin may see any task; a node only the tasks assigned to it."""

    message = "Only an admin or the task's assigned node can do this."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request, view, obj):
        """`obj` is a Task or a TaskRow, whose id is the driver's text (hex on SQLite)."""
        return request.user.is_admin or uuid_text(obj.assigned_node_id) == str(request.user.pk)


class IsNodeWithOwnTasks(IsNodeRole):
    """A node's own task list: an admin has none and is sent to the full list."""

    message = "Only a worker node has its own task list; an admin lists tasks with /api/tasks/all."
