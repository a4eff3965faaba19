import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connections, models, router, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Role
from nodes.models import Cordon, MaintenanceWindow, validate_labels
from taskmgmt.audit import AppendOnlyError, AppendOnlyModel, AppendOnlyQuerySet  # noqa: F401 (re-exported)
from taskmgmt.exceptions import DomainError
from taskmgmt.sql import (
    Read,
    count_rows,
    get_one,
    lock_token,
    read_together,
    tagged_read,
    tagged_values,
    update_saved,
)


class TaskStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# The whole status machine. Every path that changes a status goes through
# `check_transition`, so these rules exist exactly once. `cancelled` is reached
# from pending by an admin's cancel, from in_progress only by the node's
# acknowledgement of a cancel request or the sweep after CANCEL_GRACE_SECONDS.
ALLOWED_TRANSITIONS: dict[str, tuple[str, ...]] = {
    TaskStatus.PENDING: (TaskStatus.IN_PROGRESS, TaskStatus.CANCELLED),
    TaskStatus.IN_PROGRESS: (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED),
    TaskStatus.COMPLETED: (),
    TaskStatus.FAILED: (),
    TaskStatus.CANCELLED: (),
}
OPEN_STATUSES = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
FINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
# A node may still report failure (or acknowledge a cancel) once the deadline has
# passed, nothing else.
ALLOWED_AFTER_DEADLINE = (TaskStatus.FAILED, TaskStatus.CANCELLED)


class FailureCause(models.TextChoices):
    """Why a task failed (SPEC, Nodes)."""

    NODE_REPORTED = "node_reported", "Reported by its node"
    DEADLINE = "deadline", "Deadline passed"
    NODE_LOST = "node_lost", "Node lost"
    ADMIN = "admin", "Failed by an admin"
    DRAINED = "drained", "Node drained"
    # A cancelled task's cause: the node never acknowledged the cancel request.
    CANCEL_TIMEOUT = "cancel_timeout", "Cancel unanswered"


# A late success (SPEC, Control of the work): a task failed for one of these causes
# was taken from a node that may have gone on working; its `completed` for that
# same attempt is kept, as long as nobody has started the task again.
LATE_SUCCESS_CAUSES = (FailureCause.NODE_LOST, FailureCause.DRAINED)


def is_late_success(task, status: str, attempt: int | None) -> bool:
    """Whether `status` sent with `attempt` for the failed `task` is its node's late
    success: the attempt number proves the report is about the attempt that failed."""
    return (
        status == TaskStatus.COMPLETED
        and task.status == TaskStatus.FAILED
        and task.failure_cause in LATE_SUCCESS_CAUSES
        and attempt is not None
        and attempt == task.attempts
    )


# A node's own words on why it failed a task: bounded, so a row stays small.
FAILURE_REASON_MAX_LENGTH = 500
# Earlier than any cancel request or drain deadline (the features are from 2026): the
# plain statements (taskmgmt.sql) have no IS NOT NULL, and `> this` says the same.
NO_CANCEL_REQUEST_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
# An admin's words on why a task is cancelled (SPEC, Control of the work).
CANCEL_REASON_MAX_LENGTH = 500
# A history row's from/to values: ids, statuses, deadlines, field names, a cancel reason.
HISTORY_VALUE_MAX_LENGTH = CANCEL_REASON_MAX_LENGTH
# A progress report's message: a line for a progress bar, not a log.
PROGRESS_MESSAGE_MAX_LENGTH = 200
# What `Task.attempts` (a PositiveIntegerField) holds on every backend: a larger
# `attempt` in a report can never be current, and overflows SQLite's driver.
ATTEMPTS_MAX = 2_147_483_647


# Arrays and objects within each other: MariaDB's JSON_VALID, the JSON column's CHECK,
# refuses a 32nd level (its JSON functions stop at a depth of 32).
JSON_MAX_DEPTH = 31


