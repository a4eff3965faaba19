"""The operator's view: the admin site's landing dashboard and one page per node.

Every panel is one grouped query on an index (README, Dashboard), and the whole
snapshot is cached for DASHBOARD_CACHE_SECONDS, shared with /metrics' collector.
"""

import logging
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db.models import Count, Min, Q
from django.db.models.functions import ExtractHour
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from accounts import heartbeats
from accounts.models import RECENT_DOWN_INTERVALS, Liveness, User
from accounts.services import user_deactivate
from taskmgmt.throttling import CACHE_ERRORS
from tasks.models import (
    OPEN_STATUSES,
    FailureCause,
    SweepRun,
    Task,
    TaskHistory,
    TaskStatus,
    validate_future,
)
from tasks.services import tasks_reassign

logger = logging.getLogger("taskmgmt.dashboard")

FINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED)
# A day, and no more: the chart's buckets are named by their hour of the day.
WINDOW_HOURS = 24
SNAPSHOT_CACHE_KEY = "tasks:dashboard:snapshot"
# A failure from before causes were recorded has none; it is shown as this.
NO_CAUSE = "unknown"


def _open_by_node_and_status(now: datetime) -> list[dict]:
    """Open tasks by (status, node): how many, how many overdue and due within the hour,
    and the oldest `updated_at` (for in_progress, when the longest-running one started).
    One pass in the order of task_dashboard_open, index-only."""
    soon = now + timedelta(hours=1)
    return list(
        Task.objects.filter(active=True, status__in=OPEN_STATUSES)
        .values("status", "assigned_node_id")
        .annotate(
            count=Count("pk"),
            overdue=Count("pk", filter=Q(locked_at__lt=now)),
            due_soon=Count("pk", filter=Q(locked_at__gte=now, locked_at__lt=soon)),
            oldest=Min("updated_at"),
        )
        .order_by()
    )


def _finished_since(since: datetime) -> list[dict]:
    """Tasks that reached completed or failed since `since` (and are still there), by
    hour, status, cause and node: one covering range on task_dashboard_done.

    Finished tasks pile up for ever; counting all of them is a scan of the whole
    table (0.8 s at a million), so the dashboard shows the window's."""
    return list(
        Task.objects.filter(active=True, status__in=FINAL_STATUSES, updated_at__gte=since)
        # The hour of the day names the bucket: the window holds each once. Cheaper
        # than truncating each timestamp (half the query's time at a million tasks).
        .annotate(hour=ExtractHour("updated_at"))
        .values("hour", "status", "failure_cause", "assigned_node_id")
        .annotate(count=Count("pk"))
        .order_by()
    )


def _compute(now: datetime) -> dict:
    heartbeats.flush()
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=WINDOW_HOURS - 1)
    nodes = {
        row["id"]: {
            **row,
            "liveness_label": Liveness(row["liveness"]).label,
            "heartbeat_age": (now - row["last_seen"]).total_seconds() if row["last_seen"] else None,
            "counts": dict.fromkeys(TaskStatus.values, 0),
            "oldest_in_progress_age": None,
            "overdue": 0,
        }
        for row in User.objects.nodes()
        .with_liveness(now)
        .values("id", "name", "email", "is_active", "last_seen", "liveness")
    }
    totals = dict.fromkeys(TaskStatus.values, 0)
    hours = [
        {"start": since + timedelta(hours=i), "completed": 0, "failed": {}}
        for i in range(WINDOW_HOURS)
    ]
    failures, deadlines = {}, {"overdue": 0, "due_soon": 0}
    open_rows = _open_by_node_and_status(now)
    for row in open_rows:
        deadlines["overdue"] += row["overdue"]
        deadlines["due_soon"] += row["due_soon"]
    for row in open_rows + _finished_since(since):
        totals[row["status"]] += row["count"]
        # An admin-role assignee (data from before the rule) is in the totals only.
        node = nodes.get(row["assigned_node_id"])
        if node is not None:
            node["counts"][row["status"]] += row["count"]
            node["overdue"] += row.get("overdue", 0)
        if row["status"] == TaskStatus.IN_PROGRESS and node is not None:
            node["oldest_in_progress_age"] = (now - row["oldest"]).total_seconds()
        if row["status"] not in FINAL_STATUSES:
            continue
        hour = hours[(row["hour"] - since.hour) % WINDOW_HOURS]
        if row["status"] == TaskStatus.COMPLETED:
            hour["completed"] += row["count"]
        else:
            cause = row["failure_cause"] or NO_CAUSE
            hour["failed"][cause] = hour["failed"].get(cause, 0) + row["count"]
            failures[cause] = failures.get(cause, 0) + row["count"]
    last_sweep = SweepRun.objects.order_by("-started_at").first()
    return {
        "computed_at": now,
        "since": since,
        "nodes": sorted(nodes.values(), key=lambda node: (node["name"], node["email"])),
        "totals": totals,
        **deadlines,
        "failures": failures,
        "hours": hours,
        "last_sweep": last_sweep
        and {
            "started_at": last_sweep.started_at,
            "duration": last_sweep.duration.total_seconds(),
            "failed_count": last_sweep.failed_count,
            "reassigned_count": last_sweep.reassigned_count,
            "failover_held_count": last_sweep.failover_held_count,
        },
    }


