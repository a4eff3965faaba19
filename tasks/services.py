"""Multi-step task operations, shared by the API, the admin site and the sweep.

Single-task changes lock the row and `save()`, so the history signal records
them. Bulk changes (the sweep, admin actions) update with one statement and
write their history rows in bulk in the same transaction.
"""

import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import DateTimeField, UUIDField, Value
from django.utils import timezone

from nodes import heartbeats
from nodes.models import Node, liveness_cutoffs
from nodes.services import node_heartbeat
from taskmgmt.metrics import CLAIM_LATENCY, FAILURES, REASSIGNMENTS
from taskmgmt.sql import driver_rows, get_one, insert_select, select_one, update_rows, with_ids
from tasks.actor import current_actor
from tasks.models import (
    ALLOWED_AFTER_DEADLINE,
    OPEN_STATUSES,
    DeadlinePassed,
    FailureCause,
    HistoryAction,
    SweepRun,
    Task,
    TaskConflict,
    TaskHistory,
    TaskRuleError,
    TaskStatus,
    check_attempt,
    check_transition,
    fresh_deadline,
    validate_future,
    validate_node,
)

logger = logging.getLogger("taskmgmt.sweep")


class NotAssignee(TaskRuleError):
    status_code = 403
    title = "Forbidden"


def _validate(*, node=None, locked_at: datetime | None = None) -> None:
    errors = {}
    for field, value, validator in (
        ("assigned_node", node, validate_node),
        ("locked_at", locked_at, validate_future),
    ):
        if value is None:
            continue
        try:
            validator(value)
        except ValidationError as error:
            errors[field] = error.messages
    if errors:
        raise ValidationError(errors)


def _locked_task(task_id: UUID) -> Task:
    """The active task, locked until the transaction ends (Task.DoesNotExist if none)."""
    task = get_one(Task, for_update=True, id=task_id, active=True)
    if task is None:
        raise Task.DoesNotExist(f"No active task has the id {task_id}.")
    return task


# What a reassignment forgets: the last attempt's progress and result, not its checkpoint.
FORGOTTEN_ON_REASSIGN = {
    "failure_cause": "",
    "failure_reason": "",
    "result": None,
    "progress_percent": None,
    "progress_message": None,
    "progress_updated_at": None,
}
# `task_update`'s default for a field the request did not send: left as it is.
UNCHANGED = object()


@transaction.atomic
def task_create(
    *, name: str, details: str, assigned_node, locked_at: datetime, payload=None
) -> Task:
    _validate(node=assigned_node, locked_at=locked_at)
    task = Task(
        name=name,
        details=details,
        assigned_node=assigned_node,
        locked_at=locked_at,
        payload=payload,
    )
    task.full_clean()
    task.save()
    return task


@transaction.atomic
def task_update(
    *, task_id: UUID, name: str, details: str, assigned_node, locked_at: datetime, payload=UNCHANGED
) -> Task:
    """Edit a task's fields; only a pending task, since a node may already be at work.

    Without `payload` the task keeps its own: the original's clients never send one."""
    task = _locked_task(task_id)
    if task.status != TaskStatus.PENDING:
        raise TaskConflict(f"only a pending task can be edited; this task is {task.status}")
    _validate(node=assigned_node, locked_at=locked_at)
    task.name, task.details = name, details
    task.assigned_node, task.locked_at = assigned_node, locked_at
    if payload is not UNCHANGED:
        task.payload = payload
    task.full_clean()
    task.save()
    return task


@transaction.atomic
def task_assign(*, task_id: UUID, node, locked_at: datetime | None = None) -> Task:
    """Give a task to a node, back to pending, its failure forgotten.

    Without `locked_at` the deadline follows `fresh_deadline`: the original's
    documented `{taskId, nodeId}` call on a failed task, whose deadline has
    usually passed, must not hand the sweep a task to fail again at once.
    """
    task = _locked_task(task_id)
    if task.status == TaskStatus.COMPLETED:
        raise TaskConflict("a completed task cannot be reassigned")
    _validate(node=node, locked_at=locked_at)
    task.assigned_node = node
    task.status = TaskStatus.PENDING
    task.locked_at = locked_at or fresh_deadline(task.locked_at)
    for field, value in FORGOTTEN_ON_REASSIGN.items():
        setattr(task, field, value)
    task.save()
    transaction.on_commit(REASSIGNMENTS.labels("manual").inc)
    return task


