"""Task reads: the rows the API serializes, and the grouped counts the dashboard,
the node page and /metrics show. Writes are in tasks.services; the scoping
querysets (claimable, active, page order) are on `Task.objects` (tasks.models).
"""

from datetime import datetime, timedelta
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS
from django.db.models import Count, Min, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce, ExtractHour
from django.db.models.utils import create_namedtuple_class

from taskmgmt.sql import Read, driver_rows, page_rows, read_together, select_one_read
from tasks.models import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    HistoryAction,
    SweepRun,
    SweepTotals,
    Task,
    TaskHistory,
    TaskStatus,
    deadline_floor,
)

# The columns a task's representation reads, in `TaskSerializer` order.
TASK_COLUMNS = (
    "id",
    "name",
    "details",
    "assigned_node_id",
    "status",
    "locked_at",
    "active",
    "created_at",
    "updated_at",
    "attempts",
    "failure_cause",
    "failure_reason",
    "payload",
    "result",
    "progress_percent",
    "progress_message",
    "progress_updated_at",
    "checkpoint",
    "priority",
    "node_selector",
    "pinned",
    "cancel_requested_at",
    "cancel_reason",
)
# The named row `task_rows` yields (Django caches one class per set of names).
TaskRow = create_namedtuple_class(*TASK_COLUMNS)


def task_rows(queryset, index: str | None = None):
    """The tasks' `TASK_COLUMNS` as `TaskRow`s of driver values, for lists, read
    through `index` where given (`Task.objects.page_index`)."""
    return driver_rows(queryset, *TASK_COLUMNS, index=index)


def task_page_rows(where: dict, *, after=None, limit=None, index=None) -> list[TaskRow]:
    """A newest-first keyset page of the tasks matching `where` as `TaskRow`s: those
    before `after` (a (created_at, id) position), at most `limit`, read through
    `index` (`Task.objects.page_index`). One plain SELECT (`taskmgmt.sql.page_rows`)."""
    rows = page_rows(Task, TASK_COLUMNS, after=after, limit=limit, index=index, **where)
    return list(map(TaskRow._make, rows))


def active_task_row(task_id: str) -> TaskRow | None:
    """The active task with this id as a `TaskRow`, or None (also for a malformed id).

    One plain SELECT (`taskmgmt.sql`): the detail endpoint is the hottest read.
    """
    read = active_task_read(task_id)
    return None if read is None else active_task_from(read_together(read)[0])


def active_task_read(task_id: str) -> Read | None:
    """`active_task_row`'s statement, to send with another read (the hot path sends it
    with the caller's user); None for a malformed id. `active_task_from` reads its rows."""
    try:
        task_id = UUID(task_id)
    except ValueError:
        return None
    return select_one_read(Task, TASK_COLUMNS, id=task_id, active=True)


def active_task_from(rows) -> TaskRow | None:
    return TaskRow._make(rows[0]) if rows else None


# --- Counts for the dashboard, the node page and /metrics ------------------------
# Each reads on `using`: the replica when taskmgmt.replica.on_replica passes it, so
# each returns finished results (lists, dicts), never a lazy queryset.


def open_by_node_and_status(now: datetime, using: str = DEFAULT_DB_ALIAS) -> list[dict]:
    """Open tasks by (status, node): how many, how many overdue and due within the hour,
    and the oldest `updated_at` (for in_progress, when the longest-running one started).
    One pass in the order of task_dashboard_open, index-only."""
    soon = now + timedelta(hours=1)
    return list(
        Task.objects.using(using)
        .filter(active=True, status__in=OPEN_STATUSES)
        .values("status", "assigned_node_id")
        .annotate(
            count=Count("pk"),
            overdue=Count("pk", filter=Q(locked_at__lt=now)),
            due_soon=Count("pk", filter=Q(locked_at__gte=now, locked_at__lt=soon)),
            oldest=Min("updated_at"),
        )
        .order_by()
    )


def finished_since(
    since: datetime, recent: datetime | None = None, using: str = DEFAULT_DB_ALIAS
) -> list[dict]:
    """Tasks that reached completed or failed since `since` (and are still there), by
    hour, status, cause and node, and how many of each since `recent` (a node's rate):
    one covering range on task_dashboard_done.

    Finished tasks pile up for ever; counting all of them is a scan of the whole
    table (0.8 s at a million), so the dashboard shows the window's."""
    return list(
        Task.objects.using(using)
        .filter(active=True, status__in=FINAL_STATUSES, updated_at__gte=since)
        # The hour of the day names the bucket: the window holds each once. Cheaper
        # than truncating each timestamp (half the query's time at a million tasks).
        .annotate(hour=ExtractHour("updated_at"))
        .values("hour", "status", "failure_cause", "assigned_node_id")
        .annotate(
            count=Count("pk"),
            recent=Count("pk", filter=Q(updated_at__gte=recent or since)),
        )
        .order_by()
    )


