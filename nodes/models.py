"""A node: a user with the node role, and what its heartbeats say about it.

`Node` is a proxy of `accounts.User` (no table of its own): the account is
identity and stays in accounts; liveness is derived from `last_seen` whenever
it is read, and its one definition is here.
"""

import re
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Case, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Role, User, is_encodable
from taskmgmt.audit import AppendOnlyError, AppendOnlyModel, AppendOnlyQuerySet
from taskmgmt.exceptions import DomainError


class Liveness(models.TextChoices):
    """What a node's last heartbeat says about it now (docs/nodes-and-workers.md)."""

    ALIVE = "alive", "Alive"
    STALE = "stale", "Stale"
    DOWN = "down", "Down"
    NEVER_SEEN = "never_seen", "Never seen"


class ServingRecord(models.Model):
    """When the API last answered a request, and since when without a break: one row.

    Written by every app process at most once a second (nodes.serving); liveness
    counts a node's silence only while the API was serving, so an outage of the API
    or the database is never taken for the nodes' deaths (docs/nodes-and-workers.md).
    """

    ROW = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=ROW, editable=False)
    serving_since = models.DateTimeField()
    last_serving = models.DateTimeField()
    # The last answer before serving_since: the previous outage ran from here to there.
    outage_began = models.DateTimeField(null=True)

    def __str__(self):
        return f"serving since {self.serving_since:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def current(cls) -> "ServingRecord | None":
        return cls.objects.filter(pk=cls.ROW).first()


# A node down longer than this many NODE_DOWN_AFTER no longer counts as recently alive.
RECENT_DOWN_INTERVALS = 3


def serving_gap() -> timedelta:
    """No answer for this long is an outage: an alive node beats every interval, and each
    app process records at most once a second. Kept short: an outage shorter than this
    counts as silence, which the failover's down-share guard is there for."""
    return timedelta(seconds=max(settings.NODE_HEARTBEAT_SECONDS, 1) + 1)


def silence_cutoff(silence: timedelta, now: datetime, record: ServingRecord | None) -> datetime:
    """The `last_seen` before which a node has been silent for longer than `silence`,
    counting only the time the API was serving: up to its last recorded answer, over
    its current stretch and the one before the last outage (`record` None: none known,
    all time counts)."""
    if record is None:
        return now - silence
    # Past the last recorded answer, nobody knows whether a beat could have landed.
    cutoff = min(now, record.last_serving) - silence
    if cutoff >= record.serving_since or record.outage_began is None:
        return cutoff
    return cutoff - (record.serving_since - record.outage_began)


def liveness_cutoffs(now: datetime) -> tuple[datetime, datetime]:
    """(stale_before, down_before): a node last seen before these is stale, or down.

    The one definition of liveness, used by the queryset and by single users.
    Stale once a beat is missed (1.5 intervals, so a late beat is not a miss);
    down after NODE_DOWN_AFTER seconds; both count only time the API was serving,
    so after an outage every node has its full intervals to beat again.
    """
    record = ServingRecord.current()
    stale = timedelta(seconds=settings.NODE_HEARTBEAT_SECONDS * 1.5)
    down = timedelta(seconds=settings.NODE_DOWN_AFTER)
    return silence_cutoff(stale, now, record), silence_cutoff(down, now, record)


def liveness_of(last_seen: datetime | None, now: datetime) -> str:
    if last_seen is None:
        return Liveness.NEVER_SEEN
    stale_before, down_before = liveness_cutoffs(now)
    if last_seen < down_before:
        return Liveness.DOWN
    if last_seen < stale_before:
        return Liveness.STALE
    return Liveness.ALIVE


def liveness_case(now: datetime) -> Case:
    """`liveness_of` in SQL, for annotating any queryset of users (the user admin's too)."""
    stale_before, down_before = liveness_cutoffs(now)
    return Case(
        When(last_seen__isnull=True, then=Value(Liveness.NEVER_SEEN)),
        When(last_seen__lt=down_before, then=Value(Liveness.DOWN)),
        When(last_seen__lt=stale_before, then=Value(Liveness.STALE)),
        default=Value(Liveness.ALIVE),
        output_field=models.CharField(),
    )