@transaction.atomic
def task_change_status(
    *,
    task_id: UUID,
    node,
    status: str,
    reason: str = "",
    result=None,
    attempt: int | None = None,
) -> Task:
    """The assigned node advances its task. Row-locked, so concurrent requests
    produce one transition and one history row.

    Starting it counts an attempt; failing it records the node's `reason`; a
    final status stores the node's `result`. A report naming another `attempt`
    than the task's current one is stale (a start makes a new attempt, so the
    check does not apply to one).
    """
    task = _locked_task(task_id)
    if task.assigned_node_id != node.pk:
        raise NotAssignee("only the assigned node can change this task's status")
    if not (task.status == TaskStatus.PENDING and status == TaskStatus.IN_PROGRESS):
        check_attempt(task.attempts, attempt)
    if status == task.status:
        return task
    check_transition(task.status, status)
    if status not in ALLOWED_AFTER_DEADLINE and task.locked_at <= timezone.now():
        raise DeadlinePassed("task deadline has passed")
    if status == TaskStatus.IN_PROGRESS:
        waited = (timezone.now() - task.updated_at).total_seconds()
        transaction.on_commit(lambda: CLAIM_LATENCY.observe(waited))
    elif status == TaskStatus.FAILED:
        transaction.on_commit(FAILURES.labels(FailureCause.NODE_REPORTED).inc)
    task.status = status
    fields = ["status", "updated_at"]
    if status == TaskStatus.IN_PROGRESS:
        task.attempts += 1
        fields.append("attempts")
    elif status == TaskStatus.FAILED:
        task.failure_cause, task.failure_reason = FailureCause.NODE_REPORTED, reason
        fields += ["failure_cause", "failure_reason"]
    if status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
        task.result = result
        fields.append("result")
    task.save(update_fields=fields)
    return task


def task_report_progress(
    *,
    task_id: UUID,
    node,
    attempt: int | None = None,
    percent: float | None = None,
    message: str | None = None,
    checkpoint=UNCHANGED,
) -> None:
    """The assigned node reports how far its in-progress task has got.

    Only the latest report is kept: its percent and message replace the last
    ones, its checkpoint (when sent) the last checkpoint. Not an audit event,
    so no history row and no `updated_at`; and as cheap as a heartbeat, since
    a node may report every few seconds: one conditional UPDATE, and a read
    of why only when it matched nothing.
    """
    values = {
        "progress_percent": percent,
        "progress_message": message,
        "progress_updated_at": timezone.now(),
    }
    if checkpoint is not UNCHANGED:
        values["checkpoint"] = checkpoint
    where = {
        "id": task_id,
        "assigned_node": node.pk,
        "status": TaskStatus.IN_PROGRESS,
        "active": True,
    }
    if attempt is not None:
        where["attempts"] = attempt
    if update_rows(Task, values, **where):
        return
    row = select_one(Task, ("assigned_node_id", "status", "attempts"), id=task_id, active=True)
    if row is None:
        raise Task.DoesNotExist(f"No active task has the id {task_id}.")
    node_id, status, attempts = row
    if Task._meta.pk.to_python(node_id) != node.pk:
        raise NotAssignee("only the assigned node can report this task's progress")
    if status != TaskStatus.IN_PROGRESS:
        raise TaskConflict(f"only a task in progress takes progress; this task is {status}")
    check_attempt(attempts, attempt)
    raise TaskConflict("the task changed meanwhile; report again")


# A claim by a node whose stored stamp is younger than this stamps no beat: liveness
# counts in intervals of seconds, and that stamp trails the node's latest beat by
# at most the heartbeat flush interval.
CLAIM_STAMP_RESOLUTION = timedelta(seconds=2)


