import json
from urllib.parse import urlencode
from uuid import UUID

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Prefetch, Q
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from accounts.models import Role, User
from nodes import heartbeats
from nodes.models import (
    Node,
    NodeCordoned,
    NodeLabels,
    check_schedulable,
    liveness_case,
    liveness_cutoffs,
    node_state,
    validate_labels,
)
from taskmgmt.admin_selection import CheckedSelectionMixin
from taskmgmt.confirmation import confirmation_page
from taskmgmt.exceptions import DomainError
from taskmgmt.replica import ReplicaCountPaginator
from tasks.forms import (
    BroadcastForm,
    CancelForm,
    LabelReassignForm,
    OptionalJSONField,
    PayloadField,
    ReassignForm,
    deadline_outcome,
    deadline_plan,
    no_schedulable_node,
    node_label,
)
from tasks.models import (
    EDITED_FIELDS,
    OPEN_STATUSES,
    PRIORITY_DEFAULT,
    SWEEP_CAUSE_COUNTS,
    FailureCause,
    HistoryAction,
    SweepRun,
    Task,
    TaskHistory,
    TaskStatus,
    validate_future,
)
from tasks.placement import NoNodeMatches, broadcast_targets, check_node_matches, node_for
from tasks.selectors import reassign_preview
from tasks.services import (
    failover_held,
    task_assign,
    task_create,
    task_update,
    tasks_broadcast,
    tasks_cancel,
    tasks_fail,
    tasks_reassign,
    tasks_reassign_by_selector,
    tasks_set_active,
)
from tasks.templatetags.durations import duration, duration_ms
from tasks.templatetags.moments import moment

CHANGELIST = "admin:tasks_task_changelist"
# The field a task page's own Cancel button posts, so the answer comes back to the page.
FROM_TASK = "from_task_page"
SYSTEM = "system (sweep)"


def short_time(value, seconds=False) -> str:
    """A moment as a narrow column shows it, in the one format (tasks.templatetags.moments)."""
    return moment(value, "seconds" if seconds else "minutes")


def change_url(task) -> str:
    return reverse("admin:tasks_task_change", args=[task.pk])


def tasks_of_node_url(node_id) -> str:
    query = urlencode({"assigned_node__id__exact": node_id})
    return f"{reverse(CHANGELIST)}?{query}"


def node_link(node_id, name: str, email: str):
    """A node by name on one line (tm-node-name: a long one ends in "…"), linked to its
    tasks; its whole name and email show on hover."""
    return format_html(
        '<a class="tm-node-name" href="{}" title="{}">{}</a>',
        tasks_of_node_url(node_id),
        name if name == email else f"{name} <{email}>",
        name,
    )


def person(user) -> str:
    return SYSTEM if user is None else user.name or user.email


def person_cell(user):
    """`person` in a list's column: one line, the whole name and email on hover."""
    if user is None:
        return SYSTEM
    name = user.name or user.email
    title = name if name == user.email else f"{name} <{user.email}>"
    return format_html('<span class="tm-node-name" title="{}">{}</span>', title, name)


# A JSON value longer than this (characters pretty-printed) or lines starts collapsed.
JSON_OPEN_CHARACTERS, JSON_OPEN_LINES = 1_000, 20


def json_block(value):
    """A task's JSON value (payload, result, checkpoint), pretty-printed and escaped;
    collapsed behind its size when large, so the page stays readable."""
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, ensure_ascii=False)
    block = format_html('<pre class="task-json">{}</pre>', text)
    if len(text) <= JSON_OPEN_CHARACTERS and text.count("\n") < JSON_OPEN_LINES:
        return block
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    return format_html(
        "<details><summary>{} bytes, {} lines</summary>{}</details>",
        size,
        text.count("\n") + 1,
        block,
    )


def percent_text(percent: float) -> str:
    """A percent as the pages and docs write it: "42.5 %"."""
    return f"{percent:g} %"


def progress_bar(task, *, compact=False):
    """The latest progress report: a bar (indeterminate without a percent), its message
    and how long ago it came; "—" if none."""
    if task.progress_updated_at is None:
        return "—"
    percent = task.progress_percent
    bar = (
        format_html('<progress max="100" value="{}"></progress> {}', percent, percent_text(percent))
        if percent is not None
        else mark_safe("<progress></progress>")
    )
    age = f"{duration((timezone.now() - task.progress_updated_at).total_seconds())} ago"
    if compact:
        return format_html(
            '<span class="task-progress" title="{}, {}">{}</span>',
            task.progress_message or "",
            age,
            bar,
        )
    return format_html(
        '<div class="task-progress">{}<div>{}</div><div class="help">updated {}</div></div>',
        bar,
        task.progress_message or "",
        age,
    )


def progress_line(task) -> str | None:
    """The latest progress report in words, for a sentence: "59.2 %, frame 1,420 (2 s ago)"."""
    if task.progress_updated_at is None:
        return None
    percent = None if task.progress_percent is None else percent_text(task.progress_percent)
    age = duration((timezone.now() - task.progress_updated_at).total_seconds())
    said = ", ".join(part for part in (percent, task.progress_message) if part)
    return f"{said or 'a report'} ({age} ago)."


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


class DeletedFilter(admin.SimpleListFilter):
    """Soft-deleted tasks are hidden unless the operator asks for them."""

    title = "soft-deleted"
    parameter_name = "deleted"
    DEFAULT = "active"

    def lookups(self, request, model_admin):
        return [
            (self.DEFAULT, "Active only"),
            ("only", "Soft-deleted only"),
            ("all", "Active and soft-deleted"),
        ]

    def chosen(self) -> str:
        return self.value() if self.value() in ("only", "all") else self.DEFAULT

    def choices(self, changelist):
        # Django's choices start with "All" for no parameter; here no parameter is the default.
        counts = self.get_facet_queryset(changelist) if changelist.add_facets else None
        for index, (lookup, title) in enumerate(self.lookup_choices):
            yield {
                "selected": self.chosen() == lookup,
                "query_string": changelist.get_query_string(remove=[self.parameter_name])
                if lookup == self.DEFAULT
                else changelist.get_query_string({self.parameter_name: lookup}),
                "display": title if counts is None else f"{title} ({counts[f'{index}__c']})",
            }

    def queryset(self, request, queryset):
        chosen = self.chosen()
        if chosen == "only":
            return queryset.filter(active=False)
        return queryset if chosen == "all" else queryset.filter(active=True)


class NodeLabelFilter(admin.SimpleListFilter):
    """Tasks whose node has a label (`gpu=true`): offered from the labels nodes have now."""

    title = "node label"
    parameter_name = "node_label"

    def lookups(self, request, model_admin):
        pairs = {
            f"{key}={value}"
            for labels in NodeLabels.objects.values_list("labels", flat=True)
            for key, value in labels.items()
        }
        return [(pair, pair) for pair in sorted(pairs)]

    def queryset(self, request, queryset):
        if self.value() and self.value().startswith("!"):  # nodes without the key at all
            key = self.value()[1:]
            nodes = [
                node_id
                for node_id, labels in NodeLabels.objects.values_list("node_id", "labels")
                if key in labels
            ]
            return queryset.exclude(assigned_node_id__in=nodes)
        if not self.value() or "=" not in self.value():
            return queryset
        key, _, value = self.value().partition("=")
        nodes = [
            node_id
            for node_id, labels in NodeLabels.objects.values_list("node_id", "labels")
            if labels.get(key) == value
        ]
        return queryset.filter(assigned_node_id__in=nodes)