def snapshot() -> dict:
    """The figures of every panel, at most DASHBOARD_CACHE_SECONDS old, and `cache_up`:
    whether the cache answered. Without it they are computed from the database each
    time: the page and /metrics matter most during that outage."""
    seconds = settings.DASHBOARD_CACHE_SECONDS
    try:
        # Asked even when not caching: the page and /metrics say whether it answers.
        cached = cache.get(SNAPSHOT_CACHE_KEY)
    except CACHE_ERRORS as error:
        _warn_cache_down(error)
        return {**_compute(timezone.now()), "cache_up": False}
    if cached is not None and seconds:
        return {**cached, "cache_up": True}
    data = _compute(timezone.now())
    if seconds:
        try:
            cache.set(SNAPSHOT_CACHE_KEY, data, seconds)
        except CACHE_ERRORS as error:
            _warn_cache_down(error)
            return {**data, "cache_up": False}
    return {**data, "cache_up": True}


def _warn_cache_down(error: Exception) -> None:
    logger.warning(
        "dashboard computed from the database: the cache is unavailable",
        extra={"event": "dashboard_cache_unavailable", "error": str(error)},
    )


# --- Links: every number opens the changelist filtered to exactly those tasks ---


def changelist_url(**filters) -> str:
    """The task changelist with these lookups, which the admin accepts on local fields."""
    query = {"active__exact": "1", **filters}
    return f"{reverse('admin:tasks_task_changelist')}?{urlencode(query)}"


def status_url(status: str, node_id=None, since: datetime | None = None) -> str:
    """Open statuses as they are now; finished ones since `since` (the dashboard's window)."""
    node = {"assigned_node__id__exact": str(node_id)} if node_id else {}
    window = {"updated_at__gte": since.isoformat()} if since and status in FINAL_STATUSES else {}
    return changelist_url(**node, status__exact=status, **window)


def failures_url(cause: str, since: datetime, until: datetime | None = None) -> str:
    window = {"updated_at__gte": since.isoformat()}
    if until:
        window["updated_at__lt"] = until.isoformat()
    return changelist_url(
        status__exact=TaskStatus.FAILED,
        failure_cause__exact="" if cause == NO_CAUSE else cause,
        **window,
    )


CAUSE_COLOURS = {
    FailureCause.NODE_REPORTED: "#d9822b",
    FailureCause.DEADLINE: "#c23030",
    FailureCause.NODE_LOST: "#8f398f",
    FailureCause.ADMIN: "#5c7080",
    NO_CAUSE: "#a7b6c2",
}
COMPLETED_COLOUR = "#29a634"
CHART_WIDTH, CHART_HEIGHT, BAR_GAP = 720, 180, 4


