"""The activity feed (admin/activity/): task history and node events together, newest
first, filterable by node, actor, action and cause.

Each source is read by keyset on its primary key (ids grow with time in both
append-only tables): at most a page and one row more from each, through one index
per filter, so a page costs the same at a million history rows as at ten. The page
is the two merged by time. Its cursor holds each source's last id shown, so a row
is never skipped or shown twice, whatever the other source holds.
"""

import heapq
import re
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from urllib.parse import urlencode
from uuid import UUID

from django import forms
from django.db import DEFAULT_DB_ALIAS
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from accounts.models import Role, User
from nodes.models import NodeEvent, NodeEventKind
from taskmgmt.moments import moment
from taskmgmt.replica import on_replica
from taskmgmt.sql import driver_rows
from tasks.admin import NODE_VALUED, person_cell, value_label
from tasks.models import FailureCause, HistoryAction, Task, TaskHistory

PAGE_ROWS = 50
SYSTEM = "system"
# "<history id>.<node event id>": the last of each shown; empty, no bound yet.
CURSOR = re.compile(r"^(\d{0,19})\.(\d{0,19})$")


class ActivityFilters(forms.Form):
    """The feed's filters, from the query string; every one optional."""

    node = forms.UUIDField(required=False)
    actor = forms.CharField(required=False, max_length=36)
    action = forms.ChoiceField(
        required=False,
        choices=[("", "any action"), *HistoryAction.choices, *NodeEventKind.choices],
    )
    cause = forms.ChoiceField(required=False, choices=[("", "any cause"), *FailureCause.choices])
    before = forms.RegexField(required=False, regex=CURSOR)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        users = list(User.objects.only("id", "name", "email", "role").order_by("name", "email"))
        nodes = [(str(user.pk), str(user)) for user in users if user.role == Role.NODE]
        self.fields["node"].widget = forms.Select(choices=[("", "any node"), *nodes])
        self.fields["actor"].widget = forms.Select(
            choices=[
                ("", "anyone"),
                (SYSTEM, "the system (sweep, failover, drain)"),
                *((str(user.pk), str(user)) for user in users),
            ]
        )

    def clean_actor(self):
        actor = self.cleaned_data["actor"]
        if actor in ("", SYSTEM):
            return actor
        try:
            return str(forms.UUIDField().clean(actor))
        except forms.ValidationError:
            raise forms.ValidationError("Not a user: pick one from the list.") from None

    def clean_before(self):
        match = CURSOR.match(self.cleaned_data["before"] or ".")
        return tuple(int(part) if part else None for part in match.groups())


@dataclass(frozen=True)
class Entry:
    """One row of the feed: a task history row or a node event."""

    created_at: datetime
    row: TaskHistory | NodeEvent

    @property
    def is_event(self) -> bool:
        return isinstance(self.row, NodeEvent)