def json_size_error(value, limit: int) -> str | None:
    """Why `value` (parsed JSON) may not be stored as a task's payload, result or
    checkpoint, or None: over `limit` bytes once serialized, nested deeper than
    JSON_MAX_DEPTH, or holding a NUL or a lone surrogate, which MariaDB's utf8mb4
    and most consumers refuse."""
    pending = [(value, 0)]
    while pending:  # not recursive: a deeply nested value must not blow the stack
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            depth += 1
            if depth > JSON_MAX_DEPTH:
                return f"Must be nested at most {JSON_MAX_DEPTH} arrays or objects deep."
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth) for child in children)
        elif isinstance(item, str) and "\x00" in item:
            return "Must not contain NUL characters."
    try:
        size = len(json_text(value).encode())
    except UnicodeEncodeError:
        return "Must not contain lone surrogates (invalid Unicode)."
    except (TypeError, ValueError):
        return "Must be a JSON value."
    if size > limit:
        return f"Must be at most {limit} bytes as JSON; this is {size}."
    return None


def json_text(value) -> str:
    """`value` as compact JSON, the form its size limit counts (no NaN or Infinity)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def fresh_deadline(current: datetime, now: datetime | None = None) -> datetime:
    """The deadline a task gets when it is given to a node again without one.

    The current deadline if it is still at least REASSIGN_DEADLINE_MINUTES
    away, otherwise now + REASSIGN_DEADLINE_MINUTES: never a stale deadline
    the sweep would fail at once (docs/api.md, Reassignment).
    """
    return max(current, deadline_floor(now))


def deadline_floor(now: datetime | None = None) -> datetime:
    """The nearest deadline a reassigned task keeps; anything sooner is stale (fresh_deadline)."""
    return (now or timezone.now()) + timedelta(minutes=settings.REASSIGN_DEADLINE_MINUTES)


class TaskRuleError(DomainError):
    """A request that breaks a task rule; `status_code` is its HTTP answer."""


class InvalidStatusTransition(TaskRuleError):
    status_code = 400
    title = "Invalid status transition"


class TaskConflict(TaskRuleError):
    status_code = 409
    title = "Conflict"


class DeadlinePassed(TaskConflict):
    title = "Deadline passed"


class StaleAttempt(TaskConflict):
    title = "Stale attempt"


def check_attempt(current: int, sent: int | None) -> None:
    """A report naming an attempt (`attempt`) is about that start of the task only:
    once the task was taken away and started again it is stale, whoever sends it."""
    if sent is not None and sent != current:
        raise StaleAttempt(
            f"stale attempt: this report is for attempt {sent}, the task is on attempt {current}"
        )


def check_transition(
    current: str,
    new: str,
    *,
    by_admin: bool = False,
    cancel_requested: bool = False,
    late_success_attempt: int | None = None,
) -> None:
    """Refuse a move the table does not allow. Only an admin cancels a pending task;
    a node ends its task `cancelled` only to acknowledge an admin's request
    (`cancel_requested`), and is not told of a `cancelled` it may not send.
    `late_success_attempt`: the attempt whose late `completed` the failed task would
    keep (`is_late_success`), named in the refusal so its node knows it may."""
    allowed = ALLOWED_TRANSITIONS[current]
    if not (by_admin if current == TaskStatus.PENDING else cancel_requested):
        allowed = tuple(status for status in allowed if status != TaskStatus.CANCELLED)
    if new not in allowed:
        next_names = ", ".join(allowed) or "none: the task is in a final state"
        if late_success_attempt is not None:
            next_names += (
                f" (but its node's completed for attempt {late_success_attempt}, sent with "
                "that attempt, is kept as a late success)"
            )
        raise InvalidStatusTransition(
            f"invalid status transition from {current} to {new}; "
            f"allowed next statuses: {next_names}"
        )


INACTIVE_NODE = "Tasks can only be assigned to an active node."


def validate_node(user) -> None:
    """A task's assignee must be an active user with the node role."""
    if user.role != Role.NODE:
        raise ValidationError("Tasks can only be assigned to a node, not an admin.")
    if not user.is_active:
        raise ValidationError(INACTIVE_NODE)


