"""A node: a user with the node role, and what its heartbeats say about it.

`Node` is a proxy of `accounts.User` (no table of its own): the account is
identity and stays in accounts; liveness is derived from `last_seen` whenever
it is read, and its one definition is here.
"""

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Case, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Role, User


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
        """Nodes new work may be given to. A stub until cordon and drain land (issue 21's
        helper h20 owns them; its version wins at merge): every active node."""
        return self.filter(is_active=True)


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