def history_page(filters: dict, before: int | None, using: str) -> list[TaskHistory]:
    """At most a page and one row of task history, newest first, by the filters.

    By a node: what happened to its tasks (`node`: the task's node once the row's change
    was made, so the sweep's failures too), what it did (`performed_by`), what was given
    to it (`to_value`) and what was taken from it (`from_value`; rows from before
    migration 0016 have no `node`): index ranges merged here, since one OR over several
    columns is no index range at all."""
    action, cause, actor, node = (filters[key] for key in ("action", "cause", "actor", "node"))
    if action in NodeEventKind.values:
        return []
    rows = TaskHistory.objects.using(using).order_by("-id")
    if before is not None:
        rows = rows.filter(id__lt=before)
    if action:
        rows = rows.filter(action=action)
    if cause:
        rows = rows.filter(cause=cause)
    if actor == SYSTEM:
        rows = rows.filter(performed_by__isnull=True)
    elif actor:
        rows = rows.filter(performed_by_id=actor)
    # No join: with one, MariaDB 10.11 read the tasks first and sorted every history row
    # (11 s at a million). The page's tasks and people come after, by primary key.
    rows = rows.only(
        "task_id",
        "created_at",
        "action",
        "from_value",
        "to_value",
        "cause",
        "performed_by_id",
        "node_id",
    )
    if not node:
        # By action alone, the action's index by name: for a common action MariaDB 10.11
        # walked every row of it newer than the cursor (1.4 s at a million rows).
        return first_page(rows, index="history_action" if action and not cause else None)
    node = str(node)
    parts = [
        rows.filter(node_id=node),
        rows.filter(action__in=NODE_VALUED, to_value=node),
        rows.filter(action=HistoryAction.ASSIGNEE_CHANGE, from_value=node),
    ]
    # A node's own rows carry no cause but its reports': asked for another cause, they
    # are none, and not read (no one index serves a node and a cause: a busy node's rows
    # all, 0.4-1 s at a million).
    if not cause or cause == FailureCause.NODE_REPORTED:
        parts.append(rows.filter(performed_by_id=node))
    merged = heapq.merge(*(list(part[: PAGE_ROWS + 1]) for part in parts), key=lambda r: -r.pk)
    page = []
    for row in merged:  # a row in two parts (a node that gave itself a task) shows once
        if not page or page[-1].pk != row.pk:
            page.append(row)
    return page[: PAGE_ROWS + 1]


def first_page(rows, index: str | None = None) -> list:
    """The first PAGE_ROWS + 1 of `rows`, which are ordered newest first. `index`: their
    ids read through it first (FORCE INDEX on MariaDB, taskmgmt.sql; on the primary,
    which that fence reads), then the rows."""
    if index is None:
        return list(rows[: PAGE_ROWS + 1])
    ids = [row.id for row in driver_rows(rows, "id", index=index)[: PAGE_ROWS + 1]]
    return list(rows.filter(id__in=ids)) if ids else []


def events_page(filters: dict, before: int | None, using: str) -> list[NodeEvent]:
    """At most a page and one row of node events, newest first, by the filters. A
    node event has no failure cause: with a cause chosen there are none."""
    action, cause, actor, node = (filters[key] for key in ("action", "cause", "actor", "node"))
    if cause or (action and action not in NodeEventKind.values):
        return []
    events = NodeEvent.objects.using(using).order_by("-id")
    if before is not None:
        events = events.filter(id__lt=before)
    if action:
        events = events.filter(kind=action)
    if actor == SYSTEM:
        events = events.filter(actor__isnull=True)
    elif actor:
        events = events.filter(actor_id=actor)
    if node:
        events = events.filter(node_id=node)
    events = events.only(
        "node_id", "kind", "actor_id", "reason", "deadline", "detail", "created_at"
    )
    return list(events[: PAGE_ROWS + 1])


def activity_page(filters: dict, using: str = DEFAULT_DB_ALIAS) -> dict:
    """A page of the feed: `entries` newest first, `next` the cursor of the page after
    it (None on the last), and `nodes`, the nodes its history rows name."""
    history_before, events_before = filters["before"]
    history = history_page(filters, history_before, using)
    events = events_page(filters, events_before, using)
    merged = heapq.merge(
        (Entry(row.created_at, row) for row in history),
        (Entry(event.created_at, event) for event in events),
        key=lambda entry: entry.created_at,
        reverse=True,
    )
    entries = list(islice(merged, PAGE_ROWS))
    shown_history = [entry.row.pk for entry in entries if not entry.is_event]
    shown_events = [entry.row.pk for entry in entries if entry.is_event]
    more = len(history) + len(events) > len(entries)
    cursor = (
        min(shown_history, default=history_before),
        min(shown_events, default=events_before),
    )
    return {
        "entries": entries,
        "next": ".".join("" if part is None else str(part) for part in cursor) if more else None,
        "nodes": attach_names([entry.row for entry in entries], using),
    }


