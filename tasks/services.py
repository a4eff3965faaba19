"""Multi-step task operations, shared by the API, the admin site and the sweep.

Single-task changes lock the row and `save()`, so the history signal records
them. Bulk changes (the sweep, admin actions) update with one statement and
write their history rows in bulk in the same transaction.
"""

import functools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import DateTimeField, Exists, F, Max, OuterRef, UUIDField, Value
from django.utils import timezone

from accounts.models import Role, User
from nodes import heartbeats
from nodes.models import (
    Node,
    NodeCordoned,
    check_schedulable,
    labels_by_node,
    labels_match,
    liveness_cutoffs,
    lock_nodes,
)
from nodes.services import node_heartbeat
from taskmgmt.metrics import (
    CANCELLATIONS,
    CLAIM_LATENCY,
    FAILURES,
    PROGRESS_REPORTS,
    REASSIGNMENTS,
)
from taskmgmt.sql import (
    driver_rows,
    get_one,
    insert_select,
    update_then_select,
    with_ids,
)
from tasks.actor import current_actor
from tasks.models import (
    ALLOWED_AFTER_DEADLINE,
    INACTIVE_NODE,
    LATE_SUCCESS_CAUSES,
    OPEN_STATUSES,
    PRIORITY_DEFAULT,
    DeadlinePassed,
    FailureCause,
    HistoryAction,
    SweepRun,
    SweepTotals,
    Task,
    TaskConflict,
    TaskHistory,
    TaskRuleError,
    TaskStatus,
    check_attempt,
    check_transition,
    deadline_text,
    fresh_deadline,
    is_late_success,
    validate_future,
    validate_node,
)
from tasks.placement import (
    NODE_DOES_NOT_MATCH,
    NoNodeMatches,
    Placement,
    broadcast_targets,
    check_node_matches,
    no_match_detail,
    node_for,
)
from tasks.selectors import TASK_COLUMNS, TaskRow

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


def _check_takes_work(node, *, field: str = "assigned_node") -> None:
    """`check_schedulable`, under the node's lock (`lock_nodes`). A node deactivated since
    the request read it is the 400 that request gets a moment later (`validate_node`, on
    `field`), not a 409 "node is cordoned", which neither order answers."""
    try:
        check_schedulable(node.pk)
    except NodeCordoned:
        node.refresh_from_db(fields=["role", "is_active"])
        try:
            validate_node(node)
        except ValidationError as error:
            raise ValidationError({field: error.messages}) from None
        raise


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
    "cancel_requested_at": None,
    "cancel_reason": None,
}
# `task_update`'s default for a field the request did not send: left as it is.
UNCHANGED = object()


def _beats_written_first(needed: Callable[..., bool] = lambda **_: True):
    """`transaction.atomic` for a write that places work, the beats waiting in Redis
    written first (`heartbeats.flush`, its own short transactions) when `needed(**kwargs)`
    says placement will read liveness; placement inside then reads without flushing.

    Flushed inside the write's transaction, the UPDATE of `last_seen` kept each beating
    node's row locked until the write committed, taken before `lock_nodes` and out of its
    key order: a broadcast (or a drain, a label change) locking those nodes in key order
    held a lower one and waited for the beating one, while the write waited for the lower
    one: MariaDB's deadlock (1213), a 503 to one of two admins. Called inside a
    transaction already (the admin site's add form), the flush is in it as before."""

    def decorate(function):
        atomic = transaction.atomic(function)

        @functools.wraps(function)
        def run(**kwargs):
            if needed(**kwargs):
                heartbeats.flush()
            return atomic(**kwargs)

        return run

    return decorate


@_beats_written_first(lambda assigned_node=None, **_: assigned_node is None)
def task_create(
    *,
    name: str,
    details: str,
    assigned_node=None,
    locked_at: datetime,
    payload=None,
    node_selector: dict | None = None,
    priority: int = PRIORITY_DEFAULT,
) -> Task:
    """A new task for `assigned_node`, or, without one, for the node placement picks
    among those matching `node_selector` (tasks.placement); with both, the node must match."""
    node_selector = node_selector or None  # {} matches every node: no constraint to keep
    if assigned_node is None:
        _validate(locked_at=locked_at)
        assigned_node = _placed_node(node_selector, locked_at=locked_at)
    else:
        _validate(node=assigned_node, locked_at=locked_at)
        lock_nodes([assigned_node.pk])  # a label change or cordon takes it too
        check_node_matches(assigned_node, node_selector)  # the 400 before the 409
        _check_takes_work(assigned_node)
    task = Task(
        name=name,
        details=details,
        assigned_node=assigned_node,
        locked_at=locked_at,
        payload=payload,
        node_selector=node_selector,
        priority=priority,
    )
    task.full_clean()
    task.save()
    return task


# How often placement picks again when the node it picked no longer fits once locked.
PLACEMENT_TRIES = 3


def _placed_node(selector: dict | None, *, locked_at: datetime) -> Node:
    """The node placement picks for a new task, row-locked (`lock_nodes`) and checked again
    under the lock. The pick reads the fleet unlocked: a cordon, drain or label change
    committed between the pick and the lock made the node unfit, and the task went to a
    draining node, or to one its selector no longer matches. Then placement picks again;
    under READ COMMITTED it now sees the change (its writer held the lock until commit)."""
    for _ in range(PLACEMENT_TRIES):
        node = node_for(selector, now=timezone.now(), deadline=locked_at, flush=False)
        lock_nodes([node.pk])
        if _still_fits(node.pk, selector):
            return node
    raise NoNodeMatches("no node matches: the matching nodes kept changing; try again")


def _still_fits(node_id, selector: dict | None) -> bool:
    """Whether the node is schedulable and matches `selector` (under its lock)."""
    return _fits(_schedulable_labels([node_id]), node_id, selector)


def _fits(schedulable_labels: dict, node_id, selector: dict | None) -> bool:
    """Whether the node is among `_schedulable_labels`' and matches `selector`."""
    return node_id in schedulable_labels and labels_match(schedulable_labels[node_id], selector)


def _schedulable_labels(node_ids, *, locked: bool = False) -> dict:
    """{node id: labels} of those of the nodes that are schedulable now, in one query;
    `locked`: take their row locks first."""
    if locked:
        lock_nodes(node_ids)
    rows = Node.objects.schedulable(timezone.now()).filter(pk__in=list(node_ids)).with_labels()
    return dict(rows.values_list("pk", "label_set"))