def validate_future(value) -> None:
    if timezone.is_naive(value):
        raise ValidationError("The deadline must include a time zone.")
    if value <= timezone.now():
        raise ValidationError("The deadline must be in the future.")


# Priorities (SPEC, Placement): higher first; Nomad's range, which operators know.
PRIORITY_MIN, PRIORITY_DEFAULT, PRIORITY_MAX = 1, 50, 100

# The order claims take a node's tasks in: highest priority, earliest deadline, oldest.
CLAIM_ORDER = ("-priority", "locked_at", "created_at")
# Named for MariaDB, whose planner weighed all seven indexes of the claim's and the
# heartbeat's count's columns on every call (docs/performance.md). Its priority column
# is descending, so the claim's ORDER BY is one forward index range.
CLAIM_INDEX = "task_node_claim_priority"


class TaskQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)

    def expired(self, now=None):
        """Open tasks whose deadline has passed: what the sweep fails."""
        return self.filter(
            active=True, status__in=OPEN_STATUSES, locked_at__lt=now or timezone.now()
        )

    def claimable_by(self, node, now: datetime):
        """The node's pending tasks it may still start, in the order a claim takes them:
        highest priority, then earliest deadline, then oldest (index CLAIM_INDEX)."""
        return self.filter(**self._claimable(node, now)).order_by(*CLAIM_ORDER)

    def claimable_first(self, node, now: datetime):
        """`claimable_by(node, now).select_for_update(skip_locked=True).first()` as one
        plain SELECT: every claim sends it, and building the ORM's query cost more than
        running it. The row stays locked until the transaction ends; None if none."""
        return get_one(
            self.model,
            for_update=True,
            skip_locked=True,
            order_by=CLAIM_ORDER,
            index=CLAIM_INDEX,
            # A draining node starts nothing (its claims answer 204), checked in the
            # same statement: by hand (a cordon with a deadline) or in a draining window.
            unless=(
                (Cordon, {"node": node.pk, "drain_deadline__gt": NO_CANCEL_REQUEST_BEFORE}),
                (
                    MaintenanceWindow,
                    {"node": node.pk, "drain": True, "starts_at__lt": now, "ends_at__gt": now},
                ),
            ),
            **self._claimable(node, now),
        )

    def claimable_count(self, node, now: datetime) -> int:
        """`claimable_by(node, now).count()` as one plain SELECT: every heartbeat sends it,
        and building the ORM's query cost more than running it."""
        return count_rows(self.model, index=CLAIM_INDEX, **self._claimable(node, now))

    @staticmethod
    def _claimable(node, now: datetime) -> dict:
        """What makes a task claimable, for the queryset and the plain statements alike."""
        return TaskQuerySet._claimable_by_id(node.pk, now)

    @staticmethod
    def _claimable_by_id(node_id, now: datetime) -> dict:
        return {
            "assigned_node": node_id,
            "status": TaskStatus.PENDING,
            "active": True,
            "locked_at__gt": now,
        }

    def open_of(self, node_ids):
        """The active pending or in-progress tasks of these nodes: what failover and a
        drain's deadline move. Not a running task with a cancel request standing: the
        sweep cancels it once its grace is over (cancel_timeout) rather than give it out
        again with the request forgotten."""
        return self.filter(
            active=True, status__in=OPEN_STATUSES, assigned_node_id__in=node_ids
        ).exclude(status=TaskStatus.IN_PROGRESS, cancel_requested_at__isnull=False)

    def in_progress_of(self, node, task_ids) -> list:
        """The ids among `task_ids` of the node's active tasks in progress: the ones
        still its to work on. By primary key, so cheap whatever the table's size."""
        return list(
            self.filter(
                pk__in=task_ids, assigned_node=node, status=TaskStatus.IN_PROGRESS, active=True
            ).values_list("id", flat=True)
        )

    def heartbeat_facts(self, node, now: datetime) -> tuple[int, list, list, list, list]:
        """What a heartbeat answers, read in one statement (`tagged_rows`): the node's
        claimable count, the ids of its active in-progress tasks with a standing cancel
        request, its cordon (`[]`: none; `[None]`: cordoned; `[deadline text]`:
        draining), and the starts of its current maintenance windows, all of them and
        those that drain. Every node beats every few seconds; a round trip per fact
        would cost it a quarter more each. The task parts read CLAIM_INDEX."""
        (rows,) = read_together(self.heartbeat_facts_read(node.pk, now))
        return self.heartbeat_facts_from(rows)

    def heartbeat_facts_read(self, node_id, now: datetime) -> Read:
        """`heartbeat_facts`' statement, to send with another read (the hot path sends it
        with the caller's user); `heartbeat_facts_from` reads its rows."""
        cancel_requested = {
            "assigned_node": node_id,
            "status": TaskStatus.IN_PROGRESS,
            "active": True,
            # Any stamp is later than this: the plain statements have no IS NOT NULL.
            "cancel_requested_at__gt": NO_CANCEL_REQUEST_BEFORE,
        }
        window = {"node": node_id, "starts_at__lt": now, "ends_at__gt": now}
        return tagged_read(
            (self.model, "COUNT(*)", self._claimable_by_id(node_id, now), CLAIM_INDEX),
            (self.model, "id", cancel_requested, CLAIM_INDEX),
            (Cordon, "drain_deadline", {"node": node_id}, None),
            (MaintenanceWindow, "starts_at", window, None),
            (MaintenanceWindow, "starts_at", {**window, "drain": True}, None),
        )

    @staticmethod
    def heartbeat_facts_from(rows) -> tuple[int, list, list, list, list]:
        (count,), ids, cordon, windows, draining = tagged_values(5, rows)
        return int(count), [UUID(value) for value in ids], cordon, windows, draining

    def open_counts_by_node(self) -> dict:
        """{node id: (open count, in-progress count)} over active tasks, one grouped query."""
        rows = (
            self.filter(active=True, status__in=OPEN_STATUSES)
            .order_by()
            .values("assigned_node_id")
            .annotate(
                open=models.Count("id"),
                in_progress=models.Count("id", filter=Q(status=TaskStatus.IN_PROGRESS)),
            )
            .values_list("assigned_node_id", "open", "in_progress")
        )
        return {node_id: (open_count, started) for node_id, open_count, started in rows}

    @staticmethod
    def page_index(user, status: str | None = None) -> str:
        """The index a newest-first page of `visible_to(user)` (in one `status`) reads.

        Named, not left to the planner: at 100,000 tasks MariaDB 10.11 walked
        `task_page` for a node's pending page, reading 15 times the rows it needed
        (docs/performance.md).
        """
        if user.is_admin:
            return "task_status_page" if status else "task_page"
        return "task_node_status_page" if status else "task_node_page"

    def visible_to(self, user):
        """What `user` may see: an admin every active task, a node its own."""
        return self.filter(**self.visible_where(user))

    @staticmethod
    def visible_where(user) -> dict:
        """`visible_to(user)`'s conditions, as `field=value` for plain statements."""
        where = {"active": True}
        if not user.is_admin:
            where["assigned_node"] = user.pk
        return where

    def created_range(self) -> tuple[datetime, datetime] | None:
        """The first and last `created_at` among these tasks, or None if there are none.

        Each is one read at an end of the (created_at, id) index; MIN/MAX with a
        WHERE clause, or DISTINCT over truncated dates, read every row instead.
        """
        dates = self.order_by().prefetch_related(None).values_list("created_at", flat=True)
        first = dates.order_by("created_at").first()
        return None if first is None else (first, dates.order_by("-created_at").first())