def task_claim(*, node, now: datetime | None = None) -> Task | None:
    """Start the node's next claimable task (`Task.objects.claimable_by`); None if none.

    A claim is a heartbeat too, stamped first and outside the claim's
    transaction: where the stamp is written at once (no Redis), the node's row
    lock would otherwise make its concurrent claims queue. A node whose
    `last_seen` (read with its token's user) is under CLAIM_STAMP_RESOLUTION
    old is not stamped again: a node claiming short tasks back to back would
    pay a beat per claim for nothing. SKIP LOCKED gives concurrent claims
    different tasks and passes over a task the sweep or an admin holds this
    instant.
    """
    now = now or timezone.now()
    if node.last_seen is None or now - node.last_seen >= CLAIM_STAMP_RESOLUTION:
        node_heartbeat(node_id=node.pk, now=now)
    with transaction.atomic():
        task = Task.objects.claimable_first(node, now)
        if task is None:
            return None
        waited = (now - task.updated_at).total_seconds()
        transaction.on_commit(lambda: CLAIM_LATENCY.observe(waited))
        task.status = TaskStatus.IN_PROGRESS
        task.attempts += 1
        task.save(update_fields=["status", "attempts", "updated_at"])
    return task


@transaction.atomic
def task_set_active(*, task: Task, active: bool) -> None:
    """Soft delete (active=False) hides a task everywhere; restore brings it back."""
    task.active = active
    task.save(update_fields=["active", "updated_at"])


@transaction.atomic
def tasks_set_active(*, task_ids: Iterable[UUID], active: bool) -> list[UUID]:
    """Soft delete or restore many tasks (an admin action), each with its history row.

    Returns the ids it changed: a task already in that state is left alone.
    """
    changing = list(
        Task.objects.filter(pk__in=list(task_ids), active=not active)
        .select_for_update()
        .values_list("id", flat=True)
    )
    if not changing:
        return []
    now = timezone.now()
    Task.objects.filter(pk__in=changing).update(active=active, updated_at=now)
    rows = [
        row
        for task_id in changing
        for row in TaskHistory.for_change(task_id, {"active": not active}, {"active": active})
    ]
    _bulk_record(rows, now=now)
    return changing


def _bulk_record(rows: list[TaskHistory], *, now: datetime) -> None:
    """Write the history rows of a bulk change, naming the acting user."""
    actor = current_actor()
    for row in rows:
        row.performed_by, row.created_at = actor, now
    TaskHistory.objects.bulk_create(rows)


def _lock_ids(tasks, *, limit: int | None = None) -> list:
    """Lock up to `limit` of `tasks`, in their order, skipping rows another transaction holds.

    The locks last until the caller's transaction ends, so nobody changes
    these tasks meanwhile (SQLite: its IMMEDIATE transactions run one at a
    time). The ids stay as the database sent them: they only go back to it,
    and the ORM's round trip through UUID objects cost a fifth of the sweep.
    """
    locked = driver_rows(tasks.select_for_update(skip_locked=True), "pk")[:limit]
    return [row.pk for row in locked]


def _fail(ids: list, *, actor, cause: str) -> int:
    """Fail the tasks with these `ids`, which the caller has locked, for `cause`, each
    with a history row naming `actor`: two statements whatever the count.

    They select by id alone: with any other condition SQLite's planner walks
    the deadline index past every expired task, for every batch.
    """
    # By the database's own values, not `pk__in` (see _lock_ids).
    batch = with_ids(Task.objects.order_by(), ids)
    now = timezone.now()
    _record_failures(batch, actor=actor, cause=cause, now=now)
    failed = batch.update(
        status=TaskStatus.FAILED, failure_cause=cause, failure_reason="", updated_at=now
    )
    transaction.on_commit(lambda: FAILURES.labels(cause).inc(failed))
    return failed


