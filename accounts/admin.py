from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.urls import reverse
from django.utils.html import format_html

from accounts.models import User


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ["email", "name", "role"]


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = ["email", "name", "role", "is_active"]


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    list_display = ["email", "name", "role", "is_active", "date_joined", "node_page"]
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
                "fields": ["email", "name", "role", "usable_password", "password1", "password2"],
            },
        )
    ]
    filter_horizontal = []

    @admin.display(description="node page")
    def node_page(self, user):
        # The dashboard's page for a node (tasks.dashboard); admins have none.
        if not user.is_node:
            return ""
        return format_html(
            '<a href="{}">liveness and tasks</a>', reverse("admin:node", args=[user.pk])
        )