# Labels and selectors (SPEC, Placement): Kubernetes' label limits, which operators know.
LABELS_MAX_ENTRIES = 32
LABEL_VALUE_MAX_LENGTH = 63
LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")


def labels_errors(value) -> list[str]:
    """What is wrong with `value` as a node's labels or a task's selector; [] if nothing.

    Shared by the nodes API, the node admin and the tasks' `nodeSelector`."""
    if not isinstance(value, dict):
        return ["Must be a JSON object of string keys to string values."]
    if len(value) > LABELS_MAX_ENTRIES:
        return [f"Must have at most {LABELS_MAX_ENTRIES} entries; this has {len(value)}."]
    errors = []
    for key, item in value.items():
        if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
            errors.append(
                f"Key {str(key)[:70]!r}: must be 1-63 of a-z, 0-9, '.', '_', '/', '-', "
                "starting and ending with a letter or digit."
            )
        elif not isinstance(item, str):
            errors.append(f"Value of {key!r}: must be a string.")
        elif len(item) > LABEL_VALUE_MAX_LENGTH or "\x00" in item:
            errors.append(
                f"Value of {key!r}: must be at most {LABEL_VALUE_MAX_LENGTH} characters, no NUL."
            )
        elif not is_encodable(item):
            # Valid JSON, but no database driver can store it (a 500 before).
            errors.append(f"Value of {key!r}: must not contain lone surrogates (invalid Unicode).")
    return errors


def validate_labels(value) -> None:
    errors = labels_errors(value)
    if errors:
        raise ValidationError(errors)


def labels_match(labels: dict, selector: dict | None) -> bool:
    """A node matches a selector when it has every key of it with that value."""
    return not selector or all(labels.get(key) == item for key, item in selector.items())


class NodeLabels(models.Model):
    """A node's labels: what it is (`gpu=true`, `region=eu`), for placement to match.

    A row of the nodes app beside the account, not a column on it: accounts is
    identity only. No row means no labels."""

    node = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="node_labels",
    )
    labels = models.JSONField(default=dict, blank=True, validators=[validate_labels])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "node labels"

    def __str__(self):
        return labels_text(self.labels)


def labels_text(labels: dict) -> str:
    """`key=value, ...` in key order, as pages show labels."""
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def labels_by_node(node_ids=None) -> dict:
    """{node id: labels} of the nodes that have any (all of them, or those in `node_ids`)."""
    rows = NodeLabels.objects.all()
    if node_ids is not None:
        rows = rows.filter(node_id__in=list(node_ids))
    return dict(rows.values_list("node_id", "labels"))


