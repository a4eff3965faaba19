from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import (
    AdminPasswordChangeForm,
    AdminUserCreationForm,
    UserChangeForm,
)
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts import heartbeats
from accounts.hashers import HashQueueFull
from accounts.models import Liveness, Role, User
from accounts.throttling import login_allowed
from taskmgmt.metrics import LOGIN_FAILURES
from taskmgmt.throttling import CacheUnavailable


class AdminLoginForm(AdminAuthenticationForm):
    """The admin's login under the API login's limits: the same counts per IP and
    per account, so neither login is a way to guess around the other."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "rate_limited": (
            "Too many login attempts for this account or from this address. "
            "Wait a minute, then try again."
        ),
        "busy": "The server is checking too many passwords at once. Try again in a few seconds.",
        "unavailable": (
            "Logins are unavailable right now: the login limits cannot be counted. "
            "Try again in a few seconds."
        ),
        "node_account": (
            "This is a node account. Node accounts use the API (POST /api/auth/login), "
            "not the admin site; log in here with an admin account."
        ),
    }

    def confirm_login_allowed(self, user):
        # Django's message asks for "a staff account", which tells a node nothing.
        if user.is_active and not user.is_staff:
            raise ValidationError(self.error_messages["node_account"], code="node_account")
        super().confirm_login_allowed(user)

    def clean(self):
        try:
            return self._checked()
        except ValidationError as error:
            LOGIN_FAILURES.labels("admin_site", error.code or "invalid").inc()
            raise

    def _checked(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        try:
            allowed = username is None or not password or login_allowed(self.request, username)
        except CacheUnavailable as error:
            # Fails closed, as the API login does: an uncounted guess is an unlimited one.
            raise ValidationError(self.error_messages["unavailable"], code="unavailable") from error
        if not allowed:
            raise ValidationError(self.error_messages["rate_limited"], code="rate_limited")
        try:
            return super().clean()
        except HashQueueFull as error:
            raise ValidationError(self.error_messages["busy"], code="busy") from error


admin.site.login_form = AdminLoginForm


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ["email", "name", "role"]


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = ["email", "name", "role", "is_active"]


class LivenessFilter(admin.SimpleListFilter):
    """Nodes by what their last heartbeat says now (admins have no liveness)."""

    title = "liveness"
    parameter_name = "liveness"

    def lookups(self, request, model_admin):
        return Liveness.choices

    def queryset(self, request, queryset):
        if self.value() in Liveness.values:
            return queryset.filter(role=Role.NODE, liveness=self.value())
        return queryset


class PasswordChangeForm(AdminPasswordChangeForm):
    def save(self, commit=True):
        # The password only: the rest of the row was read when the request began.
        user = super().save(commit=False)
        if commit:
            user.save(update_fields=["password"])
        return user


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    change_password_form = PasswordChangeForm
    list_display = [
        "email",
        "name",
        "role",
        "liveness",
        "last_seen",
        "is_active",
        "date_joined",
        "node_page",
    ]
    list_filter = ["role", LivenessFilter, "is_active"]
    search_fields = ["email", "name"]
    ordering = ["name", "email"]
    readonly_fields = ["id", "date_joined", "last_login", "last_seen", "liveness"]
    fieldsets = [
        (None, {"fields": ["id", "email", "password"]}),
        ("Profile", {"fields": ["name", "role", "is_active"]}),
        ("Heartbeat", {"fields": ["last_seen", "liveness"]}),
        ("Dates", {"fields": ["date_joined", "last_login"]}),
    ]
    add_fieldsets = [
        (
            None,
            {
                "classes": ["wide"],
                "fields": ["email", "name", "role", "usable_password", "password1", "password2"],
            },
        )
    ]
    filter_horizontal = []

    def save_model(self, request, obj, form, change):
        """An edit writes the fields the form changed, nothing it merely read: a
        password set or a deactivation committed meanwhile stays."""
        if change:
            obj.save(update_fields=[name for name in form.changed_data if name != "password"])
        else:
            super().save_model(request, obj, form, change)

    def get_queryset(self, request):
        # One clock for the whole page, in SQL: the same rule as the API and the sweep.
        return super().get_queryset(request).with_liveness(timezone.now())

    # The pages that show liveness flush the pending beats first, before the change
    # page's transaction: inside it the flush's row locks would last until it commits.
    def changelist_view(self, request, extra_context=None):
        heartbeats.flush()
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        heartbeats.flush()
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="liveness", ordering="liveness")
    def liveness(self, user):
        """A node's liveness now; an admin does not beat, so has none."""
        if not user.is_node:
            return "—"
        return Liveness(user.liveness).label

    @admin.display(description="node page")
    def node_page(self, user):
        # The dashboard's page for a node (tasks.dashboard); admins have none.
        if not user.is_node:
            return ""
        return format_html(
            '<a href="{}">liveness and tasks</a>', reverse("admin:node", args=[user.pk])
        )


# Roles decide what a user may do (docs/design-decisions.md): groups have no use here.
# The token blacklist is kept by the API itself (refresh rotation, password change);
# deactivating a user is how an operator revokes a node.
admin.site.unregister([Group, OutstandingToken, BlacklistedToken])