class Task(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255)
    details = models.TextField(max_length=10_000)
    assigned_node = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="tasks",
        limit_choices_to={"role": Role.NODE, "is_active": True},
    )
    status = models.CharField(max_length=20, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    locked_at = models.DateTimeField(
        "deadline", help_text="After this moment the node can no longer start or complete it."
    )
    active = models.BooleanField(default=True, help_text="Unticked means soft-deleted.")
    # How many times a node has started it; failover gives up at TASK_MAX_ATTEMPTS.
    attempts = models.PositiveIntegerField(default=0, editable=False)
    # Why it failed: set with status failed, cleared when the task is given out again.
    failure_cause = models.CharField(
        max_length=16, choices=FailureCause.choices, blank=True, default=""
    )
    failure_reason = models.CharField(max_length=FAILURE_REASON_MAX_LENGTH, blank=True, default="")
    # Work data (README, Work data). Nullable with no default, so adding them to a
    # large table is an instant ALTER on MariaDB (migration 0004).
    payload = models.JSONField(null=True, blank=True, help_text="The task's input, any JSON.")
    # Sent by the node with the final status; cleared when the task is given out again.
    result = models.JSONField(null=True, blank=True, editable=False)
    # The latest progress report; a reassignment clears it but keeps the checkpoint,
    # so the next attempt, on any node, can resume from there.
    progress_percent = models.FloatField(null=True, blank=True, editable=False)
    progress_message = models.CharField(  # noqa: DJ001 (null: no report yet)
        max_length=PROGRESS_MESSAGE_MAX_LENGTH, null=True, blank=True, editable=False
    )
    progress_updated_at = models.DateTimeField(null=True, blank=True, editable=False)
    checkpoint = models.JSONField(null=True, blank=True, editable=False)
    # Placement (SPEC, Placement; tasks.placement). Null: no selector, any node will do.
    node_selector = models.JSONField(
        null=True,
        blank=True,
        validators=[validate_labels],
        help_text='The labels a node must have to take it, e.g. {"gpu": "true"}.',
    )
    # db_default too: servers still running the code before this column (a rolling
    # deploy) insert tasks without it, and the database fills it in.
    priority = models.PositiveSmallIntegerField(
        default=PRIORITY_DEFAULT,
        db_default=PRIORITY_DEFAULT,
        validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)],
        help_text=f"{PRIORITY_MIN}-{PRIORITY_MAX}, higher first: a node claims these first.",
    )
    # One of a broadcast's tasks: it belongs to its node, so failover fails it for a
    # human instead of giving a second one of the broadcast to another node.
    pinned = models.BooleanField(default=False, db_default=False, editable=False)
    # A standing cancel request on an in-progress task: the node learns it from its
    # heartbeat answers and acknowledges it. Nullable with no default: an instant ALTER.
    cancel_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    cancel_reason = models.CharField(  # noqa: DJ001 (null: no request)
        max_length=CANCEL_REASON_MAX_LENGTH, null=True, blank=True, editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # A node's lists: own, active, optionally one status, newest first.
            models.Index(
                fields=["assigned_node", "active", "status", "created_at", "id"],
                name="task_node_status_page",
            ),
            models.Index(
                fields=["assigned_node", "active", "created_at", "id"], name="task_node_page"
            ),
            # Claim: a node's next pending task, highest priority, earliest deadline, oldest.
            models.Index(
                fields=[
                    *("assigned_node", "status", "active"),
                    *("-priority", "locked_at", "created_at"),
                ],
                name=CLAIM_INDEX,
            ),
            # The sweep: open statuses whose deadline passed.
            models.Index(fields=["status", "locked_at"], name="task_sweep"),
            # Admin lists: keyset pages over everything, or over one status.
            models.Index(fields=["created_at", "id"], name="task_page"),
            models.Index(fields=["status", "created_at", "id"], name="task_status_page"),
            # The dashboard (docs/operations.md), index-only: open tasks by status and
            # node with their deadlines and oldest change; what finished lately.
            models.Index(
                fields=["status", "active", "assigned_node", "locked_at", "updated_at"],
                name="task_dashboard_open",
            ),
            models.Index(
                fields=["status", "updated_at", "assigned_node", "failure_cause", "active"],
                name="task_dashboard_done",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=TaskStatus.values), name="task_status_valid"
            ),
        ]

    # Fields whose changes the history records (`TaskHistory.for_change`);
    # `saved_values` holds what the database had when the row was loaded, so a
    # save can tell what changed.
    TRACKED_FIELDS = (
        "assigned_node_id",
        "status",
        "locked_at",
        "name",
        "details",
        "payload",
        "priority",
        "node_selector",
        "active",
    )

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        # The post_save signal writes the history: it commits or rolls back with
        # the change, even for a bare `task.save()` in autocommit (a shell). No
        # savepoint: inside a service's transaction an error rolls all of it back.
        using = kwargs.get("using") or router.db_for_write(Task)
        with transaction.atomic(using=using, savepoint=False):
            super().save(*args, **kwargs)

    def _do_update(self, base_qs, using, pk_val, values, update_fields, forced_update):
        # Every status change, claim and edit saves a task: Django built and compiled
        # the same UPDATE anew each time (docs/performance.md); taskmgmt.sql keeps it.
        if values:
            # A task its service read FOR UPDATE in this transaction (`locked_in`) exists:
            # its UPDATE can go with the history INSERT and the COMMIT (taskmgmt.mariadb).
            locked_in = getattr(self, "locked_in", None)
            locked = locked_in is not None and locked_in == lock_token(connections[using])
            matched = update_saved(Task, using, pk_val, values, locked=locked)
            if matched is not None:
                return matched > 0
        return super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update)

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance.remember_saved_values()
        return instance

    @classmethod
    def tracked_among(cls, names) -> tuple[str, ...]:
        """The tracked fields among `names` (field names or attnames); None means all."""
        if names is None:
            return cls.TRACKED_FIELDS
        return tuple(
            field
            for field in cls.TRACKED_FIELDS
            if field in names or field.removesuffix("_id") in names
        )

    def refresh_from_db(self, using=None, fields=None, from_queryset=None):
        # Reloaded values are what the database has now: later saves compare against them.
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        self.remember_saved_values(self.tracked_among(fields))

    def remember_saved_values(self, fields=TRACKED_FIELDS):
        """Note `fields` (the tracked fields just loaded or written) as stored."""
        self.saved_values = {
            **getattr(self, "saved_values", {}),
            **{field: self.__dict__[field] for field in fields if field in self.__dict__},
        }

    @property
    def is_overdue(self) -> bool:
        return self.status in OPEN_STATUSES and self.locked_at < timezone.now()

    def clean(self):
        super().clean()
        if self.locked_at and timezone.is_naive(self.locked_at):
            raise ValidationError({"locked_at": "The deadline must include a time zone."})
        if self.assigned_node_id:
            try:
                validate_node(self.assigned_node)
            except ValidationError as error:
                raise ValidationError({"assigned_node": error.messages}) from error


