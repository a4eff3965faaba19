"""A node in the admin: the user admin with its liveness and heartbeat, and a link
to the node page (nodes.node_page)."""

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from accounts.admin import UserAdmin
from accounts.models import Role, User
from nodes import heartbeats
from nodes.forms import LabelsFormField
from nodes.models import Liveness, NodeLabels, liveness_case
from nodes.node_page import deactivated_work
from nodes.services import node_set_labels
from nodes.work import node_work
from taskmgmt.admin_selection import CheckedSelectionMixin


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


class NodeLabelsForm(forms.ModelForm):
    def _post_clean(self):
        # The box's heading names the row's labels: refused ones must not take their place
        # (they read as saved, and a lone surrogate in them could not be sent: a 500).
        saved = self.instance.labels
        super()._post_clean()
        if self.errors:
            self.instance.labels = saved


class NodeLabelsInline(admin.StackedInline):
    """A node's labels on its user page; saved through `node_set_labels`, as the API does."""

    model = NodeLabels
    form = NodeLabelsForm
    can_delete = False
    fields = ["labels"]
    formfield_overrides = {
        models.JSONField: {
            "form_class": LabelsFormField,
            "help_text": (
                'What the node is, for placement: a JSON object of strings, e.g. {"gpu": "true"}.'
            ),
        }
    }
    # One box: Django heads it with verbose_name (verbose_name_plural went unseen).
    verbose_name = "labels"


# Registered again over accounts' own: the same pages (admin/accounts/user/), with
# what a node's beats say added.
admin.site.unregister(User)


@admin.register(User)
class NodeUserAdmin(CheckedSelectionMixin, UserAdmin):
    list_display = [
        "email",
        "name_cell",
        "role",
        "liveness",
        "last_seen_at",
        "is_active",
        "joined",
        "node_page",
    ]
    list_filter = ["role", LivenessFilter, "is_active"]
    readonly_fields = ["id", "date_joined", "last_login", "last_seen", "liveness"]
    fieldsets = [
        (None, {"fields": ["id", "email", "password"]}),
        ("Profile", {"fields": ["name", "role", "is_active"]}),
        ("Heartbeat", {"fields": ["last_seen", "liveness"]}),
        ("Dates", {"fields": ["date_joined", "last_login"]}),
    ]

    inlines = [NodeLabelsInline]

    def get_inline_instances(self, request, obj=None):
        # Labels are a node's: an admin's page (or a new user's) has none.
        if obj is None or not obj.is_node:
            return []
        # A form posted without the labels box (an older page, a script) leaves them be.
        if request.method == "POST" and "node_labels-TOTAL_FORMS" not in request.POST:
            return []
        return super().get_inline_instances(request, obj)

    def save_formset(self, request, form, formset, change):
        if formset.model is not NodeLabels:
            return super().save_formset(request, form, formset, change)
        # What the change message reads; the row itself is the service's to write.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for labels_form in formset.forms:
            if labels_form.has_changed():
                labels = labels_form.cleaned_data.get("labels") or {}
                node_set_labels(node=form.instance, labels=labels, actor=request.user)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and obj.is_node and "is_active" in form.changed_data and not obj.is_active:
            # No confirmation here (the node page asks first): say what became of its work.
            open_tasks, in_progress = node_work().open_counts_by_node().get(obj.pk, (0, 0))
            messages.warning(
                request,
                format_html(
                    "{} can no longer log in, and every token it holds stops working. "
                    '{} (<a href="{}">its node page</a>)',
                    obj,
                    deactivated_work(open_tasks, in_progress),
                    reverse("admin:node", args=[obj.pk]),
                ),
            )

    class Media:
        css = {"all": ["tasks/admin.css"]}

    def get_queryset(self, request):
        # One clock for the whole page, in SQL: the same rule as the API and the sweep.
        return super().get_queryset(request).annotate(liveness=liveness_case(timezone.now()))

    # The pages that show liveness flush the pending beats first, before the change
    # page's transaction: inside it the flush's row locks would last until it commits.
    def changelist_view(self, request, extra_context=None):
        heartbeats.flush()
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        heartbeats.flush()
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="name", ordering="name")
    def name_cell(self, user):
        # One line (tasks/admin.css): a long node name ends in "…", whole on hover.
        return format_html('<span class="tm-node-name" title="{}">{}</span>', user.name, user.name)

    @admin.display(description="liveness", ordering="liveness")
    def liveness(self, user):
        """A node's liveness now; an admin does not beat, so has none."""
        if not user.is_node:
            return "—"
        # The dashboard's colours (tasks/admin.css): "down" reads red on every page.
        return format_html(
            '<span class="tm-liveness-{}">{}</span>', user.liveness, Liveness(user.liveness).label
        )

    @admin.display(description="last seen", ordering="last_seen")
    def last_seen_at(self, user):
        # To the minute, the zone named: the list must fit 1280 px (the page has seconds).
        if user.last_seen is None:
            return "never" if user.is_node else "—"
        return date_format(timezone.localtime(user.last_seen), "Y-m-d H:i T")

    @admin.display(description="joined", ordering="date_joined")
    def joined(self, user):
        # The day is what a list needs; the full moment is on the user's page.
        return date_format(timezone.localtime(user.date_joined), "Y-m-d")

    @admin.display(description="node page")
    def node_page(self, user):
        # The node's page (nodes.node_page); admins have none.
        if not user.is_node:
            return ""
        return format_html('<a href="{}">view</a>', reverse("admin:node", args=[user.pk]))