def _bulk_rows(items: list[dict], *, now: datetime) -> list[Task]:
    """A new Task per bulk item, on its named node or the one placement picks."""
    placement = None
    rows = []
    for index, item in enumerate(items):
        selector = item.get("node_selector") or None
        node_id = item.get("assigned_node")
        if node_id is None:
            placement = placement or Placement(now=timezone.now(), flush=False)
            node_id = placement.pick(selector, item["locked_at"])
            if node_id is None:
                raise NoNodeMatches(f"no node matches tasks[{index}]'s nodeSelector")
        rows.append(
            Task(
                name=item["name"],
                details=item["details"],
                assigned_node_id=node_id,
                locked_at=item["locked_at"],
                payload=item.get("payload"),
                node_selector=selector,
                priority=item.get("priority", PRIORITY_DEFAULT),
                created_at=now,
            )
        )
    return rows


def _placed_again(items: list[dict], rows: list[Task], fit: dict) -> bool:
    """Whether placement must pick again: a placed item's node is no longer schedulable
    or no longer matches its selector (`fit`: `_schedulable_labels` under the locks).
    A named node that changed so is the item's 409 or 400, as checked before the locks:
    one deactivated meanwhile is the 400 naming each item that names it."""
    unfit = {row.assigned_node_id for row in rows if row.assigned_node_id not in fit}
    named_unfit = {item.get("assigned_node") for item in items} & unfit
    inactive = (
        set(User.objects.filter(pk__in=named_unfit, is_active=False).values_list("pk", flat=True))
        if named_unfit
        else set()
    )
    if inactive:
        raise ValidationError(
            {
                f"tasks[{index}].assignedNode": [INACTIVE_NODE]
                for index, item in enumerate(items)
                if item.get("assigned_node") in inactive
            }
        )
    again = False
    for index, (item, row) in enumerate(zip(items, rows, strict=True)):
        labels = fit.get(row.assigned_node_id)
        named = item.get("assigned_node") is not None
        if labels is None:
            if named:
                raise NodeCordoned(
                    f"node is cordoned: tasks[{index}]'s node takes no new tasks until uncordoned"
                )
            again = True
        elif not labels_match(labels, row.node_selector):
            if named:
                raise ValidationError({f"tasks[{index}].assignedNode": [NODE_DOES_NOT_MATCH]})
            again = True
    return again


@_beats_written_first(lambda tasks, **_: any(item.get("assigned_node") is None for item in tasks))
def tasks_create_bulk(*, tasks: list[dict], errors: list[dict] | None = None) -> list[Task]:
    """Create many tasks at once, all or none: each item is `task_create`'s arguments,
    `assigned_node` a node's id or None (then placement picks, as for one task).
    `errors`: each item's own errors found before (`{"tasks[3].lockedAt": [...]}`, `{}`
    if none); a bad item's node is checked all the same, so one 400 names them all.

    Set-based: one query for the named nodes, one for the fleet when placement is
    needed, then the tasks and their `initial_assign` rows in bulk INSERTs; no signal
    fires for bulk inserts, so the rows are written here, in the same transaction.
    Bad items are a ValidationError naming each one's index and field (`tasks[3].…`);
    an item naming a node that takes no new work (`check_schedulable`) is a 409."""
    now = timezone.now()
    named = {item["assigned_node"] for item in tasks if item.get("assigned_node") is not None}
    # Whether each may take new work is `check_schedulable`'s rule, read in the same query.
    schedulable = Node.objects.schedulable(now).filter(pk=OuterRef("pk"))
    nodes = {
        pk: (role, active, free)
        for pk, role, active, free in User.objects.filter(pk__in=named)
        .annotate(schedulable=Exists(schedulable))
        .values_list("pk", "role", "is_active", "schedulable")
    }
    labels = labels_by_node(named) if named else {}
    found, cordoned = {}, None
    for index, item in enumerate(tasks):
        if errors:
            found.update(errors[index])
        node_id = item.get("assigned_node")
        if node_id is None:
            continue
        problem = _node_problem(nodes.get(node_id), labels.get(node_id, {}), item)
        if problem:
            found[f"tasks[{index}].assignedNode"] = [problem]
        elif cordoned is None and not nodes[node_id][2]:
            cordoned = index
    if found:
        raise ValidationError(found)
    if cordoned is not None:  # after the 400s, as for one task
        raise NodeCordoned(
            f"node is cordoned: tasks[{cordoned}]'s assignedNode takes no new tasks "
            "until uncordoned"
        )
    # Placed items go where placement picks; every item's node is then checked again
    # under the nodes' locks, all taken at once (lock_nodes), as for one task.
    for _ in range(PLACEMENT_TRIES):
        rows = _bulk_rows(tasks, now=now)
        fit = _schedulable_labels({row.assigned_node_id for row in rows}, locked=True)
        if not _placed_again(tasks, rows, fit):
            break
    else:
        raise NoNodeMatches("no node matches: the matching nodes kept changing; try again")
    return _insert_new(rows, now=now)


@_beats_written_first()
def tasks_broadcast(
    *,
    name: str,
    details: str,
    locked_at: datetime,
    payload=None,
    node_selector: dict | None = None,
    priority: int = PRIORITY_DEFAULT,
) -> list[Task]:
    """One task for every active schedulable node matching `node_selector` (every such
    node when empty), whatever its liveness, by name: 409 when none does. Each keeps the
    selector and is pinned to its node: failover fails it rather than hand a node a
    second one of the broadcast. One transaction, bulk INSERTs (as tasks_create_bulk)."""
    _validate(locked_at=locked_at)
    selector = node_selector or None
    now = timezone.now()
    targets = broadcast_targets(selector, now=now, flush=False)
    # Read again under their locks (lock_nodes): a node cordoned meanwhile gets none, and
    # one whose labels now match is locked too before it gets one.
    locked = set()
    for _ in range(PLACEMENT_TRIES):
        found = {node.id for node in targets}
        if found <= locked:
            break
        lock_nodes(found - locked)
        locked |= found
        targets = broadcast_targets(selector, now=timezone.now(), flush=False)
    else:
        raise NoNodeMatches("no node matches: the matching nodes kept changing; try again")
    if not targets:
        # Without a selector there were no labels to have: every node is unschedulable.
        labels = "schedulable node has the nodeSelector's labels"
        raise NoNodeMatches(f"no node matches: no {labels if selector else 'node is schedulable'}")
    tasks = [
        Task(
            name=name,
            details=details,
            assigned_node_id=node.id,
            locked_at=locked_at,
            payload=payload,
            node_selector=selector,
            priority=priority,
            pinned=True,
            created_at=now,
        )
        for node in sorted(targets, key=lambda node: node.key)
    ]
    return _insert_new(tasks, now=now)


def _node_problem(node: tuple | None, labels: dict, item: dict) -> str | None:
    """Why a bulk item may not name this node (its (role, is_active, schedulable), None if
    unknown); a node that may not take new work now is a 409, not a bad item."""
    if node is None:
        return "No user has this id."
    role, active, _ = node
    if role != Role.NODE:
        return "Tasks can only be assigned to a node, not an admin."
    if not active:
        return INACTIVE_NODE
    if not labels_match(labels, item.get("node_selector")):
        return NODE_DOES_NOT_MATCH
    return None


