from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.utils import timezone

from accounts.models import Liveness, Role, User


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


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    list_display = ["email", "name", "role", "liveness", "last_seen", "is_active", "date_joined"]
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

    def get_queryset(self, request):
        # One clock for the whole page, in SQL: the same rule as the API and the sweep.
        return super().get_queryset(request).with_liveness(timezone.now())

    @admin.display(description="liveness", ordering="liveness")
    def liveness(self, user):
        """A node's liveness now; an admin does not beat, so has none."""
        if not user.is_node:
            return "—"
        return Liveness(user.liveness).label