class PriorityFilter(admin.SimpleListFilter):
    title = "priority"
    parameter_name = "priority_band"
    BANDS = {
        "high": ("Above the default", Q(priority__gt=PRIORITY_DEFAULT)),
        "default": (f"The default ({PRIORITY_DEFAULT})", Q(priority=PRIORITY_DEFAULT)),
        "low": ("Below the default", Q(priority__lt=PRIORITY_DEFAULT)),
    }

    def lookups(self, request, model_admin):
        return [(band, label) for band, (label, _) in self.BANDS.items()]

    def queryset(self, request, queryset):
        band = self.BANDS.get(self.value())
        return queryset.filter(band[1]) if band else queryset


class NodeFilter(admin.RelatedFieldListFilter):
    """Only nodes can hold tasks, so only nodes are offered."""

    def field_choices(self, field, request, model_admin):
        return [
            (user.pk, str(user))
            for user in User.objects.filter(role=Role.NODE).only("id", "name", "email")
        ]


# --- History, as people read it -------------------------------------------------------------

NODE_VALUED = (HistoryAction.INITIAL_ASSIGN, HistoryAction.ASSIGNEE_CHANGE)
API_FIELD_LABELS = {api: field for field, api in EDITED_FIELDS.items()}


def history_nodes(rows) -> dict[str, User]:
    """The nodes that `rows` name in their values, by id text: one query for a page."""
    ids = {
        value
        for row in rows
        if row.action in NODE_VALUED
        for value in (row.from_value, row.to_value)
        if value
    }
    nodes = User.objects.filter(pk__in=ids).only("id", "name", "email") if ids else []
    return {str(node.pk): node for node in nodes}


# What a history table shows of a cancel reason (the rest on hover): a line, not a page.
SHOWN_REASON_LENGTH = 64


def value_label(row, value, nodes: dict[str, User], task=None):
    """A history value as it reads: a node by name, a status by label, a deadline as a moment.

    `task`: the row's task, its `cancel_reason` loaded, if the caller has it at no cost:
    a cancel request's reason that a row from before migration 0015 cut to 64 characters
    shows as cut. A longer reason shows its first 64, and the whole on hover."""
    if value is None:
        return "—"
    if row.action in NODE_VALUED:
        node = nodes.get(value)
        return value if node is None else node_link(node.pk, node.name or node.email, node.email)
    if row.action == HistoryAction.STATUS_CHANGE or (
        row.action == HistoryAction.CANCEL_REQUEST and value == row.from_value
    ):
        return TaskStatus(value).label if value in TaskStatus.values else value
    if row.action == HistoryAction.CANCEL_REQUEST:
        if len(value) > SHOWN_REASON_LENGTH:
            return format_html('<span title="{}">{}…</span>', value, value[:SHOWN_REASON_LENGTH])
        whole = getattr(task, "cancel_reason", None) or ""
        # Only the task's own reason proves a cut: a later request replaces it.
        if len(whole) > len(value) and whole.startswith(value):
            return format_html('<span title="{}">{}…</span>', whole, value)
    if row.action == HistoryAction.DEADLINE_CHANGE:
        parsed = parse_datetime(value)
        return value if parsed is None else moment(parsed, "minutes")
    if row.action == HistoryAction.EDIT:
        return ", ".join(API_FIELD_LABELS.get(name, name) for name in value.split(","))
    return value


class HistoryLabels:
    """The columns shared by the history inline and the history list.

    `labelled_nodes(row)` gives the nodes of the rows shown with `row`, fetched once.
    """

    @admin.display(description="when", ordering="created_at")
    def when(self, row):
        return short_time(row.created_at, seconds=True)

    @admin.display(description="from")
    def from_label(self, row):
        return value_label(row, row.from_value, self.labelled_nodes(row))

    @admin.display(description="to")
    def to_label(self, row):
        return value_label(row, row.to_value, self.labelled_nodes(row), self.labelled_task(row))

    @admin.display(description="by", ordering="performed_by__name")
    def performed_by_label(self, row):
        return person_cell(row.performed_by)