def _insert_new(tasks: list[Task], *, now: datetime) -> list[Task]:
    """INSERT new tasks and their `initial_assign` rows, by the acting user, in bulk."""
    for batch in _insert_batches(tasks):
        Task.objects.bulk_create(batch, batch_size=BULK_INSERT_BATCH)
    actor = current_actor()
    TaskHistory.objects.bulk_create(
        [
            TaskHistory(
                task_id=task.pk,
                action=HistoryAction.INITIAL_ASSIGN,
                to_value=str(task.assigned_node_id),
                node_id=task.assigned_node_id,
                performed_by=actor,
                created_at=now,
            )
            for task in tasks
        ],
        batch_size=BULK_INSERT_BATCH,
    )
    for task in tasks:
        task.remember_saved_values()
    return tasks


# Rows per INSERT of a bulk create: within SQLite's bound parameters, few round trips.
BULK_INSERT_BATCH = 500
# Bytes of the tasks' text per INSERT: escaped for SQL it may double, and one statement
# must fit MariaDB's max_allowed_packet (16 MiB by default).
BULK_INSERT_BYTES = 4 * 1024 * 1024


def _insert_batches(tasks: list[Task]):
    """`tasks` in runs of at most BULK_INSERT_BYTES of text (name, details, payload and
    selector), each run at least one task."""
    start, size = 0, 0
    for index, task in enumerate(tasks):
        text = len(task.name) + len(task.details)
        for value in (task.payload, task.node_selector):
            if value is not None:
                text += len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size and size + text > BULK_INSERT_BYTES:
            yield tasks[start:index]
            start, size = index, 0
        size += text
    yield tasks[start:]


@transaction.atomic
def task_update(
    *,
    task_id: UUID,
    name: str,
    details: str,
    assigned_node,
    locked_at: datetime,
    payload=UNCHANGED,
    node_selector=UNCHANGED,
    priority=UNCHANGED,
) -> Task:
    """Edit a task's fields; only a pending task, since a node may already be at work.

    Without `payload`, `node_selector` or `priority` the task keeps its own: the
    original's clients never send them. A node or selector the edit changes must match."""
    task = _locked_task(task_id)
    if task.status != TaskStatus.PENDING:
        raise TaskConflict(f"only a pending task can be edited; this task is {task.status}")
    _validate(node=assigned_node, locked_at=locked_at)
    new_selector = node_selector is not UNCHANGED and (node_selector or None) != task.node_selector
    if new_selector:
        task.node_selector = node_selector or None
    new_node = assigned_node.pk != task.assigned_node_id
    if new_node:
        lock_nodes([assigned_node.pk])  # a label change or cordon takes it too
    if new_node or new_selector:
        # Only a mismatch the edit makes: a label change (or an admin's assign) may have
        # left the task's node unmatched, and an edit of its name must not be refused.
        check_node_matches(assigned_node, task.node_selector)  # the 400 before the 409
    if new_node:
        _check_takes_work(assigned_node)
        # Given to another node, pending: a manual reassignment, as through assign.
        transaction.on_commit(REASSIGNMENTS.labels("manual").inc)
    task.name, task.details = name, details
    task.assigned_node, task.locked_at = assigned_node, locked_at
    if payload is not UNCHANGED:
        task.payload = payload
    if priority is not UNCHANGED:
        task.priority = priority
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
    lock_nodes([node.pk])
    _check_takes_work(node, field="nodeId")
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
    late = (
        task.status == TaskStatus.FAILED
        and task.failure_cause in LATE_SUCCESS_CAUSES
        and _failed_while_running(task)
    )
    if not (late and is_late_success(task, status, attempt)):
        # A node acknowledges a cancel; only an admin decides one (task_cancel).
        check_transition(
            task.status,
            status,
            cancel_requested=task.cancel_requested_at is not None,
            late_success_attempt=task.attempts if late else None,
        )
    if status not in ALLOWED_AFTER_DEADLINE and task.locked_at <= timezone.now():
        raise DeadlinePassed("task deadline has passed")
    if status == TaskStatus.IN_PROGRESS:
        waited = (timezone.now() - task.updated_at).total_seconds()
        transaction.on_commit(lambda: CLAIM_LATENCY.observe(waited))
    elif status == TaskStatus.FAILED:
        transaction.on_commit(FAILURES.labels(FailureCause.NODE_REPORTED).inc)
    elif status == TaskStatus.CANCELLED:
        transaction.on_commit(CANCELLATIONS.labels("acknowledged").inc)
    task.status = status
    fields = ["status", "updated_at"]
    if status == TaskStatus.IN_PROGRESS:
        task.attempts += 1
        fields.append("attempts")
    elif status == TaskStatus.FAILED:
        task.failure_cause, task.failure_reason = FailureCause.NODE_REPORTED, reason
        fields += ["failure_cause", "failure_reason"]
    if status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        task.result = result
        fields.append("result")
    task.save(update_fields=fields)
    return task


def _failed_while_running(task: Task) -> bool:
    """Whether the task's failure ended a running attempt (its last change to failed came
    from in_progress). Failover also fails pending tasks (pinned ones, say): nothing ran
    them, so no node's completed can be their late success."""
    return (
        task.history.filter(action=HistoryAction.STATUS_CHANGE, to_value=TaskStatus.FAILED)
        .order_by("-id")
        .values_list("from_value", flat=True)
        .first()
        == TaskStatus.IN_PROGRESS
    )


@transaction.atomic
def task_cancel(*, task_id: UUID, reason: str = "") -> Task:
    """An admin cancels a task: a pending one at once; an in-progress one gets a cancel
    request its node learns from its heartbeat answers and acknowledges (or the sweep
    ends it after CANCEL_GRACE_SECONDS). Row-locked, so it races a claim, a completion
    or the sweep to exactly one outcome. A repeat while the request stands changes nothing.
    """
    task = _locked_task(task_id)
    if task.status not in OPEN_STATUSES:
        raise TaskConflict(f"a {task.status} task cannot be cancelled")
    if task.cancel_requested_at is not None:
        return task
    if task.status == TaskStatus.PENDING:
        check_transition(task.status, TaskStatus.CANCELLED, by_admin=True)
    now = timezone.now()
    TaskHistory.objects.create(
        task=task,
        action=HistoryAction.CANCEL_REQUEST,
        from_value=task.status,
        to_value=reason or None,  # whole: the history row is the audit's copy
        node_id=task.assigned_node_id,
        performed_by=current_actor(),
        created_at=now,
    )
    task.cancel_requested_at, task.cancel_reason = now, reason or None
    # A running task keeps its updated_at: it says since when the task runs (the task
    # page, the dashboard's oldest in progress); the request has its own time.
    fields = ["cancel_requested_at", "cancel_reason"]
    if task.status == TaskStatus.PENDING:
        task.status = TaskStatus.CANCELLED
        fields += ["status", "updated_at"]
    task.save(update_fields=fields)
    if task.status == TaskStatus.CANCELLED:
        transaction.on_commit(CANCELLATIONS.labels("pending").inc)
    return task