def _record_failures(tasks, *, actor, cause: str, now: datetime) -> None:
    """One `status_change` row per task of `tasks`, by one INSERT … SELECT.

    Django has no INSERT … SELECT; building the rows as model instances for
    `bulk_create` cost three quarters of the sweep's time.
    """
    rows = tasks.values_list(
        "id",
        Value(HistoryAction.STATUS_CHANGE),
        "status",
        Value(TaskStatus.FAILED),
        Value(actor.pk if actor else None, output_field=UUIDField()),
        Value(cause),
        Value(now, output_field=DateTimeField()),
    )
    insert_select(
        TaskHistory,
        ("task", "action", "from_value", "to_value", "performed_by", "cause", "created_at"),
        rows,
    )


@transaction.atomic
def tasks_fail(*, task_ids: Iterable[UUID]) -> int:
    """Fail the given tasks that are still open (an admin action)."""
    open_tasks = Task.objects.filter(pk__in=list(task_ids), active=True, status__in=OPEN_STATUSES)
    locked = _lock_ids(open_tasks.order_by())
    return _fail(locked, actor=current_actor(), cause=FailureCause.ADMIN) if locked else 0


class Reassigned(list):
    """The ids `tasks_reassign` changed; `new_deadlines`: how many of them got a new deadline
    (the one chosen, or a fresh one for a stale deadline), which its callers report."""

    new_deadlines = 0


@transaction.atomic
def tasks_reassign(
    *, task_ids: Iterable[UUID], node, locked_at: datetime | None = None
) -> Reassigned:
    """Give many tasks to one node, back to pending, as `task_assign` gives one.

    Completed and soft-deleted tasks are left alone; returns the ids it changed.
    """
    _validate(node=node, locked_at=locked_at)
    fields = ("assigned_node_id", "status", "locked_at")
    locked = list(
        Task.objects.filter(pk__in=list(task_ids), active=True)
        .exclude(status=TaskStatus.COMPLETED)
        .select_for_update()
        .values_list("id", *fields)
    )
    if not locked:
        return Reassigned()
    now = timezone.now()
    rows, moved_deadline, deadline = [], [], locked_at
    for task_id, *values in locked:
        before = dict(zip(fields, values, strict=True))
        after = {"assigned_node_id": node.pk, "status": TaskStatus.PENDING}
        new_deadline = locked_at or fresh_deadline(before["locked_at"], now)
        if new_deadline != before["locked_at"]:
            # One value for all of them: `locked_at`, or the same fresh deadline.
            deadline = after["locked_at"] = new_deadline
            moved_deadline.append(task_id)
        rows += TaskHistory.for_change(task_id, before, after)
    Task.objects.filter(pk__in=[task_id for task_id, *_ in locked]).update(
        assigned_node=node, status=TaskStatus.PENDING, updated_at=now, **FORGOTTEN_ON_REASSIGN
    )
    if moved_deadline:
        Task.objects.filter(pk__in=moved_deadline).update(locked_at=deadline)
    _bulk_record(rows, now=now)
    transaction.on_commit(lambda: REASSIGNMENTS.labels("manual").inc(len(locked)))
    changed = Reassigned(task_id for task_id, *_ in locked)
    changed.new_deadlines = len(moved_deadline)
    return changed