class HistoryAction(models.TextChoices):
    INITIAL_ASSIGN = "initial_assign", "Initial assignment"
    STATUS_CHANGE = "status_change", "Status change"
    ASSIGNEE_CHANGE = "assignee_change", "Assignee change"
    DEADLINE_CHANGE = "deadline_change", "Deadline change"
    EDIT = "edit", "Edit"
    SOFT_DELETE = "soft_delete", "Soft delete"
    RESTORE = "restore", "Restore"
    CANCEL_REQUEST = "cancel_request", "Cancel request"


# The task fields an `edit` row names, as the API spells them.
EDITED_FIELDS = {
    "name": "taskName",
    "details": "taskDetails",
    "payload": "payload",
    "priority": "priority",
    "node_selector": "nodeSelector",
}


def deadline_text(value: datetime) -> str:
    """A deadline as history stores it: ISO 8601 in UTC, written as the API writes `lockedAt`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class TaskHistory(AppendOnlyModel):
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="history")
    action = models.CharField(max_length=20, choices=HistoryAction.choices)
    # Null, not "": an initial assignment has no previous value (SPEC: nullable strings).
    # Long enough for a whole cancel reason (migration 0015; before it, 64 characters).
    from_value = models.CharField(  # noqa: DJ001
        max_length=HISTORY_VALUE_MAX_LENGTH, null=True, blank=True
    )
    to_value = models.CharField(  # noqa: DJ001
        max_length=HISTORY_VALUE_MAX_LENGTH, null=True, blank=True
    )
    # Null means the system (the sweep). PROTECT: a user who acted is
    # deactivated, never deleted, so no row is ever misread as the system's.
    performed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    # For a failure (and the system's failover steps), why: a FailureCause value.
    cause = models.CharField(max_length=16, choices=FailureCause.choices, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # The task's node once the row's change is made: the activity feed by node reads it
    # (a sweep's failure names no node in its values). Null on rows from before 0016.
    # No FOREIGN KEY in the database: adding one copies the table on MariaDB.
    node = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )

    audit_name = "Task history"
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "task history"
        indexes = [
            models.Index(fields=["task", "created_at"], name="history_task_time"),
            # The activity feed (tasks.activity): newest first by action, by cause, and a
            # node's rows by what was given to it or taken from it, each one index range.
            models.Index(fields=["action", "id"], name="history_action"),
            models.Index(fields=["cause", "id"], name="history_cause"),
            models.Index(fields=["to_value", "id"], name="history_to_value"),
            models.Index(fields=["from_value", "id"], name="history_from_value"),
            models.Index(fields=["node", "id"], name="history_node"),
        ]

    def __str__(self):
        # No raw values: they are ids and timestamps, which the admin shows by name.
        return f"{self.get_action_display()} #{self.pk}"

    @classmethod
    def for_change(
        cls, task_id, before: dict, after: dict, *, node_id, cause: str = ""
    ) -> list["TaskHistory"]:
        """The rows a change of a task writes, one per kind of change (SPEC, TaskHistory).

        `before` and `after` map tracked fields (`Task.TRACKED_FIELDS`) to their
        old and new values; a field missing from `after` did not change. Used by
        the save signal and by the bulk services alike, so both record the same.
        A status change to failed carries `cause` (a FailureCause value); every row
        `node_id`, the task's node after the change.
        """

        def changed(field):
            if field not in after:
                return False
            # JSON as JSON with sorted keys: 1 and 1.0 differ, key order not.
            if field in ("payload", "node_selector"):
                return _json_key(before.get(field)) != _json_key(after[field])
            # As text: an id set as a string, or a deadline in another zone, is no change.
            return _text(before.get(field)) != _text(after[field])

        rows = []
        if changed("assigned_node_id"):
            old = before.get("assigned_node_id")
            rows.append((HistoryAction.ASSIGNEE_CHANGE, old, after["assigned_node_id"]))
        if changed("status"):
            rows.append((HistoryAction.STATUS_CHANGE, before.get("status"), after["status"]))
        if changed("locked_at"):
            old = before.get("locked_at")
            rows.append((HistoryAction.DEADLINE_CHANGE, old, after["locked_at"]))
        edited = [name for field, name in EDITED_FIELDS.items() if changed(field)]
        if edited:
            rows.append((HistoryAction.EDIT, None, ",".join(edited)))
        if changed("active"):
            action = HistoryAction.RESTORE if after["active"] else HistoryAction.SOFT_DELETE
            rows.append((action, None, None))
        return [
            cls(
                task_id=task_id,
                action=action,
                from_value=_text(old),
                to_value=_text(new),
                cause=cause if new in (TaskStatus.FAILED, TaskStatus.CANCELLED) else "",
                node_id=node_id,
            )
            for action, old, new in rows
        ]


def _json_key(value) -> str:
    return json.dumps(value, sort_keys=True)


def _text(value) -> str | None:
    """A tracked value as a history column holds it: ids and statuses as text, deadlines ISO."""
    if value is None or isinstance(value, str):
        return value
    return deadline_text(value) if isinstance(value, datetime) else str(value)


class SweepRun(models.Model):
    """One run of the sweep (`collect_failed` or the cron endpoint): when, how long, what it did.

    Kept in the database so the dashboard and the metrics survive restarts.
    """

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField()
    failed_count = models.PositiveIntegerField(default=0)
    reassigned_count = models.PositiveIntegerField(default=0)
    # Down nodes whose failover this run held back (FAILOVER_MAX_DOWN_SHARE): 0 if none.
    # A database default too: during a rolling upgrade the previous release's sweep,
    # which does not know the column, still records its runs (migration 0012).
    failover_held_count = models.PositiveIntegerField(default=0, db_default=0)
    # What it did by cause (SWEEP_CAUSE_COUNTS); None on runs from before they were kept.
    deadline_failed = models.PositiveIntegerField(null=True, blank=True)
    node_lost_failed = models.PositiveIntegerField(null=True, blank=True)
    node_lost_moved = models.PositiveIntegerField(null=True, blank=True)
    drained_failed = models.PositiveIntegerField(null=True, blank=True)
    drained_moved = models.PositiveIntegerField(null=True, blank=True)
    cancel_timeout_cancelled = models.PositiveIntegerField(null=True, blank=True)
    # Open tasks of down nodes it left in place, no alive schedulable node to take them
    # (a later run retries); None on runs from before it was kept (migration 0017).
    stranded_count = models.PositiveIntegerField(null=True, blank=True)
    # The history ids it may have written: above history_after, up to history_last (the
    # system's among them). A primary-key range: its links read no more than its rows.
    history_after = models.BigIntegerField(null=True, blank=True)
    history_last = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self):
        return f"sweep at {self.started_at:%Y-%m-%d %H:%M:%S}: {self.failed_count} failed"

    @property
    def duration(self) -> timedelta:
        return self.finished_at - self.started_at

    @property
    def causes_recorded(self) -> bool:
        return self.deadline_failed is not None


class SweepTotals(models.Model):
    """Every sweep run's counts, summed: what /metrics' sweep counters read, so they never
    go down when old runs are let go (SWEEP_RUNS_KEEP_DAYS), and a scrape reads one row,
    not every run kept. One row (`ROW`), added to in the transaction that records a run."""

    ROW = 1

    runs = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    reassigned = models.PositiveBigIntegerField(default=0)
    # Runs that held the failover back (FAILOVER_MAX_DOWN_SHARE).
    held = models.PositiveBigIntegerField(default=0)
    # Tasks the sweep cancelled: their cancel request went unanswered (cancel_timeout).
    cancelled = models.PositiveBigIntegerField(default=0, db_default=0)

    class Meta:
        verbose_name_plural = "sweep totals"

    def __str__(self):
        return f"{self.runs} sweep runs: {self.failed} failed, {self.reassigned} reassigned"


class SweepCount(NamedTuple):
    """One of a sweep run's counts by cause: its field, and the history rows it counts
    (one row per task: the failure, the move or the cancellation)."""

    cause: str
    what: str  # failed, moved, cancelled
    field: str
    rows: dict  # TaskHistory lookups


_FAILED = {"action": HistoryAction.STATUS_CHANGE, "to_value": TaskStatus.FAILED}
SWEEP_CAUSE_COUNTS = (
    SweepCount(FailureCause.DEADLINE, "failed", "deadline_failed", _FAILED),
    SweepCount(FailureCause.NODE_LOST, "failed", "node_lost_failed", _FAILED),
    SweepCount(
        FailureCause.NODE_LOST,
        "moved",
        "node_lost_moved",
        {"action": HistoryAction.ASSIGNEE_CHANGE},
    ),
    SweepCount(FailureCause.DRAINED, "failed", "drained_failed", _FAILED),
    SweepCount(
        FailureCause.DRAINED, "moved", "drained_moved", {"action": HistoryAction.ASSIGNEE_CHANGE}
    ),
    SweepCount(
        FailureCause.CANCEL_TIMEOUT,
        "cancelled",
        "cancel_timeout_cancelled",
        {"action": HistoryAction.STATUS_CHANGE, "to_value": TaskStatus.CANCELLED},
    ),
)