def task_report_progress(
    *,
    task_id: UUID,
    node,
    attempt: int | None = None,
    percent: float | None = None,
    message: str | None = None,
    checkpoint=UNCHANGED,
) -> TaskRow:
    """The assigned node reports how far its in-progress task has got; the task
    after the report, as a `TaskRow` (the answer's shape).

    Only the latest report is kept: its percent and message replace the last
    ones, its checkpoint (when sent) the last checkpoint. Not an audit event,
    so no history row and no `updated_at`; and as cheap as a heartbeat, since
    a node may report every few seconds: one conditional UPDATE and the task's
    read, in one round trip on MariaDB; the read also says why when the UPDATE
    matched nothing.
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
    updated, row = update_then_select(
        Task, values, TASK_COLUMNS, select_where={"id": task_id, "active": True}, **where
    )
    if row is None:
        raise Task.DoesNotExist(f"No active task has the id {task_id}.")
    task = TaskRow._make(row)
    if updated:
        PROGRESS_REPORTS.inc()  # autocommit: the report is stored
        return task
    if Task._meta.pk.to_python(task.assigned_node_id) != node.pk:
        raise NotAssignee("only the assigned node can report this task's progress")
    if task.status != TaskStatus.IN_PROGRESS:
        raise TaskConflict(f"only a task in progress takes progress; this task is {task.status}")
    check_attempt(task.attempts, attempt)
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


class Cancels(NamedTuple):
    """What `tasks_cancel` did: pending tasks cancelled, running ones asked to stop (or
    found asked already), which the admin reports apart: only the first are cancelled."""

    cancelled: int
    asked: int


def tasks_cancel(*, task_ids: Iterable[UUID], reason: str = "") -> Cancels:
    """Cancel many tasks (an admin action), each as `task_cancel` does, in its own
    transaction: a task finished meanwhile is skipped."""
    cancelled = asked = 0
    for task_id in list(task_ids):
        try:
            task = task_cancel(task_id=task_id, reason=reason)
        except (Task.DoesNotExist, TaskConflict):
            continue
        if task.status == TaskStatus.CANCELLED:
            cancelled += 1
        else:
            asked += 1
    return Cancels(cancelled, asked)


@transaction.atomic
def task_set_active(*, task_id: UUID, active: bool) -> Task:
    """Soft delete (active=False) hides a task everywhere; restore brings it back.

    Row-locked, so of two concurrent deletes one writes the row and its history and
    the other finds no such task (Task.DoesNotExist), as the next request would.
    """
    task = Task.objects.select_for_update().filter(pk=task_id, active=not active).first()
    if task is None:
        raise Task.DoesNotExist(f"No task {task_id} is {'deleted' if active else 'active'}.")
    task.active = active
    task.save(update_fields=["active", "updated_at"])
    return task


@transaction.atomic
def tasks_set_active(*, task_ids: Iterable[UUID], active: bool) -> list[UUID]:
    """Soft delete or restore many tasks (an admin action), each with its history row.

    Returns the ids it changed: a task already in that state is left alone.
    """
    locked = list(
        Task.objects.filter(pk__in=list(task_ids), active=not active)
        .select_for_update()
        .values_list("id", "assigned_node_id")
    )
    if not locked:
        return []
    changing = [task_id for task_id, _ in locked]
    now = timezone.now()
    Task.objects.filter(pk__in=changing).update(active=active, updated_at=now)
    rows = [
        row
        for task_id, node_id in locked
        for row in TaskHistory.for_change(
            task_id, {"active": not active}, {"active": active}, node_id=node_id
        )
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


def _fail(
    ids: list, *, actor, cause: str, reason: str = "", status: str = TaskStatus.FAILED
) -> int:
    """Fail the tasks with these `ids`, which the caller has locked, for `cause` (and
    `reason`, the task's failureReason), each with a history row naming `actor`: two
    statements whatever the count. With `status=cancelled`, the same for the sweep's
    end of an unanswered cancel request.

    They select by id alone: with any other condition SQLite's planner walks
    the deadline index past every expired task, for every batch.
    """
    # By the database's own values, not `pk__in` (see _lock_ids).
    batch = with_ids(Task.objects.order_by(), ids)
    now = timezone.now()
    _record_failures(batch, actor=actor, cause=cause, now=now, status=status)
    failed = batch.update(status=status, failure_cause=cause, failure_reason=reason, updated_at=now)
    if status == TaskStatus.FAILED:
        transaction.on_commit(lambda: FAILURES.labels(cause).inc(failed))
    else:
        transaction.on_commit(lambda: CANCELLATIONS.labels("timeout").inc(failed))
    return failed


def _record_failures(
    tasks, *, actor, cause: str, now: datetime, status: str = TaskStatus.FAILED
) -> None:
    """One `status_change` row per task of `tasks`, by one INSERT … SELECT.

    Django has no INSERT … SELECT; building the rows as model instances for
    `bulk_create` cost three quarters of the sweep's time.
    """
    rows = tasks.values_list(
        "id",
        Value(HistoryAction.STATUS_CHANGE),
        "status",
        Value(status),
        Value(actor.pk if actor else None, output_field=UUIDField()),
        Value(cause),
        Value(now, output_field=DateTimeField()),
        "assigned_node",
    )
    insert_select(
        TaskHistory,
        ("task", "action", "from_value", "to_value", "performed_by", "cause", "created_at", "node"),
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
    *, task_ids: Iterable[UUID], node, locked_at: datetime | None = None, from_node=None
) -> Reassigned:
    """Give many tasks to one node, back to pending, as `task_assign` gives one.

    Completed and soft-deleted tasks are left alone; returns the ids it changed.
    `from_node`: only those still open on that node under their locks (the node page's
    "its open tasks", read before: one moved off it and started elsewhere meanwhile
    stays where it went).
    """
    _validate(node=node, locked_at=locked_at)
    fields = ("assigned_node_id", "status", "locked_at")
    ids = list(task_ids)
    # Locked by primary key alone, in key order, then read again (READ COMMITTED). A
    # locking read filtered on node and status goes through an index of them on a real
    # table, index record before row, while a cancel or a status change holding a row
    # waited for that record: MariaDB's deadlock, a 503.
    list(Task.objects.filter(pk__in=ids).order_by("pk").select_for_update().values("pk"))
    tasks = Task.objects.filter(pk__in=ids, active=True)
    if from_node is not None:
        tasks = tasks.filter(assigned_node=from_node, status__in=OPEN_STATUSES)
    locked = list(tasks.exclude(status=TaskStatus.COMPLETED).values_list("id", *fields))
    # The node's lock after the tasks', in the order a drain's move takes them.
    lock_nodes([node.pk])
    _check_takes_work(node)
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
        rows += TaskHistory.for_change(task_id, before, after, node_id=node.pk)
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


@_beats_written_first()
def tasks_reassign_by_selector(
    *, task_ids: Iterable[UUID], selector: dict, locked_at: datetime | None = None
) -> list[UUID]:
    """Give many tasks to the nodes matching `selector`, each to the least-loaded one
    placement picks (tasks.placement), as `tasks_reassign` gives them to one node.

    409 (NoNodeMatches) when no node matches; completed and soft-deleted tasks are left
    alone. Returns the ids it changed."""
    # Every lock in one order, the tasks' before the nodes' (as `tasks_reassign` takes
    # them): taken group by group, two runs over shared tasks or nodes could deadlock.
    movable = list(
        Task.objects.filter(pk__in=list(task_ids), active=True)
        .exclude(status=TaskStatus.COMPLETED)
        .order_by("pk")
        .select_for_update()
        .values_list("pk", "locked_at")
    )
    if not movable:
        return []
    for _ in range(PLACEMENT_TRIES):
        now = timezone.now()
        placement = Placement(now=now, flush=False)
        by_node: dict[UUID, list[UUID]] = {}
        for task_id, deadline in movable:
            # The deadline it will have: `locked_at`, or its own kept fresh (tasks_reassign).
            node_id = placement.pick(selector, locked_at or fresh_deadline(deadline, now))
            if node_id is None:
                detail = no_match_detail(placement, selector, "these labels")
                raise NoNodeMatches(f"no node matches: {detail}")
            by_node.setdefault(node_id, []).append(task_id)
        # Checked again under the nodes' locks, as a placed create is (`_placed_node`).
        fit = _schedulable_labels(by_node, locked=True)
        if all(_fits(fit, node_id, selector) for node_id in by_node):
            break
    else:
        raise NoNodeMatches("no node matches: the matching nodes kept changing; try again")
    nodes = Node.objects.in_bulk(list(by_node))
    changed = []
    for node_id in sorted(by_node, key=str):
        ids = by_node[node_id]
        changed += tasks_reassign(task_ids=ids, node=nodes[node_id], locked_at=locked_at)
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
    return _in_batches(
        expired,
        lambda ids: _fail(ids, actor=None, cause=FailureCause.DEADLINE),
        batch_size=batch_size,
        on_batch=on_batch,
    )


def cancels_unanswered(now: datetime):
    """In-progress tasks whose cancel request has gone unanswered for CANCEL_GRACE_SECONDS:
    the sweep cancels them (`tasks_cancel_unanswered`; `sweep_preview` counts them)."""
    before = now - timedelta(seconds=settings.CANCEL_GRACE_SECONDS)
    return Task.objects.filter(
        active=True, status=TaskStatus.IN_PROGRESS, cancel_requested_at__lt=before
    )


def tasks_cancel_unanswered(
    *,
    batch_size: int,
    now: datetime | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """The sweep: cancel every in-progress task whose cancel request has gone
    unanswered for CANCEL_GRACE_SECONDS (cause cancel_timeout), as the expiry
    sweep fails: batches, SKIP LOCKED, one history row each by the system."""
    return _in_batches(
        cancels_unanswered(now or timezone.now()),
        lambda ids: _fail(
            ids, actor=None, cause=FailureCause.CANCEL_TIMEOUT, status=TaskStatus.CANCELLED
        ),
        batch_size=batch_size,
        on_batch=on_batch,
    )


def _in_batches(
    tasks,
    change: Callable[[list], int],
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
) -> int:
    """Apply `change` to `tasks` a locked batch at a time, one transaction each, in
    primary-key order; the total it changed. SKIP LOCKED lets two sweeps share the
    work and passes over a task a node is changing right now (the next run takes it)."""
    total, after = 0, None
    while True:
        remaining = tasks.filter(pk__gt=after) if after else tasks
        with transaction.atomic():
            ids = _lock_ids(remaining.order_by("pk"), limit=batch_size)
            changed = change(ids) if ids else 0
        if not ids:
            return total
        total += changed
        after = ids[-1]
        if on_batch:
            on_batch(changed)


@dataclass(frozen=True)
class FailoverCounts:
    failed: int = 0  # in progress on a lost node (or out of attempts): failed, cause node_lost
    reassigned: int = 0  # given to an alive node as pending
    # Left in place: still open on their node, which no alive node could take (a later
    # run retries them); never a task this run failed.
    stranded: int = 0
    held: int = 0  # down nodes left alone: too many at once (FAILOVER_MAX_DOWN_SHARE)
    # Failed for a human: no alive node matches their selector, or pinned (a broadcast's).
    unplaced: int = 0

    def __add__(self, other: "FailoverCounts") -> "FailoverCounts":
        return FailoverCounts(
            self.failed + other.failed,
            self.reassigned + other.reassigned,
            self.stranded + other.stranded,
            self.held + other.held,
            self.unplaced + other.unplaced,
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
    nothing moves (`failover_held`). A down node past its drain deadline is left
    to `tasks_fail_drained`.
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
    # A node past its drain deadline is not lost, even down (off for its maintenance):
    # this run's drain step moved what may move, and the rest waits for it (SPEC).
    drained = set(Node.objects.drain_expired(now).values_list("pk", flat=True))
    lost = Task.objects.open_of([pk for pk in down if pk not in drained])
    totals, after = FailoverCounts(), None
    while True:
        remaining = lost.filter(pk__gt=after) if after else lost
        # Beats answered since the last batch, for the check under the locks.
        heartbeats.flush()
        with transaction.atomic():
            rows = list(
                driver_rows(
                    remaining.order_by("pk").select_for_update(skip_locked=True), *MOVED_COLUMNS
                )[:batch_size]
            )
            counts = _fail_over(rows, now=now) if rows else FailoverCounts()
        if not rows:
            if totals.stranded:
                logger.warning(
                    "no alive schedulable node to take over tasks",
                    extra={"event": "failover_stranded", "stranded_count": totals.stranded},
                )
            if totals.unplaced:
                logger.warning(
                    "tasks of down nodes failed for a human: no alive node may take them (none "
                    "is, or none matches their nodeSelector), or they are pinned to their node",
                    extra={"event": "failover_unplaced", "unplaced_count": totals.unplaced},
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
    return _fail_and_move(rows, now=now, cause=FailureCause.NODE_LOST)


class FailAndMove(NamedTuple):
    """What `_fail_and_move` does with a batch, decided before anything is written (so a
    dry run can ask the same question). Each task is in exactly one of `moving`,
    `unplaced` and `staying`, or in `failing` alone; a moved in-progress task is in
    `failing` too, since its attempt fails before it moves."""

    moving: list  # (row, target): goes pending to the node placement picked
    failing: list  # ids failed for the cause, no reason: in progress, or out of attempts
    unplaced: dict  # id: reason, failed for a human: no node may take it, or pinned
    staying: list  # rows left in place, still open: no node alive at all; a later run retries


def _plan_fail_and_move(rows: list, placement: Placement | None, now: datetime) -> FailAndMove:
    """`_fail_and_move`'s decision for these tasks (driver rows), each pick counted."""
    max_attempts = settings.TASK_MAX_ATTEMPTS
    plan = FailAndMove([], [], {}, [])
    for row in rows:
        if row.attempts < max_attempts:
            if not placement:  # no node alive at all
                if row.status != TaskStatus.IN_PROGRESS:
                    plan.staying.append(row)
                else:  # its attempt is lost, and no later run retries a failed task
                    plan.unplaced[row.pk] = NO_NODE_REASON
                continue
            else:
                selector = _json_value(row.node_selector)
                target = None if row.pinned else placement.pick(selector, _moved_deadline(row, now))
                if target is None:
                    plan.unplaced[row.pk] = PINNED_REASON if row.pinned else NO_MATCH_REASON
                    continue
                plan.moving.append((row, target))
        if row.status == TaskStatus.IN_PROGRESS or row.attempts >= max_attempts:
            plan.failing.append(row.pk)
    return plan


def _fail_and_move(rows: list, *, now: datetime, cause: str) -> FailoverCounts:
    """Take these locked tasks (driver rows) from their node: an in-progress attempt
    fails for `cause`; then, below TASK_MAX_ATTEMPTS, each moves (`_move_elsewhere`);
    at the limit it stays failed for a human. With no node alive at all, a pending task
    stays where it is (`stranded`: left in place, for a later run), a started one still
    fails. Failover and an expired drain share it."""
    max_attempts = settings.TASK_MAX_ATTEMPTS
    if any(row.attempts < max_attempts for row in rows):
        plan = _locked_plan(
            lambda placement: _plan_fail_and_move(rows, placement, now),
            lambda plan: plan.moving,
            sources=_nodes_of(rows),
            now=now,
        )
    else:
        plan = _plan_fail_and_move(rows, None, now)
    failed = _fail(plan.failing, actor=None, cause=cause) if plan.failing else 0
    for reason in set(plan.unplaced.values()):
        ids = [pk for pk, why in plan.unplaced.items() if why == reason]
        failed += _fail(ids, actor=None, cause=cause, reason=_step_reason(reason, cause))
    if plan.unplaced:
        logger.warning(
            "tasks failed for a human: nowhere they may go",
            extra={
                "event": "failover_unplaced",
                "cause": cause,
                "task_ids": [str(UUID(str(pk))) for pk in plan.unplaced],
            },
        )
    if plan.moving:
        moving = plan.moving
        _move(moving, now=now, cause=cause)
        kind = "failover" if cause == FailureCause.NODE_LOST else "drain"
        transaction.on_commit(lambda: REASSIGNMENTS.labels(kind).inc(len(moving)))
    # A task failed here is not left in place: it is failed (and maybe moved) once.
    return FailoverCounts(
        failed=failed,
        reassigned=len(plan.moving),
        stranded=len(plan.staying),
        unplaced=len(plan.unplaced),
    )


def _move_elsewhere(rows: list, *, now: datetime, cause: str, actor=None) -> int:
    """A drain's pending work: these locked tasks (driver rows) go pending to the nodes
    placement picks (alive, schedulable, matching their selector), with their history
    rows naming `actor` (None: the system) and `cause`. Returns how many moved: pinned
    tasks, and those no node may take, stay where they are."""
    if not rows:
        return 0
    moving = _locked_plan(
        lambda placement: _targets(placement, rows, now) if placement else [],
        lambda moving: moving,
        sources=_nodes_of(rows),
        now=now,
    )
    if moving:
        _move(moving, now=now, cause=cause, actor=actor)
        kind = "failover" if cause == FailureCause.NODE_LOST else "drain"
        transaction.on_commit(lambda: REASSIGNMENTS.labels(kind).inc(len(moving)))
    return len(moving)


def _locked_plan(plan: Callable, moves_of: Callable, *, sources: set, now: datetime):
    """`plan(placement)` (an automatic move's decision: failover, a drain) with every node
    it moves a task to row-locked (`lock_nodes`, after the tasks' locks) and checked again
    under the lock, as a placed create is (`_placed_node`). Placement reads the fleet
    unlocked: a drain, cordon or label change committed between the pick and the move
    made the target unfit, and the task went pending to a draining node, or to one its
    selector no longer matches. Then placement reads the fleet again and plans again;
    after PLACEMENT_TRIES, only among the nodes already locked and found fit.
    `moves_of(decision)`: its (driver row, target id) pairs. Placement as failover's:
    alive nodes only, the beats flushed for this batch already, and never the node a
    task is on (`sources`: uncordoned meanwhile, a drained node could be its own pick)."""

    def fleet():
        return Placement(now=now, alive_only=True, flush=False, exclude=sources)

    placement = fleet()
    fit: dict = {}  # {node id: labels} of the nodes locked and found schedulable
    for _ in range(PLACEMENT_TRIES):
        decision = plan(placement or None)
        moves = moves_of(decision)
        fit.update(_schedulable_labels({target for _, target in moves}, locked=True))
        if all(_fits(fit, target, _json_value(row.node_selector)) for row, target in moves):
            return decision
        placement = fleet()
    # Still changing: a node locked now cannot change until this transaction ends.
    placement.nodes = [node for node in placement.nodes if node.id in fit]
    for node in placement.nodes:
        node.labels = fit[node.id] or {}
    return plan(placement or None)


def _nodes_of(rows: list) -> set:
    """The nodes these tasks (driver rows) are on."""
    return {UUID(str(row.assigned_node_id)) for row in rows}


def _targets(placement: Placement, rows: list, now: datetime) -> list[tuple]:
    """(row, target) for each pending task (a driver row) placement finds another node
    for, each pick counted; pinned tasks stay."""
    moving = []
    for row in rows:
        selector = _json_value(row.node_selector)
        target = None if row.pinned else placement.pick(selector, _moved_deadline(row, now))
        if target is not None:
            moving.append((row, target))
    return moving


# Why failover failed a task instead of moving it: its failureReason.
NO_MATCH_REASON = "failover: no alive schedulable node matches its nodeSelector"
NO_NODE_REASON = "failover: no alive schedulable node to take it"
PINNED_REASON = "failover: pinned to its node (one of a broadcast's tasks)"


def _step_reason(reason: str, cause: str) -> str:
    """The reasons above name failover; a drain's deadline fails with them too, and its
    failure then names the drain, as its cause does."""
    return reason.replace("failover:", "drain:", 1) if cause == FailureCause.DRAINED else reason


def _json_value(text):
    """A JSON column's driver value (text, or None for SQL NULL), parsed."""
    return None if text is None else json.loads(text)


def _row_deadline(row) -> datetime:
    """A driver row's deadline, aware: the driver's values are UTC, naive on MariaDB."""
    deadline = row.locked_at
    return deadline.replace(tzinfo=UTC) if timezone.is_naive(deadline) else deadline


def _moved_deadline(row, now: datetime) -> datetime:
    """The deadline a task (a driver row) has once moved: its own, kept fresh (`_move`)."""
    return fresh_deadline(_row_deadline(row), now)


def _move(moves: list, *, now: datetime, cause: str, actor=None) -> None:
    """Give each task (a driver row) to its target (placement's pick) as pending, with a
    fresh deadline, and write its history rows naming `actor` (None: the system) and
    `cause`: one UPDATE per target and deadline rule."""
    floor = fresh_deadline(now, now)
    # After the failure rows `_fail` just stamped, so history reads in order.
    moved_at = timezone.now()
    groups: dict[tuple, list] = {}
    history = []
    for row, target in moves:
        task_id, old_node = UUID(str(row.pk)), str(UUID(str(row.assigned_node_id)))
        deadline = _row_deadline(row)
        new_deadline = fresh_deadline(deadline, now)
        late = new_deadline != deadline
        groups.setdefault((target, late), []).append(task_id)
        steps = [(HistoryAction.ASSIGNEE_CHANGE, old_node, str(target))]
        if row.status == TaskStatus.IN_PROGRESS:  # failed just before, in this transaction
            steps.append((HistoryAction.STATUS_CHANGE, TaskStatus.FAILED, TaskStatus.PENDING))
        if late:
            old_text, new_text = deadline_text(deadline), deadline_text(new_deadline)
            steps.append((HistoryAction.DEADLINE_CHANGE, old_text, new_text))
        history += [
            TaskHistory(
                task_id=task_id,
                action=action,
                from_value=before,
                to_value=after,
                node_id=target,
                performed_by=actor,
                cause=cause,
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


# The columns `_fail_and_move` and `_move_elsewhere` read of each task.
MOVED_COLUMNS = (
    "pk",
    "assigned_node_id",
    "status",
    "attempts",
    "locked_at",
    "node_selector",
    "pinned",
)


def tasks_drain_pending(*, node_id: UUID, now: datetime | None = None) -> tuple[int, int]:
    """A drain's first step: the node's pending tasks move now to other alive,
    schedulable nodes, as failover moves them, in the name of the admin draining it
    (the sweep's moves at the deadline are the system's). Returns (moved, stayed):
    those with nowhere to go stay. A task another transaction holds this instant (a claim,
    an admin's edit) is waited for, not skipped: no later step moves a skipped pending
    task before the drain's deadline, and the node takes no claim meanwhile; once that
    transaction commits, the task is read again (READ COMMITTED) and moves if still pending
    here. Locks in the one order: the tasks (by key), then the nodes they move to."""
    now = now or timezone.now()
    heartbeats.flush()  # beats still in Redis: without them no target looks alive
    pending = Task.objects.filter(assigned_node_id=node_id, active=True, status=TaskStatus.PENDING)
    with transaction.atomic():
        # Locked by primary key alone, then read again. A locking read of `pending` goes
        # through an index of status on a real table (task_dashboard_open): it locked each
        # task's index record before its row, while a cancel (or a start) holding the row
        # and changing its status waited for that record: MariaDB's deadlock, a 503.
        ids = list(pending.values_list("pk", flat=True))
        list(Task.objects.filter(pk__in=ids).order_by("pk").select_for_update().values("pk"))
        rows = list(driver_rows(pending.filter(pk__in=ids).order_by("pk"), *MOVED_COLUMNS))
        moved = _move_elsewhere(rows, now=now, cause=FailureCause.DRAINED, actor=current_actor())
    return moved, len(rows) - moved


def tasks_drain_preview(*, node_id: UUID, now: datetime | None = None) -> tuple[int, int]:
    """What `tasks_drain_pending` would do now, nothing written: (movable, staying) of
    the node's pending tasks, by the same placement (the node itself no target, as once
    drained it is not schedulable). Three queries or so, however many tasks."""
    now = now or timezone.now()
    pending = Task.objects.filter(assigned_node_id=node_id, active=True, status=TaskStatus.PENDING)
    rows = list(driver_rows(pending.order_by("pk"), *MOVED_COLUMNS))
    if not rows:
        return 0, 0
    placement = Placement(now=now, alive_only=True, exclude=[node_id])
    movable = len(_targets(placement, rows, now)) if placement else 0
    return movable, len(rows) - movable


def tasks_fail_drained(*, batch_size: int, now: datetime | None = None) -> FailoverCounts:
    """The sweep: the in-progress tasks of nodes whose drain deadline has passed fail
    (cause drained) and move like a lost node's; their pending ones move where they
    may and otherwise stay, as at the drain (SPEC: a drained node is not a lost one).
    Batches, SKIP LOCKED, history by the system."""
    now = now or timezone.now()
    heartbeats.flush()
    drained = list(Node.objects.drain_expired(now).values_list("pk", flat=True))
    if not drained:
        return FailoverCounts()
    tasks = Task.objects.open_of(drained)
    totals, after = FailoverCounts(), None
    while True:
        remaining = tasks.filter(pk__gt=after) if after else tasks
        with transaction.atomic():
            rows = list(
                driver_rows(
                    remaining.order_by("pk").select_for_update(skip_locked=True), *MOVED_COLUMNS
                )[:batch_size]
            )
            drained_now = _still_drained(rows, now)
            running = [row for row in drained_now if row.status == TaskStatus.IN_PROGRESS]
            pending = [row for row in drained_now if row.status != TaskStatus.IN_PROGRESS]
            counts = FailoverCounts()
            if running:
                counts = _fail_and_move(running, now=now, cause=FailureCause.DRAINED)
            if pending:
                moved = _move_elsewhere(pending, now=now, cause=FailureCause.DRAINED)
                counts += FailoverCounts(reassigned=moved)
        if not rows:
            return totals
        totals += counts
        after = rows[-1].pk


def _still_drained(rows: list, now: datetime) -> list:
    """Of these locked tasks (driver rows), those whose node is still past its drain
    deadline, read again under the nodes' locks (`lock_nodes`, after the tasks'): the
    lock an uncordon and a window's cancel take first. A window cancelled just before
    its start (200), or a node uncordoned, after the run read its drained nodes, leaves
    the node's work alone, as if the run had come after."""
    if not rows:
        return rows
    nodes = _nodes_of(rows)
    lock_nodes(nodes)
    still = set(Node.objects.drain_expired(now).filter(pk__in=nodes).values_list("pk", flat=True))
    return [row for row in rows if UUID(str(row.assigned_node_id)) in still]


class SweepPreview(NamedTuple):
    """What a sweep run would do now (`sweep_preview`), for `collect_failed --dry-run`."""

    cancelled: int  # unanswered cancel requests it would end (cancel_timeout)
    failed: int  # expired tasks, and drained nodes' running ones past the deadline
    drained_failed: int  # of those, the drained nodes' running ones
    drain_moved: int  # tasks it would move off drained nodes (a running one once failed)
    failover_open: int  # open tasks of down nodes failover would take (0 when held)
    held: int  # down nodes whose failover it would hold back (FAILOVER_MAX_DOWN_SHARE)


def sweep_preview(*, now: datetime | None = None) -> SweepPreview:
    """What `sweep_run` would do now, nothing written. In a run's order: each step counts
    only what the steps before it leave open; a drain's moves are asked of the same
    placement a run asks (`_plan_fail_and_move`, `_targets`), so they count exactly the
    tasks some node may take. A few queries, and the drained nodes' open tasks read."""
    now = now or timezone.now()
    heartbeats.flush()
    unanswered = cancels_unanswered(now)
    cancelled = unanswered.count()
    expired = Task.objects.expired(now).exclude(pk__in=unanswered.values("pk")).count()
    left = Task.objects.filter(locked_at__gte=now).exclude(pk__in=unanswered.values("pk"))
    drained = set(Node.objects.drain_expired(now).values_list("pk", flat=True))
    rows = []
    if drained:
        rows = list(driver_rows(left.open_of(drained).order_by("pk"), *MOVED_COLUMNS))
    running = [row for row in rows if row.status == TaskStatus.IN_PROGRESS]
    pending = [row for row in rows if row.status != TaskStatus.IN_PROGRESS]
    placement = Placement(now=now, alive_only=True, flush=False) if rows else None
    moved = len(_plan_fail_and_move(running, placement, now).moving)
    if placement:
        moved += len(_targets(placement, pending, now))
    held = failover_open = 0
    if settings.FAILOVER == "reassign":
        down = list(Node.objects.down(now).values_list("pk", flat=True))
        held = failover_held(down, now=now)[0] if down else 0
        lost = [pk for pk in down if pk not in drained]
        if lost and not held:
            failover_open = left.open_of(lost).count()
    failed = expired + len(running)
    return SweepPreview(cancelled, failed, len(running), moved, failover_open, held)


def sweep_run(
    *, batch_size: int, on_batch: Callable[[int], None] | None = None
) -> tuple[SweepRun, FailoverCounts]:
    """One run of the sweep, for `collect_failed` and the cron endpoint alike: expire,
    then (FAILOVER=reassign) fail over, and record the run in SweepRun. Returns the run
    and what its drains and failover did (`FailoverCounts`, the two added up)."""
    started = timezone.now()
    history_after = _last_history_id()
    # Before the expiry: a task its admin asked to cancel ends cancelled, not failed.
    cancelled = tasks_cancel_unanswered(batch_size=batch_size, now=started)
    expired = tasks_expire(batch_size=batch_size, now=started, on_batch=on_batch)
    drained = tasks_fail_drained(batch_size=batch_size, now=started)
    failover = FailoverCounts()
    if settings.FAILOVER == "reassign":
        failover = tasks_fail_over(batch_size=batch_size, now=started, on_batch=on_batch)
    with transaction.atomic():
        run = SweepRun.objects.create(
            started_at=started,
            finished_at=timezone.now(),
            failed_count=expired + drained.failed + failover.failed,
            reassigned_count=drained.reassigned + failover.reassigned,
            failover_held_count=failover.held,
            deadline_failed=expired,
            node_lost_failed=failover.failed,
            node_lost_moved=failover.reassigned,
            drained_failed=drained.failed,
            drained_moved=drained.reassigned,
            cancel_timeout_cancelled=cancelled,
            stranded_count=drained.stranded + failover.stranded,
            history_after=history_after,
            history_last=_last_history_id(),
        )
        _add_to_totals(run)
    sweep_runs_prune(now=started)
    return run, drained + failover


def _add_to_totals(run: SweepRun) -> None:
    """Add `run` to SweepTotals' one row (created by migration 0011; again if deleted)."""
    added = {
        "runs": 1,
        "failed": run.failed_count,
        "reassigned": run.reassigned_count,
        "held": int(run.failover_held_count > 0),
        "cancelled": run.cancel_timeout_cancelled or 0,
    }
    # One UPDATE adding to the row, so sweeps on several hosts at once lose no count.
    increments = {field: F(field) + value for field, value in added.items()}
    totals = SweepTotals.objects.filter(pk=SweepTotals.ROW)
    if not totals.update(**increments):
        # get_or_create: two hosts finding the row gone both make it, once.
        SweepTotals.objects.get_or_create(pk=SweepTotals.ROW)
        totals.update(**increments)


# At most this many old runs are let go per run: a first run after an upgrade, or
# after a long pause, deletes a bounded batch and leaves the rest to the next runs.
PRUNE_BATCH = 1000


def sweep_runs_prune(*, now: datetime) -> int:
    """Delete sweep runs older than SWEEP_RUNS_KEEP_DAYS (0: keep every run), oldest
    first, at most PRUNE_BATCH; returns how many. Their counts stay in SweepTotals."""
    if not settings.SWEEP_RUNS_KEEP_DAYS:
        return 0
    cutoff = now - timedelta(days=settings.SWEEP_RUNS_KEEP_DAYS)
    old = SweepRun.objects.filter(started_at__lt=cutoff).order_by("started_at")
    ids = list(old.values_list("pk", flat=True)[:PRUNE_BATCH])
    if not ids:
        return 0
    deleted, _ = SweepRun.objects.filter(pk__in=ids).delete()
    return deleted


def _last_history_id() -> int:
    """The newest history row's id (0 for none): one step down the primary key. The
    rows a sweep run writes come after its first reading and up to its second."""
    return TaskHistory.objects.aggregate(last=Max("id"))["last"] or 0
