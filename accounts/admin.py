from django.contrib import admin
from django.contrib.admin import forms as admin_forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import (
    AdminPasswordChangeForm,
    UserChangeForm,
)
from django.contrib.auth.forms import UserCreationForm as DjangoUserCreationForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.urls import reverse_lazy
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.hashers import HashQueueFull
from accounts.models import User
from accounts.throttling import login_allowed
from taskmgmt.exceptions import CacheUnavailable
from taskmgmt.metrics import LOGIN_FAILURES


class AdminLoginForm(AdminAuthenticationForm):
    """The admin's login under the API login's limits: the same counts per IP and
    per account, so neither login is a way to guess around the other."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        # Django's asks for "a staff account" and says both fields may be case-sensitive.
        "invalid_login": (
            "Please enter the correct email and password for an admin account. "
            "The password is case-sensitive; the email is not."
        ),
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


class OwnPasswordChangeForm(admin_forms.AdminPasswordChangeForm):
    """The signed-in admin's own password change: its old password is a password check,
    so it spends the login budgets (the API's update-password's, per IP and per account)."""

    error_messages = {
        **admin_forms.AdminPasswordChangeForm.error_messages,
        "rate_limited": (
            "Too many password checks for this account or from this address. "
            "Wait a minute, then try again."
        ),
        "busy": AdminLoginForm.error_messages["busy"],
        "unavailable": (
            "Password changes are unavailable right now: the login limits cannot be counted. "
            "Try again in a few seconds."
        ),
    }

    def __init__(self, user, *args, request, **kwargs):
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self):
        try:
            allowed = login_allowed(self.request)
        except CacheUnavailable as error:
            raise ValidationError(self.error_messages["unavailable"], code="unavailable") from error
        if not allowed:
            raise ValidationError(self.error_messages["rate_limited"], code="rate_limited")
        try:
            return super().clean_old_password()
        except HashQueueFull as error:
            raise ValidationError(self.error_messages["busy"], code="busy") from error


class OwnPasswordChangeView(auth_views.PasswordChangeView):
    form_class = OwnPasswordChangeForm
    success_url = reverse_lazy("admin:password_change_done")

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}


def password_change(request, extra_context=None):
    """/admin/password_change/: the admin site's own view, which takes no form class and
    gives its form no request, made over with OwnPasswordChangeForm."""
    request.current_app = admin.site.name
    context = {**admin.site.each_context(request), **(extra_context or {})}
    return OwnPasswordChangeView.as_view(extra_context=context)(request)


admin.site.password_change = password_change


# Every account logs in with its password: there is no SSO or other backend here, so
# Django's "Password-based authentication: Disabled" (usable_password) only locked a
# user out of the API and the admin. Neither form offers it; a posted one is ignored.


class UserCreationForm(DjangoUserCreationForm):
    """Django's creation form without the admin's usable_password choice: both
    password boxes required and checked by the validators."""

    class Meta:
        model = User
        fields = ["email", "name", "role"]


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = ["email", "name", "role", "is_active"]


class PasswordChangeForm(AdminPasswordChangeForm):
    def __init__(self, user, *args, **kwargs):
        super().__init__(user, *args, **kwargs)
        # Without the choice the new password is the only outcome: both boxes required.
        self.fields.pop("usable_password", None)
        self.fields["password1"].required = self.fields["password2"].required = True

    def save(self, commit=True):
        # The password only: the rest of the row was read when the request began.
        user = super().save(commit=False)
        if commit:
            user.save(update_fields=["password"])
        return user


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Accounts: identity and password. nodes.admin registers this admin again with
    a node's liveness, heartbeat and page added (NodeUserAdmin)."""

    form = UserEditForm
    add_form = UserCreationForm
    change_password_form = PasswordChangeForm
    # Django's page has a "Disable password-based authentication" button: this one not.
    change_user_password_template = "admin/accounts/user/change_password.html"
    list_display = ["email", "name", "role", "is_active", "date_joined"]
    list_filter = ["role", "is_active"]
    search_fields = ["email", "name"]
    ordering = ["name", "email"]
    readonly_fields = ["id", "date_joined", "last_login"]
    fieldsets = [
        (None, {"fields": ["id", "email", "password"]}),
        ("Profile", {"fields": ["name", "role", "is_active"]}),
        ("Dates", {"fields": ["date_joined", "last_login"]}),
    ]
    add_fieldsets = [
        (
            None,
            {
                "classes": ["wide"],
                "fields": ["email", "name", "role", "password1", "password2"],
            },
        )
    ]
    filter_horizontal = []

    def get_readonly_fields(self, request, obj=None):
        # Unticking one's own "Is active", or making oneself a node, logged the admin out
        # for good (the last admin: everyone). Another admin may still do either.
        if obj is not None and obj.pk == request.user.pk:
            return [*self.readonly_fields, "role", "is_active"]
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        """An edit writes the fields the form changed, nothing it merely read: a
        password set or a deactivation committed meanwhile stays."""
        if change:
            obj.save(update_fields=[name for name in form.changed_data if name != "password"])
        else:
            super().save_model(request, obj, form, change)


# Roles decide what a user may do (docs/design-decisions.md): groups have no use here.
# The token blacklist is kept by the API itself (refresh rotation, password change);
# deactivating a user is how an operator revokes a node.
admin.site.unregister([Group, OutstandingToken, BlacklistedToken])