def tasks_expire(
    *,
    batch_size: int,
    now: datetime | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """The sweep: fail every open task whose deadline passed before `now`.

    One transaction per batch, so a crash leaves each task either untouched or
    failed with its row. SKIP LOCKED lets two sweeps share the work, and skips
    a task a node is changing right now; the next run takes it if still open.
    Its history rows name the system, whoever triggered the sweep.

    Batches follow the primary key, so a large backlog is read in the table's
    own order, once, instead of row by row all over it (docs/performance.md).
    """
    expired = Task.objects.expired(now or timezone.now())
    total, after = 0, None
    while True:
        remaining = expired.filter(pk__gt=after) if after else expired
        with transaction.atomic():
            ids = _lock_ids(remaining.order_by("pk"), limit=batch_size)
            failed = _fail(ids, actor=None, cause=FailureCause.DEADLINE) if ids else 0
        if not ids:
            return total
        total += failed
        after = ids[-1]
        if on_batch:
            on_batch(failed)


@dataclass(frozen=True)
class FailoverCounts:
    failed: int = 0  # in progress on a lost node (or out of attempts): failed, cause node_lost
    reassigned: int = 0  # given to an alive node as pending
    stranded: int = 0  # would have moved, but no node was alive to take them
    held: int = 0  # down nodes left alone: too many at once (FAILOVER_MAX_DOWN_SHARE)

    def __add__(self, other: "FailoverCounts") -> "FailoverCounts":
        return FailoverCounts(
            self.failed + other.failed,
            self.reassigned + other.reassigned,
            self.stranded + other.stranded,
            self.held + other.held,
        )


def tasks_fail_over(
    *,
    batch_size: int,
    now: datetime | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> FailoverCounts:
    """FAILOVER=reassign: move the open tasks of down nodes to alive ones.

    The expiry sweep's machinery: batches in primary-key order, one transaction
    each, SKIP LOCKED, so two hosts share the work and a task a node or an
    admin holds right now is left for the next run. An in-progress attempt
    fails (node_lost); then, below TASK_MAX_ATTEMPTS, the task goes pending
    to the least-loaded alive node with a fresh deadline; at the limit it
    stays failed for a human. Every row names the system, with cause node_lost.
    When more than FAILOVER_MAX_DOWN_SHARE of the recently alive nodes are down,
    nothing moves (`failover_held`).
    """
    now = now or timezone.now()
    heartbeats.flush()
    # A list, not a subquery: a locking read must not lock the users' rows,
    # which every heartbeat flush updates.
    down = list(Node.objects.down(now).values_list("pk", flat=True))
    if not down:
        return FailoverCounts()
    held, recent = failover_held(down, now=now)
    if held:
        logger.warning(
            "failover held: too many nodes down at once",
            extra={
                "event": "failover_held",
                "down_count": held,
                "recent_count": recent,
                "max_down_share": settings.FAILOVER_MAX_DOWN_SHARE,
            },
        )
        return FailoverCounts(held=held)
    lost = Task.objects.open_of(down)
    totals, after = FailoverCounts(), None
    while True:
        remaining = lost.filter(pk__gt=after) if after else lost
        # Beats answered since the last batch, for the check under the locks.
        heartbeats.flush()
        with transaction.atomic():
            rows = list(
                driver_rows(
                    remaining.order_by("pk").select_for_update(skip_locked=True),
                    "pk",
                    "assigned_node_id",
                    "status",
                    "attempts",
                    "locked_at",
                )[:batch_size]
            )
            counts = _fail_over(rows, now=now) if rows else FailoverCounts()
        if not rows:
            if totals.stranded:
                logger.warning(
                    "no alive node to take over tasks",
                    extra={"event": "failover_stranded", "stranded_count": totals.stranded},
                )
            return totals
        totals += counts
        after = rows[-1].pk
        if on_batch:
            on_batch(counts.failed)


def failover_held(down: list, *, now: datetime) -> tuple[int, int]:
    """(down, recent): how many of the recently alive nodes are in `down`, and how
    many there are, when that is more than FAILOVER_MAX_DOWN_SHARE of them (the
    run then fails none over); (0, 0) otherwise."""
    share = settings.FAILOVER_MAX_DOWN_SHARE
    if share >= 1:
        return 0, 0
    recent = set(Node.objects.recently_seen(now).values_list("pk", flat=True))
    newly_down = len(recent.intersection(down))
    if newly_down <= share * len(recent):
        return 0, 0
    return newly_down, len(recent)


def _fail_over(rows: list, *, now: datetime) -> FailoverCounts:
    """Fail over these locked tasks (driver rows) whose nodes are still down now."""
    # Read again under the locks: a node that beat since the run began (a claim
    # beats first) keeps its tasks, and so does one whose beat is still in Redis
    # (answered after the last flush).
    node_ids = {UUID(str(row.assigned_node_id)) for row in rows}
    still_down = set(Node.objects.down(now).filter(pk__in=node_ids).values_list("pk", flat=True))
    if still_down:
        _, down_before = liveness_cutoffs(now)
        beaten = heartbeats.pending(still_down)
        still_down = {
            node for node in still_down if beaten.get(node, heartbeats.EPOCH) < down_before
        }
    rows = [row for row in rows if UUID(str(row.assigned_node_id)) in still_down]
    max_attempts = settings.TASK_MAX_ATTEMPTS
    to_fail = [
        row.pk
        for row in rows
        if row.status == TaskStatus.IN_PROGRESS or row.attempts >= max_attempts
    ]
    failed = _fail(to_fail, actor=None, cause=FailureCause.NODE_LOST) if to_fail else 0
    to_move = [row for row in rows if row.attempts < max_attempts]
    if not to_move:
        return FailoverCounts(failed=failed)
    targets = _least_loaded_first(now=now)
    if not targets:
        return FailoverCounts(failed=failed, stranded=len(to_move))
    _move(to_move, targets=targets, now=now)
    transaction.on_commit(lambda: REASSIGNMENTS.labels("failover").inc(len(to_move)))
    return FailoverCounts(failed=failed, reassigned=len(to_move))


def _least_loaded_first(*, now: datetime) -> list:
    """A heap of (open task count, id text, id) over the alive active nodes."""
    alive = list(Node.objects.alive(now).values_list("pk", flat=True))
    loads = Task.objects.filter(assigned_node_id__in=alive).open_counts_by_node()
    heap = [(loads.get(pk, (0, 0))[0], str(pk), pk) for pk in alive]
    heapq.heapify(heap)
    return heap


def _move(rows: list, *, targets: list, now: datetime) -> None:
    """Give each task to the least-loaded target as pending, with a fresh deadline,
    and write its history rows: one UPDATE per target and deadline rule."""
    floor = fresh_deadline(now, now)
    # After the failure rows `_fail` just stamped, so history reads in order.
    moved_at = timezone.now()
    groups: dict[tuple, list] = {}
    history = []
    for row in rows:
        load, key, target = heapq.heappop(targets)
        heapq.heappush(targets, (load + 1, key, target))
        task_id, old_node = UUID(str(row.pk)), str(UUID(str(row.assigned_node_id)))
        deadline = row.locked_at
        if timezone.is_naive(deadline):  # the driver's values are UTC
            deadline = deadline.replace(tzinfo=UTC)
        new_deadline = fresh_deadline(deadline, now)
        late = new_deadline != deadline
        groups.setdefault((target, late), []).append(task_id)
        steps = [(HistoryAction.ASSIGNEE_CHANGE, old_node, str(target))]
        if row.status == TaskStatus.IN_PROGRESS:  # failed just before, in this transaction
            steps.append((HistoryAction.STATUS_CHANGE, TaskStatus.FAILED, TaskStatus.PENDING))
        if late:
            steps.append(
                (HistoryAction.DEADLINE_CHANGE, deadline.isoformat(), new_deadline.isoformat())
            )
        history += [
            TaskHistory(
                task_id=task_id,
                action=action,
                from_value=before,
                to_value=after,
                performed_by=None,
                cause=FailureCause.NODE_LOST,
                created_at=moved_at,
            )
            for action, before, after in steps
        ]
    for (target, late), task_ids in groups.items():
        changes = {"locked_at": floor} if late else {}
        Task.objects.filter(pk__in=task_ids).update(
            assigned_node_id=target,
            status=TaskStatus.PENDING,
            updated_at=moved_at,
            **FORGOTTEN_ON_REASSIGN,
            **changes,
        )
    TaskHistory.objects.bulk_create(history)


def sweep_run(
    *, batch_size: int, on_batch: Callable[[int], None] | None = None
) -> tuple[SweepRun, FailoverCounts]:
    """One run of the sweep, for `collect_failed` and the cron endpoint alike: expire,
    then (FAILOVER=reassign) fail over, and record the run in SweepRun."""
    started = timezone.now()
    expired = tasks_expire(batch_size=batch_size, now=started, on_batch=on_batch)
    failover = FailoverCounts()
    if settings.FAILOVER == "reassign":
        failover = tasks_fail_over(batch_size=batch_size, now=started, on_batch=on_batch)
    run = SweepRun.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        failed_count=expired + failover.failed,
        reassigned_count=failover.reassigned,
        failover_held_count=failover.held,
    )
    return run, failover