def chart(data: dict) -> dict:
    """Stacked bars per hour (completed at the bottom, then each cause), laid out here
    so the page needs no script: each segment links to its tasks."""
    hours = data["hours"]
    tallest = max((hour["completed"] + sum(hour["failed"].values()) for hour in hours), default=0)
    scale = CHART_HEIGHT / tallest if tallest else 0
    slot = CHART_WIDTH / len(hours)
    bars = []
    for i, hour in enumerate(hours):
        until = hour["start"] + timedelta(hours=1)
        segments = [("completed", hour["completed"], COMPLETED_COLOUR, None)] + [
            (cause, count, CAUSE_COLOURS.get(cause, "#a7b6c2"), cause)
            for cause, count in sorted(hour["failed"].items())
        ]
        top = CHART_HEIGHT
        rects = []
        for label, count, colour, cause in segments:
            if not count:
                continue
            height = max(count * scale, 1)
            top -= height
            url = (
                failures_url(cause, hour["start"], until)
                if cause
                else changelist_url(
                    status__exact=TaskStatus.COMPLETED,
                    updated_at__gte=hour["start"].isoformat(),
                    updated_at__lt=until.isoformat(),
                )
            )
            rects.append(
                {
                    "x": round(i * slot + BAR_GAP / 2, 1),
                    "y": round(top, 1),
                    "width": round(slot - BAR_GAP, 1),
                    "height": round(height, 1),
                    "colour": colour,
                    "url": url,
                    "title": f"{hour['start']:%H}:00 {label}: {count}",
                }
            )
        bars.append({"rects": rects, "label": f"{hour['start']:%H}", "x": round(i * slot, 1)})
    legend = [("completed", COMPLETED_COLOUR)] + [
        (cause, colour) for cause, colour in CAUSE_COLOURS.items() if cause != NO_CAUSE
    ]
    return {
        "bars": bars,
        "tallest": tallest,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "legend": legend,
    }


def dashboard_context(data: dict) -> dict:
    now = timezone.now()
    statuses = TaskStatus.values
    node_rows = [
        {
            **node,
            "url": reverse("admin:node", args=[node["id"]]),
            "cells": [
                (s, node["counts"][s], status_url(s, node["id"], data["since"])) for s in statuses
            ],
            "in_progress_url": status_url(TaskStatus.IN_PROGRESS, node["id"]),
            "overdue_url": changelist_url(
                assigned_node__id__exact=str(node["id"]),
                status__in=",".join(OPEN_STATUSES),
                locked_at__lt=data["computed_at"].isoformat(),
            ),
            "open": sum(node["counts"][s] for s in OPEN_STATUSES),
            "open_url": changelist_url(
                assigned_node__id__exact=str(node["id"]), status__in=",".join(OPEN_STATUSES)
            ),
        }
        for node in data["nodes"]
    ]
    soon = data["computed_at"] + timedelta(hours=1)
    return {
        "data": data,
        "age": round((now - data["computed_at"]).total_seconds(), 1),
        "cache_seconds": settings.DASHBOARD_CACHE_SECONDS,
        "max_down_share": settings.FAILOVER_MAX_DOWN_SHARE,
        "recent_intervals": RECENT_DOWN_INTERVALS,
        "statuses": statuses,
        "node_rows": node_rows,
        "totals": [(s, data["totals"][s], status_url(s, since=data["since"])) for s in statuses],
        "overdue_url": changelist_url(
            status__in=",".join(OPEN_STATUSES), locked_at__lt=data["computed_at"].isoformat()
        ),
        "due_soon_url": changelist_url(
            status__in=",".join(OPEN_STATUSES),
            locked_at__gte=data["computed_at"].isoformat(),
            locked_at__lt=soon.isoformat(),
        ),
        "failures": [
            (cause, count, failures_url(cause, data["since"]))
            for cause, count in sorted(data["failures"].items())
        ],
        "chart": chart(data),
    }


# --- The node page ------------------------------------------------------------


