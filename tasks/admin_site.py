"""The admin site: Django's, opening on the dashboard, with a page per node.

Its login form is accounts.admin.AdminLoginForm (the API login's limits); the
node page is nodes.node_page.
"""

from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from nodes.models import RECENT_DOWN_INTERVALS
from nodes.node_page import node_view
from tasks.changelist_links import changelist_url, failures_url, status_url
from tasks.chart import chart
from tasks.dashboard import AT_RISK, backlog_seconds, snapshot
from tasks.models import OPEN_STATUSES, FailureCause, TaskStatus


def label_groups(data: dict, key: str) -> list[dict]:
    """The status-by-node table's rows summed by the nodes' value of label `key` (a row
    for the nodes without it last), each number a link to exactly those tasks."""
    groups: dict[str | None, dict] = {}
    for node in data["nodes"]:
        value = node["label_set"].get(key)
        counts = groups.setdefault(value, dict.fromkeys(TaskStatus.values, 0))
        for status, count in node["counts"].items():
            counts[status] += count
    rows = []
    for value in sorted(groups, key=lambda value: (value is None, value or "")):
        label = f"!{key}" if value is None else f"{key}={value}"
        rows.append(
            {
                "name": f"no {key} label" if value is None else label,
                "cells": [
                    (s, count, status_url(s, since=data["since"], node_label=label))
                    for s, count in groups[value].items()
                ],
            }
        )
    return rows


def dashboard_context(data: dict, group: str | None = None) -> dict:
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
    for row in node_rows:
        row["backlog"] = backlog_seconds(row["open"], row["completed_last_hour"])
    at_risk = [row for row in node_rows if row["liveness"] in AT_RISK and row["open"]]
    soon = data["computed_at"] + timedelta(hours=1)
    return {
        "data": data,
        "age": round((now - data["computed_at"]).total_seconds(), 1),
        "cache_seconds": settings.DASHBOARD_CACHE_SECONDS,
        "max_down_share": settings.FAILOVER_MAX_DOWN_SHARE,
        "recent_intervals": RECENT_DOWN_INTERVALS,
        "statuses": statuses,
        "node_rows": node_rows,
        "label_keys": sorted({key for node in data["nodes"] for key in node["label_set"]}),
        "group": group,
        "group_rows": label_groups(data, group) if group else None,
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
            (cause, cause_label(cause), count, failures_url(cause, data["since"]))
            for cause, count in sorted(data["failures"].items())
        ],
        "sweep_cancelled_url": changelist_url(
            status__exact=TaskStatus.CANCELLED,
            failure_cause__exact=FailureCause.CANCEL_TIMEOUT,
            updated_at__gte=data["since"].isoformat(),
        ),
        "status_labels": TaskStatus.choices,
        "cancel_timeout_label": FailureCause.CANCEL_TIMEOUT.label,
        "at_risk": at_risk,
        "at_risk_count": sum(row["open"] for row in at_risk),
        "at_risk_url": changelist_url(
            assigned_node__id__in=",".join(str(row["id"]) for row in at_risk),
            status__in=",".join(OPEN_STATUSES),
        )
        if at_risk
        else "",
        "sweep_age": (
            (now - data["last_sweep"]["started_at"]).total_seconds() if data["last_sweep"] else None
        ),
        "chart": chart(data),
        "sweep_runs_url": reverse("admin:tasks_sweeprun_changelist"),
        "moved": moved_rows(data),
    }


def moved_rows(data: dict) -> list[tuple]:
    """The dashboard's "moved in the last 24 h" by cause: (html id, label, count, link to
    exactly the sweep runs that moved tasks for that cause)."""
    runs = reverse("admin:tasks_sweeprun_changelist")
    since = {"started_at__gte": data["since"].isoformat()}
    moved = data["moved_by_cause"]
    rows = [
        (
            f"tm-moved-{cause.replace('_', '-')}",
            f"{FailureCause(cause).label} (moved by the sweep)",
            moved[cause],
            f"{runs}?{urlencode({**since, f'{cause}_moved__gt': 0})}",
        )
        for cause in (FailureCause.NODE_LOST, FailureCause.DRAINED)
    ]
    if moved["unknown"]:
        lookups = {**since, "node_lost_moved__isnull": "True", "reassigned_count__gt": 0}
        rows.append(
            (
                "tm-moved-unknown",
                "Cause not recorded (runs before it was)",
                moved["unknown"],
                f"{runs}?{urlencode(lookups)}",
            )
        )
    return rows


def cause_label(cause: str) -> str:
    # Failures from before causes were recorded have none.
    return FailureCause(cause).label if cause in FailureCause.values else "Unknown (before causes)"


class AdminSite(admin.AdminSite):
    """Django's admin site, opening on the dashboard, with a page per node.

    Its login form is accounts.admin.AdminLoginForm (the API login's limits).
    """

    index_template = "admin/tasks/dashboard.html"
    # The project's own empty cells say "—"; Django's said "-" beside them.
    empty_value_display = "—"

    def index(self, request, extra_context=None):
        context = {
            **self.each_context(request),
            "title": "Dashboard",
            "subtitle": None,
            "app_list": self.get_app_list(request),
            **dashboard_context(snapshot(), group=request.GET.get("group") or None),
            **(extra_context or {}),
        }
        request.current_app = self.name
        return TemplateResponse(request, self.index_template, context)

    def get_urls(self):
        # Here, not at the top: the feed reads the history admin's labels, and the admin
        # modules register on this site, which is being built when this module loads.
        from tasks.activity import activity_view

        node_page = self.admin_view(lambda request, node_id: node_view(self, request, node_id))
        activity = self.admin_view(lambda request: activity_view(self, request))
        return [
            path("node/<uuid:node_id>/", node_page, name="node"),
            path("activity/", activity, name="activity"),
            *super().get_urls(),
        ]