class NodeQuerySet(models.QuerySet):
    def with_liveness(self, now: datetime | None = None):
        """Annotates `liveness` (a `Liveness` value), derived from `last_seen` at `now`."""
        return self.annotate(liveness=liveness_case(now or timezone.now()))

    def with_labels(self):
        """Annotates `label_set`: the node's labels ({} without any), joined, not a query more."""
        return self.annotate(
            label_set=Coalesce(
                models.F("node_labels__labels"), Value({}, output_field=models.JSONField())
            )
        )

    def down(self, now: datetime | None = None):
        """Nodes seen once and not since NODE_DOWN_AFTER (a never-seen node is not down:
        it may be a client that does not beat)."""
        _, down_before = liveness_cutoffs(now or timezone.now())
        return self.filter(last_seen__lt=down_before)

    def recently_seen(self, now: datetime | None = None):
        """Nodes seen within the last RECENT_DOWN_INTERVALS down-intervals (of serving
        time): the fleet against which the failover guard weighs the down ones."""
        now = now or timezone.now()
        silence = timedelta(seconds=settings.NODE_DOWN_AFTER * RECENT_DOWN_INTERVALS)
        cutoff = silence_cutoff(silence, now, ServingRecord.current())
        return self.filter(last_seen__gte=cutoff)

    def alive(self, now: datetime | None = None):
        stale_before, _ = liveness_cutoffs(now or timezone.now())
        return self.filter(last_seen__gte=stale_before, is_active=True)

    def schedulable(self, now: datetime | None = None):
        """Active nodes that may be given new work now: not cordoned, not draining, not in
        a maintenance window (derived from their cordon rows and windows when read)."""
        in_window = MaintenanceWindow.objects.current(now or timezone.now())
        return self.filter(is_active=True, cordon__isnull=True).exclude(
            pk__in=in_window.values("node_id")
        )

    def with_schedule(self, now: datetime | None = None):
        """With each node's cordon row and current window (as `window_*` subqueries),
        for `Node.schedule_state()`: one query however many nodes."""
        window = MaintenanceWindow.objects.current(now or timezone.now()).filter(
            node=OuterRef("pk")
        )
        return self.select_related("cordon").annotate(
            **{
                f"window_{field}": Subquery(window.order_by(*CURRENT_FIRST).values(field)[:1])
                for field in ("starts_at", "reason", "drain", "by_id")
            }
        )

    def with_window(self, now: datetime):
        """Annotates `shown_window_*`: the node's window under way, else its next coming
        one (the earliest not yet ended), as subqueries: one query however many nodes."""
        window = MaintenanceWindow.objects.filter(node=OuterRef("pk"), ends_at__gt=now).order_by(
            "starts_at", "id"
        )
        return self.annotate(
            **{
                f"shown_window_{field}": Subquery(window.values(field)[:1])
                for field in WINDOW_SHOWN_FIELDS
            }
        )

    def drain_expired(self, now: datetime | None = None):
        """Draining nodes whose deadline has passed — by hand, or inside a window with
        `drain`, whose deadline is its start: the sweep fails and moves their work."""
        now = now or timezone.now()
        draining = MaintenanceWindow.objects.current(now).filter(drain=True)
        return self.filter(Q(cordon__drain_deadline__lt=now) | Q(pk__in=draining.values("node_id")))


# Of a node's windows under way (overlaps are accepted), the one its state follows: a
# draining one first, as the sweep drains a node in any of them (`drain_expired`).
CURRENT_FIRST = ("-drain", "starts_at", "id")

# What `with_window` reads of the window a node shows.
WINDOW_SHOWN_FIELDS = ("id", "starts_at", "ends_at", "reason", "drain")