class NodeReassignForm(forms.Form):
    node = forms.ModelChoiceField(
        queryset=User.objects.none(), label="Reassign all its open tasks to"
    )
    locked_at = forms.DateTimeField(
        label="New deadline",
        required=False,
        help_text=(
            "A future date and time (UTC); empty keeps each task's deadline unless it is "
            "past or sooner than REASSIGN_DEADLINE_MINUTES (tasks.models.fresh_deadline)."
        ),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def __init__(self, *args, source: User, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["node"].queryset = (
            User.objects.nodes().filter(is_active=True).exclude(pk=source.pk)
        )
        self.fields["locked_at"].initial = (
            timezone.now() + timedelta(minutes=settings.REASSIGN_DEADLINE_MINUTES)
        ).strftime("%Y-%m-%dT%H:%M")

    def clean_locked_at(self):
        locked_at = self.cleaned_data["locked_at"]
        if locked_at is not None:
            validate_future(locked_at)
        return locked_at


HISTORY_ROWS = 20


def node_view(site, request, node_id):
    heartbeats.flush()
    now = timezone.now()
    node = User.objects.nodes().with_liveness(now).filter(pk=node_id).first()
    if node is None:
        raise Http404("No node has this id.")
    form = NodeReassignForm(request.POST or None, source=node)
    if request.method == "POST":
        if request.POST.get("action") == "deactivate":
            user_deactivate(user=node)
            messages.success(request, f"Deactivated {node}: it can no longer log in.")
            return redirect("admin:node", node_id=node.pk)
        if form.is_valid():
            try:
                moved = tasks_reassign(
                    task_ids=Task.objects.filter(
                        assigned_node=node, active=True, status__in=OPEN_STATUSES
                    ).values_list("pk", flat=True),
                    node=form.cleaned_data["node"],
                    locked_at=form.cleaned_data["locked_at"],
                )
            except ValidationError as error:
                messages.error(request, "; ".join(error.messages))
            else:
                messages.success(
                    request, f"Reassigned {len(moved)} open task(s) to {form.cleaned_data['node']}."
                )
                return redirect("admin:node", node_id=node.pk)
    counts = dict(
        Task.objects.filter(assigned_node=node, active=True)
        .values_list("status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    since = now - timedelta(hours=WINDOW_HOURS)
    finished = dict(
        Task.objects.filter(
            assigned_node=node, active=True, status__in=FINAL_STATUSES, updated_at__gte=since
        )
        .values_list("status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    done = sum(finished.values())
    history = (
        TaskHistory.objects.filter(performed_by=node)
        .select_related("task")
        .only("created_at", "action", "from_value", "to_value", "cause", "task__name")
        .order_by("-id")[:HISTORY_ROWS]
    )
    context = {
        **site.each_context(request),
        "title": f"Node {node.name or node.email}",
        "node": node,
        "heartbeat_age": round((now - node.last_seen).total_seconds()) if node.last_seen else None,
        "statuses": [
            (status, label, counts.get(status, 0), status_url(status, node.pk))
            for status, label in TaskStatus.choices
        ],
        "open_count": sum(counts.get(status, 0) for status in OPEN_STATUSES),
        "finished": finished,
        "failure_rate": (finished.get(TaskStatus.FAILED, 0) / done) if done else None,
        "failed_url": changelist_url(
            assigned_node__id__exact=str(node.pk),
            status__exact=TaskStatus.FAILED,
            updated_at__gte=since.isoformat(),
        ),
        "history": history,
        "liveness_label": Liveness(node.liveness).label,
        "form": form,
    }
    return TemplateResponse(request, "admin/tasks/node.html", context)


class AdminSite(admin.AdminSite):
    """Django's admin site, opening on the dashboard, with a page per node.

    Its login form is accounts.admin.AdminLoginForm (the API login's limits).
    """

    index_template = "admin/tasks/dashboard.html"

    def index(self, request, extra_context=None):
        context = {
            **self.each_context(request),
            "title": "Dashboard",
            "subtitle": None,
            "app_list": self.get_app_list(request),
            **dashboard_context(snapshot()),
            **(extra_context or {}),
        }
        request.current_app = self.name
        return TemplateResponse(request, self.index_template, context)

    def get_urls(self):
        node_page = self.admin_view(lambda request, node_id: node_view(self, request, node_id))
        return [path("node/<uuid:node_id>/", node_page, name="node"), *super().get_urls()]
