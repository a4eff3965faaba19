"""The dashboard's figures: every panel's numbers in one snapshot.

Every panel is one grouped query on an index (tasks.selectors; README, Dashboard),
and the whole snapshot is cached for DASHBOARD_CACHE_SECONDS, shared with
/metrics' collector. The page is tasks.admin_site, its chart tasks.chart.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from nodes import heartbeats
from nodes.models import (
    CURRENT_FIRST,
    WINDOW_SHOWN_FIELDS,
    Cordon,
    Liveness,
    MaintenanceWindow,
    Node,
    current_window_of,
    labels_text,
    state_of,
    window_shown,
)
from taskmgmt.replica import on_replica
from taskmgmt.throttling import CACHE_ERRORS
from tasks.models import SWEEP_CAUSE_COUNTS, FailureCause, SweepRun, TaskStatus
from tasks.selectors import (
    FINAL_STATUSES,
    cancel_requests_by_node,
    finished_since,
    last_sweep,
    open_by_node_and_status,
    sweep_moves_since,
)

logger = logging.getLogger("taskmgmt.dashboard")

# A day, and no more: the chart's buckets are named by their hour of the day.
WINDOW_HOURS = 24
# Versioned: hosts sharing the cache across a deploy never read a snapshot of another shape.
SNAPSHOT_CACHE_KEY = "tasks:dashboard:snapshot:3"
# A failure from before causes were recorded has none; it is shown as this.
NO_CAUSE = "unknown"


AT_RISK = ("stale", "down", "never_seen")


def backlog_seconds(open_count: int, completed_last_hour: int) -> float | None:
    """How long a node's open tasks take at the rate it completed tasks in the last hour;
    None when it completed none (no rate to go by)."""
    if not open_count:
        return 0
    return open_count * 3600 / completed_last_hour if completed_last_hour else None


def _compute(now: datetime, using: str) -> dict:
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=WINDOW_HOURS - 1)
    nodes = {
        row["id"]: {
            **row,
            "liveness_label": Liveness(row["liveness"]).label,
            "heartbeat_age": (now - row["last_seen"]).total_seconds() if row["last_seen"] else None,
            "counts": dict.fromkeys(TaskStatus.values, 0),
            "oldest_in_progress_age": None,
            "overdue": 0,
            "labels": labels_text(row["label_set"]),
            "label_set": row["label_set"],
            "completed_last_hour": 0,
        }
        for row in Node.objects.using(using)
        .with_liveness(now)
        .with_labels()
        .with_schedule(now)
        .with_window(now)
        .annotate(**cancel_requests_by_node(), **window_author(now))
        .values(
            "id",
            "name",
            "email",
            "is_active",
            "last_seen",
            "liveness",
            "label_set",
            "cordon__reason",
            "cordon__by_id",
            "cordon__by__name",
            "cordon__by__email",
            "cordon__since",
            "cordon__drain_deadline",
            "window_starts_at",
            "window_reason",
            "window_drain",
            "window_by_id",
            "window_by_name",
            "window_by_email",
            *(f"shown_window_{field}" for field in WINDOW_SHOWN_FIELDS),
            "cancel_waiting",
            "cancel_oldest",
        )
    }
    for node in nodes.values():
        node["schedule"] = schedule_of(node)
        node["schedule_by"] = schedule_author(node, node["schedule"]["by"])
        node["window"] = window_shown(node, now)
        oldest = node.pop("cancel_oldest")
        node["cancel_oldest_age"] = (now - oldest).total_seconds() if oldest else None
    totals = dict.fromkeys(TaskStatus.values, 0)
    hours = [
        {"start": since + timedelta(hours=i), "completed": 0, "failed": {}}
        for i in range(WINDOW_HOURS)
    ]
    failures, deadlines, sweep_cancelled = {}, {"overdue": 0, "due_soon": 0}, 0
    open_rows = open_by_node_and_status(now, using)
    for row in open_rows:
        deadlines["overdue"] += row["overdue"]
        deadlines["due_soon"] += row["due_soon"]
    for row in open_rows + finished_since(since, recent=now - timedelta(hours=1), using=using):
        totals[row["status"]] += row["count"]
        # An admin-role assignee (data from before the rule) is in the totals only.
        node = nodes.get(row["assigned_node_id"])
        if node is not None:
            node["counts"][row["status"]] += row["count"]
            node["overdue"] += row.get("overdue", 0)
        if row["status"] == TaskStatus.IN_PROGRESS and node is not None:
            node["oldest_in_progress_age"] = (now - row["oldest"]).total_seconds()
        if row["status"] == TaskStatus.CANCELLED:
            # Cancelled is no failure: the sweep's cancellations are a line of their own.
            if row["failure_cause"] == FailureCause.CANCEL_TIMEOUT:
                sweep_cancelled += row["count"]
            continue
        # The chart shows outcomes of work done: completed and each failure cause.
        if row["status"] not in FINAL_STATUSES:
            continue
        hour = hours[(row["hour"] - since.hour) % WINDOW_HOURS]
        if row["status"] == TaskStatus.COMPLETED:
            hour["completed"] += row["count"]
            if node is not None:
                node["completed_last_hour"] += row["recent"]
        else:
            cause = row["failure_cause"] or NO_CAUSE
            hour["failed"][cause] = hour["failed"].get(cause, 0) + row["count"]
            failures[cause] = failures.get(cause, 0) + row["count"]
    last_run = last_sweep(using)
    return {
        "computed_at": now,
        "since": since,
        "nodes": sorted(nodes.values(), key=lambda node: (node["name"], node["email"])),
        "totals": totals,
        **deadlines,
        "failures": failures,
        "sweep_cancelled": sweep_cancelled,
        "moved_by_cause": sweep_moves_since(since, using),
        "hours": hours,
        "last_sweep": last_run
        and {
            "started_at": last_run.started_at,
            "duration": last_run.duration.total_seconds(),
            "failed_count": last_run.failed_count,
            "reassigned_count": last_run.reassigned_count,
            "failover_held_count": last_run.failover_held_count,
            "cancelled_count": last_run.cancel_timeout_cancelled,
            "stranded_count": last_run.stranded_count,
            "by_cause": run_causes(last_run),
        },
    }


def run_causes(run: SweepRun) -> list[tuple[str, str]] | None:
    """What a sweep run did by cause, as the sweep runs page says it: [(cause's label,
    "2 failed, 1 moved")], the causes it did nothing for left out; None for a run
    from before causes were kept."""
    if not run.causes_recorded:
        return None
    causes: dict[str, list[str]] = {}
    for count in SWEEP_CAUSE_COUNTS:
        number = getattr(run, count.field)
        if number:
            causes.setdefault(count.cause, []).append(f"{number} {count.what}")
    return [(FailureCause(cause).label, ", ".join(done)) for cause, done in causes.items()]


def window_author(now: datetime) -> dict:
    """Annotations: the name and email of whoever planned the node's current window,
    as subqueries beside `with_schedule`'s, so the node list stays one query."""
    window = MaintenanceWindow.objects.current(now).filter(node=OuterRef("pk"))
    window = window.order_by(*CURRENT_FIRST)  # the window with_schedule's columns name
    return {
        f"window_by_{field}": Subquery(window.values(f"by__{field}")[:1])
        for field in ("name", "email")
    }