def window_shown(row, now: datetime) -> dict | None:
    """`{id, startsAt, endsAt, reason, drain, underWay}` of the window a node read
    through `with_window` shows (a Node, or a `.values()` dict), or None."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name, None)
    if get("shown_window_id") is None:
        return None
    starts_at = get("shown_window_starts_at")
    return {
        "id": get("shown_window_id"),
        "startsAt": starts_at,
        "endsAt": get("shown_window_ends_at"),
        "reason": get("shown_window_reason"),
        "drain": bool(get("shown_window_drain")),
        "underWay": starts_at <= now,
    }


class NodeManager(models.Manager.from_queryset(NodeQuerySet)):
    def get_queryset(self):
        return super().get_queryset().filter(role=Role.NODE)


class Node(User):
    """A user with the node role, with its liveness: `Node.objects` holds nodes only."""

    objects = NodeManager()

    class Meta:
        proxy = True

    def liveness(self, now: datetime | None = None) -> str:
        return liveness_of(self.last_seen, now or timezone.now())

    @property
    def labels(self) -> dict:
        try:
            return self.node_labels.labels
        except NodeLabels.DoesNotExist:
            return {}

    def schedule_state(self) -> dict:
        """`state_of` for a node read through `with_schedule`."""
        window = current_window_of(lambda column: getattr(self, column, None))
        return state_of(getattr(self, "cordon", None), window)


def current_window_of(get) -> "MaintenanceWindow | None":
    """The window under way that a node read through `with_schedule` names (`get`: one of
    its `window_*` columns by name, from a Node or a `.values()` row), or None."""
    if get("window_starts_at") is None:
        return None
    return MaintenanceWindow(
        starts_at=get("window_starts_at"),
        reason=get("window_reason"),
        drain=bool(get("window_drain")),
        by_id=get("window_by_id"),
    )


def nodes_by_state(now: datetime | None = None) -> dict[str, int]:
    """How many active nodes are schedulable, cordoned and draining now (/metrics)."""
    counts = dict.fromkeys(NodeState.values, 0)
    for node in Node.objects.filter(is_active=True).with_schedule(now).only("id", "cordon"):
        counts[node.schedule_state()["state"]] += 1
    return counts


# An admin's words on why a node is cordoned, drained or in maintenance.
NODE_REASON_MAX_LENGTH = 500


class Cordon(models.Model):
    """A node an admin took out of scheduling: a stored fact, one row per node at most.

    Whether the node is schedulable, cordoned or draining is derived from it when read
    (`node_state`), as liveness is from `last_seen`. `drain_deadline` set: a drain,
    whose in-progress work may finish until then. Uncordon deletes the row; the node
    events keep the record.
    """

    node = models.OneToOneField(
        User, on_delete=models.CASCADE, primary_key=True, related_name="cordon"
    )
    reason = models.CharField(max_length=NODE_REASON_MAX_LENGTH)
    by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    since = models.DateTimeField(default=timezone.now)
    drain_deadline = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{'drain' if self.drain_deadline else 'cordon'}: {self.reason}"


class NodeEventKind(models.TextChoices):
    CORDON = "cordon", "Cordon"
    UNCORDON = "uncordon", "Uncordon"
    DRAIN = "drain", "Drain"
    LABELS_CHANGE = "labels_change", "Labels change"
    MAINTENANCE_SCHEDULED = "maintenance_scheduled", "Maintenance scheduled"
    MAINTENANCE_CANCELLED = "maintenance_cancelled", "Maintenance cancelled"


class NodeEventAppendOnly(AppendOnlyError):
    """Node events are an audit trail: rows are added, never changed."""


class NodeEvent(AppendOnlyModel):
    """What an admin did to a node, append-only like task history."""

    node = models.ForeignKey(User, on_delete=models.PROTECT, related_name="node_events")
    kind = models.CharField(max_length=24, choices=NodeEventKind.choices)
    # Null means the system. PROTECT: users are deactivated, never deleted.
    actor = models.ForeignKey(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=NODE_REASON_MAX_LENGTH, blank=True, default="")
    # A drain's deadline; a window's start (and `detail` its end and id).
    deadline = models.DateTimeField(null=True, blank=True)
    detail = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    audit_name = "Node events"
    append_only_error = NodeEventAppendOnly
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["node", "created_at"], name="node_event_time")]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk}"


class NodeState(models.TextChoices):
    SCHEDULABLE = "schedulable", "Schedulable"
    CORDONED = "cordoned", "Cordoned"
    DRAINING = "draining", "Draining"


def drain_deadline_from_text(
    cordon: list, windows: list = (), draining: list = ()
) -> tuple[bool, datetime | None]:
    """(schedulable, drain deadline) from a cordon and the current windows read as
    `tagged_rows` text: a cordon `[]` none, `[None]` cordoned, `[text]` draining until
    then; `windows` the starts of current windows, `draining` those that drain (whose
    deadline is their start). A cordon by hand outlasts any window; the earliest
    deadline of a drain by hand or a draining window is the node's. UTC, as stored."""
    deadlines = [_utc(text) for text in (*cordon, *draining) if text is not None]
    if deadlines:
        # A hand cordon during a draining window still drains: its claims answer 204.
        return False, min(deadlines)
    return not (cordon or windows), None


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def node_state(node_id, now: datetime | None = None) -> dict:
    """A node's scheduling state, derived now from its cordon row and windows."""
    window = MaintenanceWindow.objects.current(now or timezone.now()).filter(node_id=node_id)
    return state_of(
        Cordon.objects.filter(node_id=node_id).first(), window.order_by(*CURRENT_FIRST).first()
    )