def node_status_counts(node, using: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    """{status: count} of the node's active tasks."""
    return dict(
        Task.objects.using(using)
        .filter(assigned_node=node, active=True)
        .values_list("status")
        .annotate(count=Count("pk"))
        .order_by()
    )


def node_finished_counts(node, since: datetime, using: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    """{completed/failed: count} of the node's active tasks that finished since `since`."""
    return dict(
        Task.objects.using(using)
        .filter(assigned_node=node, active=True, status__in=FINAL_STATUSES, updated_at__gte=since)
        .values_list("status")
        .annotate(count=Count("pk"))
        .order_by()
    )


def node_history(node, rows: int, using: str = DEFAULT_DB_ALIAS) -> list[TaskHistory]:
    """The node's latest history rows, newest first, with their task's name."""
    return list(
        TaskHistory.objects.using(using)
        .filter(performed_by=node)
        .select_related("task")
        .only("created_at", "action", "from_value", "to_value", "cause", "task__name")
        .order_by("-id")[:rows]
    )


def node_moved_away(node, rows: int):
    """What was done to the node: its tasks given to another node, by a person or the
    sweep, newest first."""
    return (
        TaskHistory.objects.filter(action=HistoryAction.ASSIGNEE_CHANGE, from_value=str(node.pk))
        .select_related("task", "performed_by")
        .only(
            "created_at",
            "to_value",
            "cause",
            "task__name",
            "performed_by__name",
            "performed_by__email",
        )
        .order_by("-id")[:rows]
    )


def node_open_task_ids(node):
    """The ids of the node's active open tasks (what its page's reassign moves)."""
    return Task.objects.filter(
        assigned_node=node, active=True, status__in=OPEN_STATUSES
    ).values_list("pk", flat=True)


def reassign_preview(tasks, now: datetime) -> dict[str, int]:
    """What `tasks_reassign` without a chosen deadline would do to `tasks`, in one query:
    how many move (in progress among them) and how many stale deadlines it renews."""
    movable = tasks.filter(active=True).exclude(status=TaskStatus.COMPLETED).order_by()
    return movable.aggregate(
        moving=Count("pk"),
        in_progress=Count("pk", filter=Q(status=TaskStatus.IN_PROGRESS)),
        stale=Count("pk", filter=Q(locked_at__lt=deadline_floor(now))),
    )


def last_sweep(using: str = DEFAULT_DB_ALIAS) -> SweepRun | None:
    return SweepRun.objects.using(using).order_by("-started_at").first()


def last_stranded_count() -> int | None:
    """How many tasks of down nodes the last recorded sweep run left in place (None: no
    run, or one from before the count was kept)."""
    return SweepRun.objects.order_by("-started_at").values_list("stranded_count", flat=True).first()


def sweep_moves_since(since: datetime, using: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    """Tasks the sweep moved to other nodes since `since`, by cause (its runs' own counts:
    indexed, where counting history rows would scan the history); `unknown` for runs
    from before causes were kept."""
    return (
        SweepRun.objects.using(using)
        .filter(started_at__gte=since)
        .aggregate(
            node_lost=Coalesce(Sum("node_lost_moved"), 0),
            drained=Coalesce(Sum("drained_moved"), 0),
            unknown=Coalesce(Sum("reassigned_count", filter=Q(node_lost_moved__isnull=True)), 0),
        )
    )


def sweep_totals(using: str = DEFAULT_DB_ALIAS) -> dict:
    """Runs, failed, reassigned and cancelled tasks, and runs that held the failover,
    over every sweep run ever recorded (SweepTotals: runs let go still count)."""
    row = SweepTotals.objects.using(using).filter(pk=SweepTotals.ROW).first()
    fields = ("runs", "failed", "reassigned", "cancelled", "held")
    return {field: getattr(row, field) if row else 0 for field in fields}


def cancel_requests_waiting(now: datetime) -> tuple[int, float | None]:
    """How many in-progress tasks wait for their node to acknowledge a cancel request,
    and the oldest request's age in seconds (None if none): /metrics shows both."""
    waiting = Task.objects.filter(
        active=True, status=TaskStatus.IN_PROGRESS, cancel_requested_at__isnull=False
    ).aggregate(count=Count("pk"), oldest=Min("cancel_requested_at"))
    oldest = waiting["oldest"]
    return waiting["count"], None if oldest is None else (now - oldest).total_seconds()


def cancel_requests_by_node() -> dict:
    """Annotations for a node queryset: `cancel_waiting` (its in-progress tasks whose
    cancel request is unanswered) and `cancel_oldest` (the oldest such request), as
    subqueries of the node list's one query: each reads the node's few in-progress rows."""
    waiting = Task.objects.filter(
        assigned_node=OuterRef("pk"),
        status=TaskStatus.IN_PROGRESS,
        active=True,
        cancel_requested_at__isnull=False,
    ).order_by()
    return {
        "cancel_waiting": Subquery(
            waiting.values("assigned_node").annotate(n=Count("pk")).values("n")[:1]
        ),
        "cancel_oldest": Subquery(
            waiting.order_by("cancel_requested_at").values("cancel_requested_at")[:1]
        ),
    }