class TaskHistoryInline(HistoryLabels, admin.TabularInline):
    model = TaskHistory
    fields = ["when", "action", "from_label", "to_label", "performed_by_label", "cause"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("performed_by")

    def labelled_nodes(self, row):
        # One inline instance serves one page, which shows one task's history.
        if not hasattr(self, "_nodes"):
            self._nodes = history_nodes(TaskHistory.objects.filter(task_id=row.task_id))
        return self._nodes

    def get_formset(self, request, obj=None, **kwargs):
        self._task = obj  # the page's task, already read: its rows' task
        return super().get_formset(request, obj, **kwargs)

    def labelled_task(self, row):
        return getattr(self, "_task", None)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


PENDING_ONLY = (
    "Only a pending task can be edited; this one is {status}. "
    "Use the reassign action to give it to a node with a new deadline."
)
DELETED_READ_ONLY = "A soft-deleted task cannot be edited; restore it first (an action)."


def down_among(nodes: list, now) -> dict:
    """{node: when last seen} of those of `nodes` that are down now: a beat waiting in
    Redis for its flush counts. One read of Redis and of the liveness cutoffs for all."""
    beats = heartbeats.pending([node.pk for node in nodes])
    _, down_before = liveness_cutoffs(now)
    down = {}
    for node in nodes:
        seen = max(filter(None, [node.last_seen, beats.get(node.pk)]), default=None)
        if seen is not None and seen < down_before:
            down[node] = seen
    return down


def failover_outlook(now) -> str:
    """What the sweep does now with a down node's tasks: "off" (FAILOVER is off), "held"
    (too many nodes down at once: FAILOVER_MAX_DOWN_SHARE), or "on"."""
    if settings.FAILOVER != "reassign":
        return "off"
    down = list(Node.objects.down(now).values_list("pk", flat=True))
    return "held" if failover_held(down, now=now)[0] else "on"


HELD_BACK = (
    "too many nodes are down at once for the sweep's failover (FAILOVER_MAX_DOWN_SHARE), "
    "which holds back until fewer are"
)


def down_node_warning(node, *, pinned: int = 0, given: int = 1) -> str | None:
    """What an admin should hear on giving `given` pending tasks to a node that is down:
    nothing will start them there. `pinned` of them are a broadcast's, which failover
    fails, not moves."""
    now = timezone.now()
    seen = down_among([node], now).get(node)
    if seen is None:
        return None
    then = {
        "off": "its pending tasks wait until it beats again (FAILOVER is off)",
        "held": f"its pending tasks wait: {HELD_BACK}",
        "on": failover_of_pinned(pinned, given),
    }[failover_outlook(now)]
    ago = duration((now - seen).total_seconds())
    return f"{node} is down (last seen {ago} ago): {then}."


def failover_of_pinned(pinned: int, given: int) -> str:
    """What the sweep's failover does with `given` tasks on a down node, `pinned` of them
    a broadcast's (failed for a human, never moved)."""
    moves = "the sweep's failover moves its pending tasks to a live node"
    if not pinned:
        return moves
    if given == 1:
        return "the sweep's failover fails this task for a human (a broadcast's, pinned to it)"
    if pinned == given:
        return "the sweep's failover fails these tasks for a human (a broadcast's, pinned to it)"
    return f"{moves}, but fails {pinned} of these for a human (a broadcast's, pinned to it)"


def broadcast_down_warning(node_ids: list) -> str | None:
    """What an admin should hear when a broadcast gave tasks to nodes that are down: a
    broadcast's task is pinned, so failover never moves it, as it would a task of one node."""
    now = timezone.now()
    nodes = list(Node.objects.filter(pk__in=node_ids, last_seen__isnull=False).only("last_seen"))
    down = [node.pk for node in down_among(nodes, now)]
    if not down:
        return None
    then = {
        "off": "their tasks wait until they beat again (FAILOVER is off)",
        "held": f"their tasks wait: {HELD_BACK}",
        "on": "the sweep's failover fails their tasks for a human (a broadcast's task is"
        " pinned to its node, never moved)",
    }[failover_outlook(now)]
    return f"{len(down)} of these node(s) are down: {named_nodes(down)}; {then}."


def refusal(error: Exception) -> str:
    """What a service's refusal says, in a message: a rule broken between the page's
    checks and the save (a node started the task, a node was cordoned meanwhile)."""
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    return error.message if isinstance(error, DomainError) else str(error)


# What the services refuse with: each is a message on the page, never a 500.
REFUSALS = (ValidationError, DomainError, Task.DoesNotExist)


def broadcast_no_match(form) -> str:
    """The broadcast form's "no node matches", naming its labels field as the form does."""
    if not form.cleaned_data["labels"]:
        return "Nothing was broadcast: no node matches (none is active and schedulable)."
    labels = form.fields["labels"].label.lower()
    return (
        f"Nothing was broadcast: no node matches these {labels} (no active, schedulable "
        "node has all of them)."
    )


BROADCAST_TITLE = "Broadcast a task to every node with labels"
BROADCAST_INTRO = (
    "One task for every active, schedulable node with these labels, whatever its liveness, "
    "in one transaction. Each is pinned to its node: failover fails it for a human rather "
    "than move it."
)


# How many nodes a message names before it says "and N more".
NODES_NAMED = 5


def named_nodes(node_ids: list) -> str:
    """The first few of these nodes' emails, alphabetically, then how many more: a
    message says where tasks went without growing with the fleet."""
    emails = User.objects.filter(pk__in=node_ids).order_by("email").values_list("email", flat=True)
    shown = list(emails[:NODES_NAMED])
    more = len(node_ids) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def is_editable(task) -> bool:
    return task.active and task.status == TaskStatus.PENDING


# What an admin edits on a task's page, in the page's order (TaskAdmin.fields); and the
# payload, which the page lists as `payload_json` (shown read-only unless it may be edited).
EDITABLE_FIELDS = ["name", "details", "assigned_node", "locked_at", "priority", "node_selector"]


class TaskAdminForm(forms.ModelForm):
    class Meta:
        model = Task
        fields = [*EDITABLE_FIELDS, "payload"]
        field_classes = {"node_selector": OptionalJSONField, "payload": PayloadField}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "locked_at" in self.fields:
            # Django's date and time boxes name no zone: the label does (the one format).
            zone = timezone.localtime().tzname()
            self.fields["locked_at"].label = f"Deadline ({zone})"
            # The label names no box (Django's split widget has two, with "Date:" and
            # "Time:" as bare text): each box gets a name a screen reader can say.
            boxes = getattr(self.fields["locked_at"].widget, "widgets", ())
            for box, part in zip(boxes, ("date", "time"), strict=False):
                box.attrs["aria-label"] = f"Deadline {part} ({zone})"
        # Left empty (or out, by an older form): the default, as in the API.
        if "priority" in self.fields:  # not when the task is read-only
            self.fields["priority"].required = False
        if "assigned_node" in self.fields:
            # Its liveness named unless alive, as the reassign lists name it: a down node
            # is offered (schedulable is about cordons) and must not look like the rest.
            field = self.fields["assigned_node"]
            field.queryset = field.queryset.annotate(liveness=liveness_case(timezone.now()))
            field.label_from_instance = node_label
        if self.instance._state.adding and "assigned_node" in self.fields:
            # As the API's create: with a node selector, placement may pick the node.
            self.fields["assigned_node"].required = False
            self.fields["assigned_node"].help_text = (
                "Leave empty with a node selector: the least-loaded alive, schedulable"
                " node that matches it is picked."
            )

    def clean_priority(self):
        priority = self.cleaned_data["priority"]
        return PRIORITY_DEFAULT if priority is None else priority

    def clean_node_selector(self):
        # The model's validator runs only after clean(), whose placement checks need a
        # selector of the right shape: a list or a string there was a 500.
        selector = self.cleaned_data["node_selector"]
        if selector:
            validate_labels(selector)
        return selector

    def clean(self):
        cleaned = super().clean()
        task = self.instance
        if not task._state.adding and not is_editable(task):
            raise ValidationError(
                DELETED_READ_ONLY
                if not task.active
                else PENDING_ONLY.format(status=task.get_status_display().lower())
            )
        node = cleaned.get("assigned_node")
        if node is None and task._state.adding and "assigned_node" not in self.errors:
            self.placement_check(cleaned.get("node_selector") or None, cleaned.get("locked_at"))
        selector = cleaned.get("node_selector") or None
        # As task_update: only a node or selector the form changes must match.
        moved = node is not None and node.pk != task.assigned_node_id
        changes = task._state.adding or moved or selector != task.node_selector
        if node is not None and "node_selector" not in self.errors and changes:
            # The services' own rules, asked before the save so a refusal is a form error.
            try:
                check_node_matches(node, selector)
            except ValidationError as error:
                self.add_error(None, error)
        if node is not None and node.pk != task.assigned_node_id:
            try:
                check_schedulable(node.pk)
            except NodeCordoned as error:
                self.add_error("assigned_node", error.message)
        return cleaned

    def placement_check(self, selector, deadline) -> None:
        """A new task without a node: placement must have one for its selector (the
        save picks again, so a node gone meanwhile is the save's refusal, not a 500)."""
        if "node_selector" in self.errors:
            return
        if not selector:
            self.add_error(
                "assigned_node", "Pick a node, or give a node selector for placement to pick one."
            )
            return
        try:
            node_for(selector, now=timezone.now(), deadline=deadline)
        except NoNodeMatches as error:
            self.add_error("node_selector", error.message)

    def clean_locked_at(self):
        # As in the API: every edit sets a future deadline, even one left unchanged.
        locked_at = self.cleaned_data["locked_at"]
        validate_future(locked_at)
        # The time widget shows whole seconds: a deadline left as shown is unchanged,
        # not moved by its microseconds (which would write a deadline_change row).
        current = self.instance.locked_at
        if current is not None and locked_at == current.replace(microsecond=0):
            return current
        return locked_at


# --- Actions: what they skip, and why ----------------------------------------------------------

# For each action, why a task in a state (active, status) is left alone; None: it acts on it.
SKIP_REASONS = {
    "mark_failed": lambda active, status: (
        "soft-deleted" if not active else None if status in OPEN_STATUSES else f"already {status}"
    ),
    "soft_delete": lambda active, status: None if active else "already soft-deleted",
    "cancel_tasks": lambda active, status: (
        "soft-deleted" if not active else None if status in OPEN_STATUSES else f"already {status}"
    ),
    "restore": lambda active, status: "not soft-deleted" if active else None,
    "reassign": lambda active, status: (
        "soft-deleted" if not active else "completed" if status == TaskStatus.COMPLETED else None
    ),
}


# The actions that skip as another does.
SKIP_ACTION = {"reassign_by_label": "reassign"}


def skipped_by_reason(queryset, action: str) -> tuple[int, dict[str, int]]:
    """How many selected tasks `action` will act on, and how many it skips for each reason."""
    reason_of = SKIP_REASONS[action]
    eligible, skipped = 0, {}
    for state in queryset.order_by().values("active", "status").annotate(count=Count("pk")):
        reason = reason_of(state["active"], state["status"])
        if reason is None:
            eligible += state["count"]
        else:
            skipped[reason] = skipped.get(reason, 0) + state["count"]
    return eligible, skipped


def outcome(
    done_text: str, done: int, eligible: int, skipped: dict[str, int], where: str = ""
) -> str:
    return f"{done_text} {done} task(s){where}." + skipped_outcome(done, eligible, skipped)


def skipped_outcome(done: int, eligible: int, skipped: dict[str, int]) -> str:
    """What an action left alone, and why, after what it did (" Skipped 1: …"), or ""."""
    parts = []
    if skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        parts.append(f"Skipped {sum(skipped.values())}: {reasons}.")
    if eligible > done:
        parts.append(f"Skipped {eligible - done} changed by someone else meanwhile.")
    return "".join(f" {part}" for part in parts)


def cancel_grace() -> str:
    """How long a node has to acknowledge a cancel request, as an operator reads it."""
    return f"{settings.CANCEL_GRACE_SECONDS} s"


def cancel_outcome(done) -> str:
    """What a cancel did (`done`: tasks.services.Cancels): a running task is only asked."""
    parts = []
    if done.cancelled or not done.asked:
        parts.append(f"Cancelled {done.cancelled} pending task(s).")
    if done.asked:
        parts.append(
            f"Asked the nodes of {done.asked} running task(s) to stop: each is cancelled when "
            "its node acknowledges, or by the sweep if its node has not answered within "
            f"{cancel_grace()}."
        )
    return " ".join(parts)


def cancel_outcome_of_one(done, skipped: dict[str, int]) -> str:
    """`cancel_outcome` for the one task of the page its Cancel button is on."""
    if done.cancelled:
        return "Cancelled: the task was still pending."
    if done.asked:
        return (
            "Cancel requested: its node is asked to stop, and the task is cancelled when the "
            f"node acknowledges, or by the sweep if it has not answered within {cancel_grace()}."
        )
    why = next(iter(skipped), "changed by someone else meanwhile")
    return f"Nothing was done: the task is {why}."


def deadline_change(before, after) -> str:
    if before == after:
        return f"Deadline kept: {moment(after)}."
    return f"New deadline: {moment(after)} (was {moment(before)})."


# What "retry" takes back to pending: a task that ended without completing (SPEC: a
# cancelled task is reassigned like a failed one).
RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED)