def attach_names(rows: list, using: str) -> dict:
    """The tasks and people a page's rows name, one query each for the page: set on the
    rows as select_related would (TaskHistory.task and .performed_by, NodeEvent.node
    and .actor); returns the nodes its history values name, by id text (as
    tasks.admin.history_nodes does for a list)."""
    history = [row for row in rows if isinstance(row, TaskHistory)]
    events = [row for row in rows if isinstance(row, NodeEvent)]
    task_ids = {row.task_id for row in history}
    # The cancel reason too: a cancel request's row shows whether it was cut.
    tasks = (
        Task.objects.using(using).only("name", "cancel_reason").in_bulk(task_ids)
        if task_ids
        else {}
    )
    named = {
        value
        for row in history
        if row.action in NODE_VALUED
        for value in (row.from_value, row.to_value)
        if value and is_uuid(value)
    }
    acting = {row.performed_by_id for row in history} | {
        user for event in events for user in (event.node_id, event.actor_id)
    }
    user_ids = {str(user) for user in acting if user is not None} | named
    users = User.objects.using(using).only("name", "email").in_bulk(user_ids) if user_ids else {}
    for row in history:
        row.task = tasks[row.task_id]
        row.performed_by = users.get(row.performed_by_id)
    for event in events:
        event.node = users[event.node_id]
        event.actor = users.get(event.actor_id)
    return {str(pk): user for pk, user in users.items() if str(pk) in named}


def is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def entry_cells(entry: Entry, nodes: dict) -> dict:
    """What the feed's row shows, as people read it."""
    row = entry.row
    if entry.is_event:
        change = row.reason or row.detail or "—"
        if row.deadline:
            # <bdi>: a right-to-left override in the reason must not reverse the rest.
            until = moment(row.deadline, "minutes")
            change = format_html("<bdi>{}</bdi> (until {})", change, until)
        return {
            "when": moment(row.created_at),
            "about": format_html(
                'node <a class="tm-node-name" href="{}" title="{}">{}</a>',
                reverse("admin:node", args=[row.node_id]),
                row.node,
                row.node.name or row.node.email,
            ),
            "action": row.get_kind_display(),
            "source": "node",
            "change": change,
            "by": person_cell(row.actor),
            "cause": "—",
        }
    before = value_label(row, row.from_value, nodes)
    after = value_label(row, row.to_value, nodes, row.task)
    change = (
        after
        if row.from_value is None
        else format_html("<bdi>{}</bdi> → <bdi>{}</bdi>", before, after)
    )
    if row.action in (HistoryAction.SOFT_DELETE, HistoryAction.RESTORE):
        change = "—"
    return {
        "when": moment(row.created_at),
        "about": format_html(
            'task <a href="{}">{}</a>',
            reverse("admin:tasks_task_change", args=[row.task_id]),
            row.task.name,
        ),
        "action": row.get_action_display(),
        "source": "task",
        "change": change,
        "by": person_cell(row.performed_by),
        "cause": row.get_cause_display() or "—",
    }


def activity_url(**filters) -> str:
    query = {key: value for key, value in filters.items() if value}
    return reverse("admin:activity") + (f"?{urlencode(query)}" if query else "")


def activity_view(site, request):
    form = ActivityFilters(request.GET or None)
    context = {**site.each_context(request), "title": "Activity", "form": form}
    if request.GET and not form.is_valid():
        return TemplateResponse(request, "admin/tasks/activity.html", context, status=400)
    filters = (
        form.cleaned_data
        if request.GET
        else {"node": None, "actor": "", "action": "", "cause": "", "before": (None, None)}
    )
    page = on_replica(lambda using: activity_page(filters, using))
    rows = [entry_cells(entry, page["nodes"]) for entry in page["entries"]]
    kept = {key: request.GET.get(key, "") for key in ("node", "actor", "action", "cause")}
    context.update(
        rows=rows,
        entries=page["entries"],
        newest_url=activity_url(**kept) if filters["before"] != (None, None) else "",
        older_url=activity_url(**kept, before=page["next"]) if page["next"] else "",
        filtered=any(kept.values()),
        page_rows=PAGE_ROWS,
    )
    return TemplateResponse(request, "admin/tasks/activity.html", context)
