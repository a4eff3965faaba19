"""A node: a user with the node role, and what its heartbeats say about it.

`Node` is a proxy of `accounts.User` (no table of its own): the account is
identity and stays in accounts; liveness is derived from `last_seen` whenever
it is read, and its one definition is here.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Case, Value, When
from django.utils import timezone

from accounts.models import Role, User


class Liveness(models.TextChoices):
    """What a node's last heartbeat says about it now (docs/nodes-and-workers.md)."""

    ALIVE = "alive", "Alive"
    STALE = "stale", "Stale"
    DOWN = "down", "Down"
    NEVER_SEEN = "never_seen", "Never seen"


def liveness_cutoffs(now: datetime) -> tuple[datetime, datetime]:
    """(stale_before, down_before): a node last seen before these is stale, or down.

    The one definition of liveness, used by the queryset and by single users.
    Stale once a beat is missed (1.5 intervals, so a late beat is not a miss);
    down after NODE_DOWN_AFTER seconds.
    """
    stale = timedelta(seconds=settings.NODE_HEARTBEAT_SECONDS * 1.5)
    down = timedelta(seconds=settings.NODE_DOWN_AFTER)
    return now - stale, now - down


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


class NodeQuerySet(models.QuerySet):
    def with_liveness(self, now: datetime | None = None):
        """Annotates `liveness` (a `Liveness` value), derived from `last_seen` at `now`."""
        return self.annotate(liveness=liveness_case(now or timezone.now()))

    def down(self, now: datetime | None = None):
        """Nodes seen once and not since NODE_DOWN_AFTER (a never-seen node is not down:
        it may be a client that does not beat)."""
        _, down_before = liveness_cutoffs(now or timezone.now())
        return self.filter(last_seen__lt=down_before)

    def alive(self, now: datetime | None = None):
        stale_before, _ = liveness_cutoffs(now or timezone.now())
        return self.filter(last_seen__gte=stale_before, is_active=True)


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