def retry_refusal(node) -> str | None:
    """Why `node` would refuse a retry of its task (it takes no new work: deactivated,
    cordoned, draining or in a maintenance window, as `check_schedulable` says), or None."""
    if not node.is_active:
        return "deactivated"
    state = node_state(node.pk)
    return None if state["schedulable"] else state["state"]


def task_actions(request, task) -> dict:
    """What its page offers to do to `task`: the buttons that apply to its state, the
    reassign form, and how long it has been running."""
    live = task.active
    form = ReassignForm()
    form.fields["node"].label = "To"
    form.fields["locked_at"].label = "New deadline (optional)"
    minutes = settings.REASSIGN_DEADLINE_MINUTES
    form.fields["locked_at"].help_text = (
        f"Left empty, it keeps its deadline unless that has passed or is less than {minutes} "
        f"min away, then now + {minutes} min. A date and time (YYYY-MM-DD HH:MM, "
        f"{timezone.localtime().tzname()}) replaces it."
    )
    # An in-progress task's updated_at is its start: nothing else writes it until it
    # finishes or is taken back (the dashboard's "oldest in progress" reads it so too).
    started = task.updated_at if live and task.status == TaskStatus.IN_PROGRESS else None
    retryable = live and task.status in RETRYABLE
    # Retry gives the task back to its own node: one that takes no new work would refuse
    # it, so the page says why instead of offering a button that can only fail.
    retry_refused = retryable and retry_refusal(task.assigned_node)
    return {
        "act_url": reverse("admin:tasks_task_act", args=[task.pk]),
        "can_reassign": live and task.status != TaskStatus.COMPLETED,
        "can_retry": retryable and not retry_refused,
        "retry_refused": retry_refused,
        "node_page_url": reverse("admin:node", args=[task.assigned_node_id]),
        "can_fail": live and task.status in OPEN_STATUSES,
        "can_cancel": live and task.status in OPEN_STATUSES,
        "from_task": FROM_TASK,
        "cancel_grace": cancel_grace(),
        "reassign_form": form,
        "started_at": started,
        "progress": progress_line(task) if started else None,
        "elapsed": (timezone.now() - started).total_seconds() if started else None,
    }


# A failure's reason is shown to this many characters in the failed list.
REASON_SHOWN = 60


def is_failed_view(request) -> bool:
    return request.GET.get("status__exact") == TaskStatus.FAILED


def is_cancelled_view(request) -> bool:
    return request.GET.get("status__exact") == TaskStatus.CANCELLED


def shortened(text: str | None):
    """A reason in a list's column: its first REASON_SHOWN characters, the whole on hover."""
    if not text:
        return "—"
    short = text if len(text) <= REASON_SHOWN else text[: REASON_SHOWN - 1] + "…"
    return format_html('<span title="{}">{}</span>', text, short)


def is_overdue_view(request) -> bool:
    """The overdue filter, or the dashboard's overdue links (open, deadline before a moment)."""
    query = request.GET
    return query.get("overdue") == "yes" or (
        "locked_at__lt" in query and query.get("status__in") == ",".join(OPEN_STATUSES)
    )


# A confirmation page lists this many of the selected tasks, then says how many more.
CONFIRM_LIST_LIMIT = 100


class TaskChangeList(ChangeList):
    """The task list: its header marks the order the rows are in, also where
    TaskAdmin.get_ordering chooses one (the overdue list's, by deadline: Django's marks
    only `ordering`'s), and a drill-down date too large is a bad filter, not a 500."""

    def __init__(self, request, *args, **kwargs):
        self.request = request
        super().__init__(request, *args, **kwargs)

    def _get_default_ordering(self):
        return self.model_admin.get_ordering(self.request) or super()._get_default_ordering()

    def get_filters(self, request):
        # The date drill-down turns a bad year into "?e=1", but a year too large for
        # Python's datetime (created_at__year=99999999999999999999) was a 500.
        try:
            return super().get_filters(request)
        except OverflowError as error:
            raise IncorrectLookupParameters(error) from error


