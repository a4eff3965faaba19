from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, Q
from django.shortcuts import render
from django.utils import timezone

from accounts.models import Role, User
from tasks.models import (
    OPEN_STATUSES,
    HistoryAction,
    Task,
    TaskHistory,
    TaskStatus,
    validate_future,
)
from tasks.services import (
    task_create,
    task_update,
    tasks_fail,
    tasks_reassign,
    tasks_set_active,
)


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Overdue"), ("no", "Not overdue")]

    def queryset(self, request, queryset):
        overdue = Q(status__in=OPEN_STATUSES, locked_at__lt=timezone.now())
        if self.value() == "yes":
            return queryset.filter(overdue)
        if self.value() == "no":
            return queryset.exclude(overdue)
        return queryset


class NodeFilter(admin.RelatedFieldListFilter):
    """Only nodes can hold tasks, so only nodes are offered."""

    def field_choices(self, field, request, model_admin):
        return [
            (user.pk, str(user))
            for user in User.objects.filter(role=Role.NODE).only("id", "name", "email")
        ]


class TaskHistoryInline(admin.TabularInline):
    model = TaskHistory
    fields = ["created_at", "action", "from_label", "to_label", "performed_by", "cause"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("performed_by")

    @admin.display(description="from")
    def from_label(self, row):
        return self._label(row, row.from_value)

    @admin.display(description="to")
    def to_label(self, row):
        return self._label(row, row.to_value)

    def _label(self, row, value):
        """A node id reads as the node's name and email; a status as itself."""
        if value is None or row.action == HistoryAction.STATUS_CHANGE:
            return value or "—"
        if not hasattr(self, "_nodes"):  # one inline instance serves one page
            assignments = TaskHistory.objects.filter(task_id=row.task_id).exclude(
                action=HistoryAction.STATUS_CHANGE
            )
            ids = {v for pair in assignments.values_list("from_value", "to_value") for v in pair}
            nodes = User.objects.filter(pk__in=ids - {None}).only("id", "name", "email")
            self._nodes = {str(node.pk): str(node) for node in nodes}
        return self._nodes.get(value, value)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReassignForm(forms.Form):
    node = forms.ModelChoiceField(queryset=User.objects.filter(role=Role.NODE, is_active=True))
    locked_at = forms.DateTimeField(
        label="New deadline",
        help_text="A future date and time (UTC).",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def clean_locked_at(self):
        locked_at = self.cleaned_data["locked_at"]
        validate_future(locked_at)
        return locked_at


PENDING_ONLY = (
    "Only a pending task can be edited; this one is {status}. "
    "Use the reassign action to give it to a node with a new deadline."
)


class TaskAdminForm(forms.ModelForm):
    class Meta:
        model = Task
        fields = ["name", "details", "assigned_node", "locked_at"]

    def clean(self):
        cleaned = super().clean()
        if not self.instance._state.adding and self.instance.status != TaskStatus.PENDING:
            raise ValidationError(PENDING_ONLY.format(status=self.instance.status))
        return cleaned

    def clean_locked_at(self):
        # As in the API: every edit sets a future deadline, even one left unchanged.
        locked_at = self.cleaned_data["locked_at"]
        validate_future(locked_at)
        return locked_at


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    form = TaskAdminForm
    list_display = [
        "name",
        "assigned_node",
        "status",
        "locked_at",
        "overdue",
        "active",
        "created_at",
    ]
    list_filter = [
        "status",
        "failure_cause",
        ("assigned_node", NodeFilter),
        "active",
        OverdueFilter,
    ]
    # Also a node's email: see get_search_results.
    search_fields = ["name", "=id"]
    date_hierarchy = "created_at"
    # No JOIN: with one, MariaDB sorts the whole table for every page instead of
    # reading the (created_at, id) index; the page's nodes come in one more query.
    list_select_related = ()
    list_per_page = 50
    # The full count is a second COUNT(*) over the whole table on every page.
    show_full_result_count = False
    readonly_fields = [
        "id",
        "status",
        "attempts",
        "failure_cause",
        "failure_reason",
        "active",
        "created_at",
        "updated_at",
    ]
    fields = [
        "id",
        "name",
        "details",
        "assigned_node",
        "locked_at",
        "status",
        "attempts",
        "failure_cause",
        "failure_reason",
        "active",
    ]
    inlines = [TaskHistoryInline]
    actions = ["reassign", "mark_failed", "soft_delete", "restore"]

    @admin.display(boolean=True, description="overdue")
    def overdue(self, task):
        return task.is_overdue

    def get_queryset(self, request):
        nodes = User.objects.only("id", "name", "email")
        return super().get_queryset(request).prefetch_related(Prefetch("assigned_node", nodes))

    def get_search_results(self, request, queryset, search_term):
        """Name or id as Django searches them, or part of the assigned node's email.

        The nodes are matched in their own small table first: searching
        `assigned_node__email` would JOIN the users to every task and make
        MariaDB sort the whole table for the page (seconds at 100,000 tasks).
        """
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            nodes = User.objects.filter(email__icontains=term).values("pk")
            found |= queryset.filter(assigned_node__in=nodes)
        return found, may_have_duplicates

    def get_fields(self, request, obj=None):
        # A new task has no id, status or history yet: ask only for what the admin sets.
        return TaskAdminForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        # Once a node has started, only the reassign action may change the task.
        if obj is not None and obj.status != TaskStatus.PENDING:
            return self.fields
        return self.readonly_fields

    def get_inline_instances(self, request, obj=None):
        # The history exists once the task does.
        return super().get_inline_instances(request, obj) if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        # Tasks are soft-deleted (see the actions) so their history stays whole.
        return False

    def save_model(self, request, obj, form, change):
        """Save through the services, the one place the task rules live."""
        fields = {name: form.cleaned_data[name] for name in TaskAdminForm.Meta.fields}
        if change:
            task_update(task_id=obj.pk, **fields)
        else:
            obj.pk = task_create(**fields).pk
            obj._state.adding = False

    @admin.action(description="Reassign selected tasks to a node with a new deadline")
    def reassign(self, request, queryset):
        form = ReassignForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            try:
                count = tasks_reassign(
                    task_ids=queryset.values_list("pk", flat=True),
                    node=form.cleaned_data["node"],
                    locked_at=form.cleaned_data["locked_at"],
                )
            except ValidationError as error:
                self.message_user(request, "; ".join(error.messages), messages.ERROR)
                return None
            skipped = queryset.count() - count
            self.message_user(
                request, f"Reassigned {count} task(s); skipped {skipped} completed or soft-deleted."
            )
            return None
        return render(
            request,
            "admin/tasks/task/reassign.html",
            {
                **self.admin_site.each_context(request),
                "title": "Reassign tasks",
                "form": form,
                "tasks": queryset.select_related("assigned_node"),
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description="Mark selected open tasks as failed")
    def mark_failed(self, request, queryset):
        count = tasks_fail(task_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Marked {count} task(s) as failed.")

    @admin.action(description="Soft delete selected tasks (hide them everywhere)")
    def soft_delete(self, request, queryset):
        count = tasks_set_active(task_ids=queryset.values_list("pk", flat=True), active=False)
        self.message_user(request, f"Soft-deleted {count} task(s).")

    @admin.action(description="Restore selected soft-deleted tasks")
    def restore(self, request, queryset):
        count = tasks_set_active(task_ids=queryset.values_list("pk", flat=True), active=True)
        self.message_user(request, f"Restored {count} task(s).")


@admin.register(TaskHistory)
class TaskHistoryAdmin(admin.ModelAdmin):
    """Read-only: the audit trail cannot be edited or deleted here."""

    list_display = [
        "created_at",
        "task",
        "action",
        "from_value",
        "to_value",
        "performed_by",
        "cause",
    ]
    list_filter = ["action", "cause"]
    list_select_related = ["task", "performed_by"]
    # Ids grow with time in an append-only table, and the primary key needs no sort.
    ordering = ["-id"]
    search_fields = ["=task__id", "task__name"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
