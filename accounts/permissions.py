"""Role checks for the API, as small DRF permission classes."""

from rest_framework.permissions import BasePermission


class IsAdminRole(BasePermission):
    message = "Only an admin can do this."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_admin)


class IsNodeRole(BasePermission):
    message = "Only a worker node can do this."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_node)