@admin.register(Task)
class TaskAdmin(CheckedSelectionMixin, admin.ModelAdmin):
    form = TaskAdminForm
    list_display = [
        "task_name",
        "node",
        "status_badge",
        "deadline",
        "overdue",
        "active",
        "created",
    ]
    list_filter = [
        DeletedFilter,
        "status",
        "failure_cause",
        ("assigned_node", NodeFilter),
        NodeLabelFilter,
        PriorityFilter,
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
    # The page's count, a scan of the filtered table, from the replica if there is one.
    paginator = ReplicaCountPaginator
    readonly_fields = [
        "id",
        "pinned",
        "status",
        "attempts",
        "failure_cause",
        "failure_reason",
        "cancel_requested_at",
        "cancel_reason",
        "payload_json",
        "progress_report",
        "checkpoint_json",
        "result_json",
        "active",
        "created_at",
        "updated_at",
    ]
    fields = [
        "id",
        *EDITABLE_FIELDS,
        "pinned",
        "status",
        "attempts",
        "failure_cause",
        "failure_reason",
        "cancel_requested_at",
        "cancel_reason",
        "payload_json",
        "progress_report",
        "checkpoint_json",
        "result_json",
        "active",
    ]
    inlines = [TaskHistoryInline]
    actions = [
        "reassign",
        "reassign_by_label",
        "cancel_tasks",
        "mark_failed",
        "soft_delete",
        "restore",
    ]
    # The task page's Cancel button posts the list's cancel action for this one task.
    change_form_template = "admin/tasks/task/change_form.html"

    class Media:
        css = {"all": ["tasks/admin.css"]}

    @admin.display(description="name", ordering="name")
    def task_name(self, task):
        # Two lines at most (tasks/admin.css); the whole name on hover.
        return format_html('<span title="{}">{}</span>', task.name, task.name)

    @admin.display(description="node", ordering="assigned_node")
    def node(self, task):
        node = task.assigned_node
        return node_link(node.pk, node.name or node.email, node.email)

    @admin.display(description="status", ordering="status")
    def status_badge(self, task):
        badge = format_html(
            '<span class="task-status task-status-{}">{}</span>',
            task.status,
            task.get_status_display(),
        )
        # Progress under the badge of a task in progress, not a column: the list must
        # fit 1366 px. A finished task's last report is on its page.
        if task.status == TaskStatus.IN_PROGRESS and task.cancel_requested_at is not None:
            # Still running, but asked to stop: the list says so before the node answers.
            badge = format_html(
                '{} <span class="task-cancel-requested" title="{}">cancel requested</span>',
                badge,
                f"Cancel requested {moment(task.cancel_requested_at)}"
                + (f": {task.cancel_reason}" if task.cancel_reason else ""),
            )
        if task.status == TaskStatus.IN_PROGRESS and task.progress_updated_at is not None:
            return format_html("{}<br>{}", badge, progress_bar(task, compact=True))
        return badge

    @admin.display(description="deadline", ordering="locked_at")
    def deadline(self, task):
        # Day over time: the list fits 1366 px with both sidebars open.
        local = timezone.localtime(task.locked_at)
        return format_html("{}<br>{}", f"{local:%Y-%m-%d}", f"{local:%H:%M} {local.tzname()}")

    @admin.display(description="overdue")
    def overdue(self, task):
        # The alarm, in red; nothing when all is well (a green tick read as "good").
        if not task.is_overdue:
            return ""
        return mark_safe('<span class="task-overdue">overdue</span>')

    @admin.display(description="payload")
    def payload_json(self, task):
        return json_block(task.payload)

    @admin.display(description="progress")
    def progress_report(self, task):
        return progress_bar(task)

    @admin.display(description="checkpoint")
    def checkpoint_json(self, task):
        return json_block(task.checkpoint)

    @admin.display(description="result")
    def result_json(self, task):
        return json_block(task.result)

    @admin.display(description="created", ordering="created_at")
    def created(self, task):
        # The day is what a list needs (the date drill-down above works in days too).
        local = timezone.localtime(task.created_at)
        return format_html('<span title="{}">{}</span>', short_time(local), f"{local:%Y-%m-%d}")

    def get_list_display(self, request):
        """Filtered to failed tasks, the list says why and when each failed; filtered to
        overdue ones, how late each is."""
        if is_failed_view(request):
            # No "created": at 1440 px, beside the app list, a long node name and the
            # reason need its room (the task's page has it).
            return ["task_name", "node", "cause", "reason", "failed_at", "attempts"]
        if is_cancelled_view(request):
            return [
                "task_name",
                "node",
                "cancel_reason_short",
                "cancel_requested",
                "cancel_cause",
                "cancelled_at",
            ]
        if is_overdue_view(request):
            return ["task_name", "node", "status_badge", "deadline", "late_by", "created"]
        return self.list_display

    def get_changelist(self, request, **kwargs):
        return TaskChangeList

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "assigned_node" and formfield is not None:
            # Django's red cross beside the node list opened "Delete user" from a task.
            formfield.widget.can_delete_related = False
        return formfield

    def get_ordering(self, request):
        # The latest first is no answer to "which are late": the longest overdue first.
        if is_overdue_view(request):
            return ["locked_at", "id"]
        return super().get_ordering(request)

    @admin.display(description="cause", ordering="failure_cause")
    def cause(self, task):
        return task.get_failure_cause_display() or "unknown"

    @admin.display(description="reason")
    def reason(self, task):
        # Shortened so the row stays one line or two; the whole of it on hover.
        return shortened(task.failure_reason)

    @admin.display(description="cancel reason")
    def cancel_reason_short(self, task):
        return shortened(task.cancel_reason)

    @admin.display(description="requested at", ordering="cancel_requested_at")
    def cancel_requested(self, task):
        return moment(task.cancel_requested_at, "minutes") if task.cancel_requested_at else "—"

    @admin.display(description="cause", ordering="failure_cause")
    def cancel_cause(self, task):
        # Only the sweep records a cause (the node never answered); otherwise the node
        # acknowledged, or the task was cancelled while still pending.
        if task.failure_cause:
            return task.get_failure_cause_display()
        return "Acknowledged or pending"

    @admin.display(description="cancelled at", ordering="updated_at")
    def cancelled_at(self, task):
        return moment(task.updated_at, "minutes")

    @admin.display(description="failed at", ordering="updated_at")
    def failed_at(self, task):
        return moment(task.updated_at, "minutes")

    @admin.display(description="late by", ordering="locked_at")
    def late_by(self, task):
        late = (timezone.now() - task.locked_at).total_seconds()
        return (
            format_html('<span class="task-overdue">{}</span>', duration(late)) if late > 0 else "—"
        )

    def get_queryset(self, request):
        nodes = User.objects.only("id", "name", "email")
        tasks = super().get_queryset(request).prefetch_related(Prefetch("assigned_node", nodes))
        if getattr(request.resolver_match, "url_name", None) == "tasks_task_changelist":
            # The list shows none of them: a page of 4 KiB payloads is 200 KiB to read.
            tasks = tasks.defer("payload", "result", "checkpoint")
        return tasks

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
        if obj is None:
            return TaskAdminForm.Meta.fields
        if is_editable(obj):  # its payload in a box to edit, not shown read-only
            return [("payload" if name == "payload_json" else name) for name in self.fields]
        return self.fields

    def get_readonly_fields(self, request, obj=None):
        # Once a node has started (or the task is deleted), only the actions may change it.
        if obj is not None and not is_editable(obj):
            return self.fields
        return self.readonly_fields

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A task nobody may edit shows no Save buttons: there is nothing to save.
        Every task shows what can be done to it (task_actions)."""
        task = self.get_object(request, object_id)
        if task is not None:
            extra_context = {**(extra_context or {}), **task_actions(request, task)}
        if task is not None and not is_editable(task):
            state = "soft-deleted" if not task.active else task.get_status_display().lower()
            extra_context = {
                **extra_context,
                "title": f"View task ({state})",
                "show_save": False,
                "show_save_and_continue": False,
                "show_save_and_add_another": False,
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """A save the services refuse after the form's checks passed (the task was
        started, or its node cordoned, meanwhile) is rolled back and said beside the
        form, never a 500."""
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except REFUSALS as error:
            if request.method != "POST":
                raise
            self.message_user(request, f"Nothing was saved: {refusal(error)}", messages.ERROR)
            return redirect(request.get_full_path())

    def history_view(self, request, object_id, extra_context=None):
        """The HISTORY button leads to the task's audit trail (TaskHistory), which every
        path writes; Django's own change log knows only the admin's saves."""
        task = self.get_object(request, object_id)
        if task is None:
            raise Http404("No task has this id.")
        if not self.has_view_or_change_permission(request, task):
            raise PermissionDenied
        return redirect(history_url(task__id__exact=task.pk))

    def act_view(self, request, object_id):
        """One task's own actions (its page's buttons): reassign, retry, mark failed.
        Each goes through tasks.services, as the API's and the list's do."""
        task = self.get_object(request, object_id)
        if task is None:
            raise Http404("No task has this id.")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request, task):
            raise PermissionDenied
        back = redirect("admin:tasks_task_change", task.pk)
        action = request.POST.get("action")
        try:
            if action == "reassign":
                form = ReassignForm(request.POST)
                if not form.is_valid():
                    for errors in form.errors.values():
                        self.message_user(request, " ".join(errors), messages.ERROR)
                    return back
                locked_at = form.cleaned_data["locked_at"]
                moved = task_assign(
                    task_id=task.pk, node=form.cleaned_data["node"], locked_at=locked_at
                )
                text = f"Reassigned to {moved.assigned_node}, back to pending."
            elif action == "retry" and task.status in RETRYABLE:
                moved = task_assign(task_id=task.pk, node=task.assigned_node)
                text = f"Back to pending on {moved.assigned_node}, for another attempt."
            elif action == "fail" and task.status in OPEN_STATUSES:
                tasks_fail(task_ids=[task.pk])
                self.message_user(request, "Marked failed (cause: admin).", messages.SUCCESS)
                return back
            else:
                self.message_user(
                    request,
                    f"This task is {task.get_status_display().lower()}: nothing was done.",
                    messages.WARNING,
                )
                return back
        except REFUSALS as error:
            self.message_user(request, f"Nothing was done: {refusal(error)}", messages.ERROR)
            return back
        self.message_user(request, f"{text} {deadline_change(task.locked_at, moved.locked_at)}")
        self.warn_if_down(request, moved.assigned_node, pinned=moved.pinned)
        return back

    def get_inline_instances(self, request, obj=None):
        # The history exists once the task does.
        return super().get_inline_instances(request, obj) if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        # Tasks are soft-deleted (see the actions) so their history stays whole.
        return False

    def get_urls(self):
        act = path(
            "<path:object_id>/act/",
            self.admin_site.admin_view(self.act_view),
            name="tasks_task_act",
        )
        broadcast = path(
            "broadcast/",
            self.admin_site.admin_view(self.broadcast_view),
            name="tasks_task_broadcast",
        )
        return [broadcast, act, *super().get_urls()]

    def broadcast_view(self, request):
        """One task for every schedulable node with the labels given (tasks_broadcast),
        after a confirmation page that names the nodes."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BroadcastForm(request.POST or None)
        # The confirmation's "No, take me back" posts the form again: it comes back filled in.
        if request.method == "POST" and "back" not in request.POST and form.is_valid():
            answer = self.broadcast(request, form)
            if answer is not None:
                return answer
        return render(
            request,
            "admin/tasks/task/broadcast.html",
            {
                **self.admin_site.each_context(request),
                "title": BROADCAST_TITLE,
                "intro": BROADCAST_INTRO,
                "form": form,
                "opts": self.model._meta,
            },
        )

    def broadcast(self, request, form):
        """The confirmation page first, then the broadcast and the list; None when
        nothing can be broadcast, with the form's error saying why."""
        data = form.cleaned_data
        if request.POST.get("confirm") != "yes":
            targets = broadcast_targets(data["labels"] or None, now=timezone.now())
            if targets:
                return self.broadcast_confirmation(request, form, [node.id for node in targets])
            form.add_error("labels" if data["labels"] else None, broadcast_no_match(form))
            return None
        try:
            tasks = tasks_broadcast(
                name=data["name"],
                details=data["details"],
                locked_at=data["locked_at"],
                priority=data["priority"],
                node_selector=data["labels"],
                payload=data["payload"],
            )
        except NoNodeMatches:
            # The service words it for the API (nodeSelector); the form says it in
            # its own field's name.
            form.add_error("labels" if data["labels"] else None, broadcast_no_match(form))
            return None
        except REFUSALS as error:
            # A rule broken between the form's checks and the save (the deadline
            # passed meanwhile): said above the form, never a 500.
            form.add_error(None, f"Nothing was broadcast: {refusal(error)}")
            return None
        nodes = named_nodes([task.assigned_node_id for task in tasks])
        self.message_user(request, f"Broadcast {len(tasks)} task(s), one per node: {nodes}.")
        down = broadcast_down_warning([task.assigned_node_id for task in tasks])
        if down:
            self.message_user(request, down, messages.WARNING)
        return redirect(CHANGELIST)

    def broadcast_confirmation(self, request, form, node_ids: list):
        """What the broadcast will make, and for which nodes, as they are now."""
        data = form.cleaned_data
        labels = ", ".join(f"{key}={value}" for key, value in data["labels"].items())
        each = [
            f"“{data['name']}”, due {moment(data['locked_at'], 'minutes')}",
            f"priority {data['priority']}",
            f"node labels {labels}" if labels else "no node labels",
            "the payload given" if data["payload"] is not None else "no payload",
        ]
        changes = [
            f"{len(node_ids)} task(s) are created now, one per node: {named_nodes(node_ids)}.",
            "Each: " + ", ".join(each) + ".",
            "Nodes that are cordoned, draining, in a maintenance window or deactivated get none.",
        ]
        down = broadcast_down_warning(node_ids)
        if down:
            changes.append(down)
        return confirmation_page(
            self.admin_site,
            request,
            title=f"Broadcast to {len(node_ids)} node(s)?",
            crumbs=[
                (reverse(CHANGELIST), self.opts.verbose_name_plural.capitalize()),
                (reverse("admin:tasks_task_broadcast"), BROADCAST_TITLE),
            ],
            intro=BROADCAST_INTRO,
            changes=changes,
            hidden=[(field.html_name, form.data.get(field.html_name, "")) for field in form],
            submit=f"Broadcast {len(node_ids)} task(s)",
            form_id="tm-broadcast-confirm",
        )

    def save_model(self, request, obj, form, change):
        """Save through the services, the one place the task rules live."""
        fields = {name: form.cleaned_data[name] for name in TaskAdminForm.Meta.fields}
        if change:
            task = task_update(task_id=obj.pk, **fields)
        else:
            task = task_create(**fields)
            obj.pk = task.pk
            obj._state.adding = False
        if task.status == TaskStatus.PENDING:
            node = Node.objects.get(pk=task.assigned_node_id)
            self.warn_if_down(request, node, pinned=task.pinned)

    def warn_if_down(self, request, node, *, pinned: int = 0, given: int = 1) -> None:
        warning = down_node_warning(node, pinned=pinned, given=given)
        if warning:
            self.message_user(request, warning, messages.WARNING)

    def confirmation(
        self, request, queryset, *, action, intro, submit, form=None, details=(), back=None
    ):
        """The page an action shows before it changes anything: how many of the selected
        tasks change and how many it leaves alone (and why), the tasks, and a button."""
        eligible, skipped = skipped_by_reason(queryset, SKIP_ACTION.get(action, action))
        changes = [
            f"{eligible} of the {eligible + sum(skipped.values())} selected task(s) change.",
            *details,
        ]
        if skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
            changes.append(f"Left as they are: {reasons}.")
        return render(
            request,
            "admin/tasks/task/action_confirm.html",
            {
                **self.admin_site.each_context(request),
                "title": submit,
                "intro": intro,
                "changes": changes,
                "submit": submit if action.startswith("reassign") else f"{submit} ({eligible})",
                # None of the selected would change: no button (a red "Cancel tasks (0)"
                # offered to do nothing), only the way back.
                "nothing": eligible == 0,
                # Failing, cancelling and hiding tasks take something away: styled as
                # Django's delete.
                "destructive": action in ("mark_failed", "soft_delete", "cancel_tasks"),
                "action": action,
                "form": form,
                "tasks": queryset.select_related("assigned_node")[:CONFIRM_LIST_LIMIT],
                "more": max(queryset.count() - CONFIRM_LIST_LIMIT, 0),
                "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
                "select_across": request.POST.get("select_across", "0"),
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                # A task's own page asked: "No, take me back" and the answer go back there.
                "back": back,
                "from_task": FROM_TASK if back else None,
            },
        )

    def report(self, request, text: str, skipped: dict[str, int], done: int):
        level = messages.SUCCESS if done and not skipped else messages.WARNING
        self.message_user(request, text, level)

    @admin.action(description="Reassign selected tasks to a node")
    def reassign(self, request, queryset):
        form = ReassignForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            eligible, skipped = skipped_by_reason(queryset, "reassign")
            target, locked_at = form.cleaned_data["node"], form.cleaned_data["locked_at"]
            try:
                moved = tasks_reassign(
                    task_ids=queryset.values_list("pk", flat=True), node=target, locked_at=locked_at
                )
            except REFUSALS as error:
                self.message_user(request, refusal(error), messages.ERROR)
                return None
            text = outcome("Reassigned", len(moved), eligible, skipped, f" to {target}")
            if moved:
                text += " " + deadline_outcome(moved, locked_at)
            self.report(request, text, skipped, len(moved))
            if moved:
                # A broadcast's tasks among them are failed, not moved, by failover.
                pinned = Task.objects.filter(pk__in=moved, pinned=True).count()
                self.warn_if_down(request, target, pinned=pinned, given=len(moved))
            return None
        preview = reassign_preview(queryset, timezone.now())
        return self.confirmation(
            request,
            queryset,
            action="reassign",
            # An empty list of nodes said nothing of why.
            details=() if form.fields["node"].queryset.exists() else (no_schedulable_node(),),
            intro=(
                f"{preview['moving']} of the selected tasks go back to pending for the chosen "
                f"node ({preview['in_progress']} of them in progress: their node stops working "
                "on them); completed and soft-deleted tasks are left as they are. "
                "Without a deadline below: " + deadline_plan(preview, None)
            ),
            submit=f"Reassign {preview['moving']} task(s)",
            form=form,
        )

    @admin.action(description="Reassign selected tasks by node label")
    def reassign_by_label(self, request, queryset):
        form = LabelReassignForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            eligible, skipped = skipped_by_reason(queryset, "reassign")
            try:
                done = len(
                    tasks_reassign_by_selector(
                        task_ids=queryset.values_list("pk", flat=True),
                        selector=form.cleaned_data["labels"],
                        locked_at=form.cleaned_data["locked_at"],
                    )
                )
            except REFUSALS as error:
                self.message_user(request, refusal(error), messages.ERROR)
                return None
            self.report(request, outcome("Reassigned", done, eligible, skipped), skipped, done)
            return None
        return self.confirmation(
            request,
            queryset,
            action="reassign_by_label",
            intro=(
                "These tasks go back to pending, each to the least-loaded schedulable node "
                "with these labels (alive first). Completed and soft-deleted tasks are left "
                "as they are."
            ),
            submit="Reassign",
            form=form,
        )

    @admin.action(description="Cancel selected open tasks")
    def cancel_tasks(self, request, queryset):
        form = CancelForm(request.POST if "apply" in request.POST else None)
        # Posted by a task's own page (its Cancel button): the answer goes back there.
        from_task = request.POST.get(FROM_TASK) == "1" and queryset.count() == 1
        if not form.is_valid():
            open_now = queryset.filter(active=True).aggregate(
                pending=Count("pk", filter=Q(status=TaskStatus.PENDING)),
                running=Count("pk", filter=Q(status=TaskStatus.IN_PROGRESS)),
            )
            # Only what happens: "0 in progress get a cancel request" said nothing.
            what = []
            if open_now["pending"]:
                what.append(f"{open_now['pending']} pending task(s) are cancelled now")
            if open_now["running"]:
                what.append(
                    f"{open_now['running']} in progress get a cancel request their node "
                    f"acknowledges (or the sweep cancels them after {cancel_grace()})"
                )
            return self.confirmation(
                request,
                queryset,
                details=["; ".join(what) + "."] if what else [],
                action="cancel_tasks",
                intro=(
                    "Pending tasks are cancelled now; a task in progress gets a cancel request "
                    "its node acknowledges, or the sweep cancels it if its node has not "
                    f"answered within {cancel_grace()} (CANCEL_GRACE_SECONDS). Finished and "
                    "soft-deleted tasks are left alone."
                ),
                submit="Cancel tasks",
                form=form,
                back=change_url(queryset.get()) if from_task else None,
            )
        eligible, skipped = skipped_by_reason(queryset, "cancel_tasks")
        done = tasks_cancel(
            task_ids=queryset.values_list("pk", flat=True), reason=form.cleaned_data["reason"]
        )
        if from_task:
            task = queryset.get()
            self.report(request, cancel_outcome_of_one(done, skipped), skipped, sum(done))
            return redirect(change_url(task))
        text = cancel_outcome(done) + skipped_outcome(sum(done), eligible, skipped)
        self.report(request, text, skipped, sum(done))
        return None

    @admin.action(description="Mark selected open tasks as failed")
    def mark_failed(self, request, queryset):
        if "apply" not in request.POST:
            return self.confirmation(
                request,
                queryset,
                action="mark_failed",
                intro=(
                    "These tasks will be failed now (cause: admin); their nodes can no longer "
                    "work on them. Completed, failed and soft-deleted tasks are left alone."
                ),
                submit="Mark failed",
            )
        eligible, skipped = skipped_by_reason(queryset, "mark_failed")
        done = tasks_fail(task_ids=queryset.values_list("pk", flat=True))
        self.report(request, outcome("Marked failed", done, eligible, skipped), skipped, done)

    @admin.action(description="Soft delete selected tasks (hide them everywhere)")
    def soft_delete(self, request, queryset):
        if "apply" not in request.POST:
            return self.confirmation(
                request,
                queryset,
                action="soft_delete",
                intro=(
                    "These tasks will disappear from every list and API answer; their history "
                    "stays, and the restore action brings them back."
                ),
                submit="Soft delete",
            )
        eligible, skipped = skipped_by_reason(queryset, "soft_delete")
        ids = queryset.values_list("pk", flat=True)
        done = len(tasks_set_active(task_ids=ids, active=False))
        self.report(request, outcome("Soft-deleted", done, eligible, skipped), skipped, done)

    @admin.action(description="Restore selected soft-deleted tasks")
    def restore(self, request, queryset):
        eligible, skipped = skipped_by_reason(queryset, "restore")
        done = len(tasks_set_active(task_ids=queryset.values_list("pk", flat=True), active=True))
        self.report(request, outcome("Restored", done, eligible, skipped), skipped, done)