def schedule_of(node: dict) -> dict:
    """`nodes.models.state_of` (state, reason, by, since, drainDeadline) from a node row's
    cordon and current window columns: the rule the API and the node page follow."""
    cordon = node["cordon__reason"] is not None and Cordon(
        reason=node["cordon__reason"],
        by_id=node["cordon__by_id"],
        since=node["cordon__since"],
        drain_deadline=node["cordon__drain_deadline"],
    )
    return state_of(cordon or None, current_window_of(node.get))


def schedule_author(node: dict, by) -> str:
    """Who cordoned the node (a cordon by hand outlasts any window), or planned the
    window it is in: a name, else an email; "the system" for nobody."""
    if by is None:
        return "the system"
    if node["cordon__reason"] is not None:
        return node["cordon__by__name"] or node["cordon__by__email"]
    return node["window_by_name"] or node["window_by_email"]


def snapshot() -> dict:
    """The figures of every panel, at most DASHBOARD_CACHE_SECONDS old, and `cache_up`:
    whether the cache answered. Without it they are computed from the database each
    time: the page and /metrics matter most during that outage. Read from the replica
    when there is one (taskmgmt.replica)."""
    seconds = settings.DASHBOARD_CACHE_SECONDS
    try:
        # Asked even when not caching: the page and /metrics say whether it answers.
        cached = cache.get(SNAPSHOT_CACHE_KEY)
    except CACHE_ERRORS as error:
        _warn_cache_down(error)
        return {**_read(timezone.now()), "cache_up": False}
    if cached is not None and seconds:
        return {**cached, "cache_up": True}
    data = _read(timezone.now())
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


def _read(now: datetime) -> dict:
    # On the primary: beats waiting in Redis reach it first (a replica then has them
    # once it has caught up).
    heartbeats.flush()
    return on_replica(lambda using: _compute(now, using))