def state_name(*, cordoned: bool, drain_by_hand: bool, window: bool, window_drains: bool) -> str:
    """A node's NodeState: draining by hand or in a draining window under way, else
    cordoned by hand or in a window, else schedulable (the one rule `state_of` and the
    dashboard's rows both follow; the sweep's `drain_expired` drains alike)."""
    if (cordoned and drain_by_hand) or (window and window_drains):
        return NodeState.DRAINING
    return NodeState.CORDONED if cordoned or window else NodeState.SCHEDULABLE


def state_of(cordon: "Cordon | None", window: "MaintenanceWindow | None" = None) -> dict:
    """`{state, schedulable, reason, by, since, drainDeadline}` from a cordon row and
    the current maintenance window: a cordon by hand outlasts any window."""
    if cordon is None and window is not None:
        return {
            "state": NodeState.DRAINING if window.drain else NodeState.CORDONED,
            "schedulable": False,
            "reason": window.reason,
            "by": window.by_id,
            "since": window.starts_at,
            "drainDeadline": window.starts_at if window.drain else None,
        }
    if cordon is None:
        return {
            "state": NodeState.SCHEDULABLE,
            "schedulable": True,
            "reason": None,
            "by": None,
            "since": None,
            "drainDeadline": None,
        }
    # Its reason, by and since are the hand cordon's; a draining window under way
    # still drains it (the sweep's drain_expired), as a drain by hand would.
    deadlines = [cordon.drain_deadline] if cordon.drain_deadline else []
    if window is not None and window.drain:
        deadlines.append(window.starts_at)
    return {
        "state": state_name(
            cordoned=True,
            drain_by_hand=bool(cordon.drain_deadline),
            window=window is not None,
            window_drains=window is not None and window.drain,
        ),
        "schedulable": False,
        "reason": cordon.reason,
        "by": cordon.by_id,
        "since": cordon.since,
        "drainDeadline": min(deadlines, default=None),
    }


class NodeCordoned(DomainError):
    status_code = 409
    title = "Node is cordoned"


def lock_nodes(node_ids) -> None:
    """Take the nodes' row locks (in key order), the lock a cordon, drain or uncordon takes
    first (nodes.services): a write that gives them new work and then checks
    `check_schedulable` sees every cordon committed before it, and a cordon or drain
    begun meanwhile waits for the write to commit, so a drain then moves its new task.
    Checked without it, a create racing a drain left its task pending on the draining
    node, where no claim takes it. Inside a transaction only."""
    list(
        User.objects.select_for_update()
        .filter(pk__in=set(node_ids))
        .order_by("pk")
        .values_list("pk")
    )


def check_schedulable(node_id, now: datetime | None = None) -> None:
    """Refuse to give new work to a cordoned, draining or in-maintenance node (409).
    A write checks it under `lock_nodes`."""
    if not Node.objects.schedulable(now).filter(pk=node_id).exists():
        raise NodeCordoned("node is cordoned: it takes no new tasks until uncordoned")


class MaintenanceWindowQuerySet(models.QuerySet):
    def current(self, now: datetime):
        """Windows under way at `now`: their nodes are cordoned (drained with `drain`)."""
        return self.filter(starts_at__lte=now, ends_at__gt=now)

    def coming(self, now: datetime):
        return self.filter(starts_at__gt=now)


class MaintenanceWindow(models.Model):
    """A planned time a node is out: cordoned from `starts_at` (drained, with that as
    the deadline, when `drain`) and schedulable again at `ends_at`. A stored fact: the
    node's state is derived from it when read, so no cron entry of its own is needed."""

    node = models.ForeignKey(User, on_delete=models.CASCADE, related_name="maintenance_windows")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=NODE_REASON_MAX_LENGTH)
    drain = models.BooleanField(default=False)
    by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = MaintenanceWindowQuerySet.as_manager()

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["node", "ends_at"], name="window_node_end")]

    def __str__(self):
        return f"maintenance {self.starts_at:%Y-%m-%d %H:%M} to {self.ends_at:%Y-%m-%d %H:%M}"