class HistoryChangeList(ChangeList):
    """Fetches the tasks and nodes a page of history names, once each, for its columns."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        # The cancel reason too: a cancel request's row shows whether it was cut.
        return queryset.prefetch_related(
            Prefetch("task", Task.objects.only("name", "cancel_reason"))
        )

    def get_results(self, request):
        super().get_results(request)
        nodes = history_nodes(self.result_list)
        for row in self.result_list:
            row.labelled_nodes = nodes


class ActorFilter(admin.SimpleListFilter):
    """Who acted: the sweep, or a person or node by name."""

    title = "actor"
    parameter_name = "actor"
    SYSTEM = "system"

    def lookups(self, request, model_admin):
        people = User.objects.only("id", "name", "email").order_by("role", "name", "email")
        return [(self.SYSTEM, SYSTEM), *((str(user.pk), str(user)) for user in people)]

    def queryset(self, request, queryset):
        if self.value() == self.SYSTEM:
            return queryset.filter(performed_by__isnull=True)
        if self.value():
            return queryset.filter(performed_by_id=uuid_value(self.value()))
        return queryset


class InvolvedNodeFilter(admin.SimpleListFilter):
    """Everything about one node: what it did, and what was given to it or taken from it."""

    title = "node"
    parameter_name = "node"

    def lookups(self, request, model_admin):
        nodes = User.objects.filter(role=Role.NODE).only("id", "name", "email")
        return [(str(node.pk), str(node)) for node in nodes]

    def queryset(self, request, queryset):
        node = self.value()
        if not node:
            return queryset
        node = str(uuid_value(node))
        moved = Q(action__in=NODE_VALUED) & (Q(from_value=node) | Q(to_value=node))
        return queryset.filter(moved | Q(performed_by_id=node))


class RecordAdmin(admin.ModelAdmin):
    """A record the system writes (the audit trail, the sweep's runs): read here, never
    added, changed or deleted. Django's change log holds nothing of it, so its page has
    no HISTORY button, and that page is a 404."""

    change_form_template = "admin/tasks/record_change_form.html"

    def history_view(self, request, object_id, extra_context=None):
        raise Http404(f"A {self.opts.verbose_name} has no change history: nobody edits it.")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TaskHistory)
class TaskHistoryAdmin(HistoryLabels, RecordAdmin):
    """Read-only: the audit trail cannot be edited or deleted here."""

    list_display = [
        "when",
        "task_link",
        "action",
        "from_label",
        "to_label",
        "performed_by_label",
        "cause",
    ]
    # The activity feed: newest first, by node, actor, action and cause.
    list_filter = [InvolvedNodeFilter, ActorFilter, "action", "cause"]
    # The page's tasks in one query after it, not a join: joined, MariaDB 10.11 read
    # every task first and sorted the whole history (12 s at a million rows).
    list_select_related = ["performed_by"]
    # Ids grow with time in an append-only table, and the primary key needs no sort.
    ordering = ["-id"]
    search_fields = ["=task__id", "task__name"]
    show_full_result_count = False
    paginator = ReplicaCountPaginator
    fields = ["when", "task_link", "action", "from_label", "to_label", "performed_by_label"]
    readonly_fields = fields

    class Media:
        css = {"all": ["tasks/admin.css"]}

    def get_changelist(self, request, **kwargs):
        return HistoryChangeList

    def changelist_view(self, request, extra_context=None):
        # One task's history (its page's HISTORY button) is titled with the task's name.
        task_id = request.GET.get("task__id__exact")
        task = Task.objects.filter(pk=task_id).only("name").first() if is_uuid(task_id) else None
        if task is not None:
            extra_context = {
                **(extra_context or {}),
                "title": f"History of {task.name}",
                "history_task": task,
            }
        return super().changelist_view(request, extra_context)

    def labelled_nodes(self, row):
        # A list page attached them (HistoryChangeList); a single row's page asks alone.
        nodes = getattr(row, "labelled_nodes", None)
        return history_nodes([row]) if nodes is None else nodes

    def labelled_task(self, row):
        # Fetched with the page (HistoryChangeList); a single row's page reads it.
        return row.task

    @admin.display(description="task", ordering="task__name")
    def task_link(self, row):
        url = reverse("admin:tasks_task_change", args=[row.task_id])
        return format_html('<a href="{}">{}</a>', url, row.task.name)


def uuid_value(text) -> UUID:
    """A list filter's id, or Django's "?e=1" for a hand-edited one (a 500 before)."""
    try:
        return UUID(str(text))
    except ValueError as error:
        raise IncorrectLookupParameters(f"not an id: {text!r}") from error


def is_uuid(text) -> bool:
    try:
        UUID(str(text))
    except ValueError:
        return False
    return True


def history_url(**lookups) -> str:
    return f"{reverse('admin:tasks_taskhistory_changelist')}?{urlencode(lookups)}"


class DidSomethingFilter(admin.SimpleListFilter):
    """Runs that failed, moved or cancelled a task or held the failover back, or the
    rest: a sweep every few seconds (`make run`'s every 5) mostly finds nothing to do."""

    title = "did something"
    parameter_name = "did_something"
    DID_SOMETHING = (
        Q(failed_count__gt=0)
        | Q(reassigned_count__gt=0)
        | Q(cancel_timeout_cancelled__gt=0)
        | Q(failover_held_count__gt=0)
    )

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(self.DID_SOMETHING)
        if self.value() == "no":
            return queryset.exclude(self.DID_SOMETHING)
        return queryset


@admin.register(SweepRun)
class SweepRunAdmin(RecordAdmin):
    """The sweep's past runs, newest first, each linked to the history rows it wrote,
    by cause.

    A run does not record its tasks: its links are the system's history rows in the
    run's range of history ids (two sweeps that overlap, from two hosts, share their
    rows); a run from before the ranges were kept, those in its time window."""

    list_display = [
        "when",
        "took",
        "failed",
        "reassigned",
        "by_cause",
        "held",
        "stranded",
        "all_rows",
    ]
    # A run's own page reads as its row does, with the same links (not the model's
    # columns: "Stranded count", "History after").
    fields = readonly_fields = list_display
    # Every run unless asked, as Django's lists do: an empty run says the sweep ran.
    list_filter = [DidSomethingFilter]
    ordering = ["-started_at"]
    show_full_result_count = False
    list_per_page = 50

    class Media:
        css = {"all": ["tasks/admin.css"]}

    @staticmethod
    def window(run) -> dict:
        if run.history_last is not None:
            return {
                "actor": ActorFilter.SYSTEM,
                "id__gt": run.history_after,
                "id__lte": run.history_last,
            }
        return {
            "actor": ActorFilter.SYSTEM,
            "created_at__gte": run.started_at.isoformat(),
            "created_at__lte": run.finished_at.isoformat(),
        }

    @admin.display(description="when", ordering="started_at")
    def when(self, run):
        return moment(run.started_at)

    @admin.display(description="took")
    def took(self, run):
        return duration_ms(run.duration.total_seconds())

    @admin.display(description="failed", ordering="failed_count")
    def failed(self, run):
        if not run.failed_count:
            return 0
        url = history_url(**self.window(run), action="status_change", to_value="failed")
        return format_html('<a href="{}">{}</a>', url, run.failed_count)

    @admin.display(description="moved to other nodes", ordering="reassigned_count")
    def reassigned(self, run):
        if not run.reassigned_count:
            return 0
        url = history_url(**self.window(run), action="assignee_change")
        return format_html('<a href="{}">{}</a>', url, run.reassigned_count)

    @admin.display(description="by cause")
    def by_cause(self, run):
        """Per cause, the tasks it failed, moved or cancelled, each count linked to
        exactly those tasks' rows."""
        if not run.causes_recorded:
            return "not recorded" if run.failed_count or run.reassigned_count else "—"
        causes: dict[str, list] = {}
        for count in SWEEP_CAUSE_COUNTS:
            number = getattr(run, count.field)
            if number:
                url = history_url(**self.window(run), **count.rows, cause__exact=count.cause)
                causes.setdefault(count.cause, []).append(
                    format_html(
                        '<a class="tm-run-cause" data-count="{}" href="{}">{} {}</a>',
                        count.field,
                        url,
                        number,
                        count.what,
                    )
                )
        if not causes:
            return "—"
        return format_html_join(
            mark_safe("<br>"),
            '<span class="nowrap">{}: {}</span>',
            (
                (FailureCause(cause).label, mark_safe(", ".join(links)))
                for cause, links in causes.items()
            ),
        )

    @admin.display(description="failover held for", ordering="failover_held_count")
    def held(self, run):
        count = run.failover_held_count
        return f"{count} down node(s)" if count else "—"

    @admin.display(description="left in place", ordering="stranded_count")
    def stranded(self, run):
        """Open tasks of down nodes no alive schedulable node could take (a later run retries)."""
        count = run.stranded_count
        return f"{count} task(s)" if count else "—"

    @admin.display(description="history")
    def all_rows(self, run):
        if not (run.failed_count or run.reassigned_count or run.cancel_timeout_cancelled):
            return "—"
        return format_html('<a href="{}">every row</a>', history_url(**self.window(run)))
