"""A node's writes: its heartbeat, its labels, and what admins do to it (cordon, drain,
uncordon, maintenance windows), each recorded as a node event."""

from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from nodes import heartbeats
from nodes.models import (
    Cordon,
    MaintenanceWindow,
    NodeEvent,
    NodeEventKind,
    NodeLabels,
    lock_nodes,
    validate_labels,
)
from taskmgmt.exceptions import DomainError


def node_heartbeat(*, node_id: UUID, now: datetime) -> None:
    """Stamp the node's `last_seen` with the server's clock, never the node's.

    No instance saved, no signal, no history row, since every node runs this
    every few seconds: one Redis command, written to the database with the
    other nodes' beats in batches (nodes/heartbeats.py).
    """
    heartbeats.record(node_id=node_id, now=now)


def _lock_node(node_id: UUID) -> None:
    """Take the node's row lock: the writers of its cordon or labels run one at a time.
    Each looks for its row FOR UPDATE first, and where there is none MariaDB takes a gap
    lock that two of them hold at once; their inserts then deadlock (a 503 to the admin)."""
    lock_nodes([node_id])


@transaction.atomic
def node_set_labels(*, node, labels: dict, actor=None) -> dict:
    """Replace the node's labels (what placement matches selectors against); returns them.

    A change is a node event (`labels_change`); setting the same labels again is none."""
    validate_labels(labels)
    _lock_node(node.pk)
    row, _ = NodeLabels.objects.select_for_update().get_or_create(node_id=node.pk)
    before = row.labels
    if before == labels:
        return labels
    row.labels = labels
    row.save()
    node_event_record(
        node_id=node.pk,
        kind=NodeEventKind.LABELS_CHANGE,
        actor=actor,
        detail=_labels_detail(before, labels),
    )
    return labels


def _labels_detail(before: dict, after: dict) -> str:
    """What a labels change did, in the event's short detail (200 characters at most)."""
    text = " ".join(f"{k}={v}" for k, v in sorted(after.items())) or "none"
    return text if len(text) <= 200 else text[:199] + "…"


def node_event_record(
    *,
    node_id: UUID,
    kind: str,
    actor=None,
    reason: str = "",
    deadline: datetime | None = None,
    detail: str = "",
) -> NodeEvent:
    """Append one node event (a NodeEventKind) by `actor` (None: the system)."""
    return NodeEvent.objects.create(
        node_id=node_id,
        kind=kind,
        actor=actor,
        reason=reason,
        deadline=deadline,
        detail=detail,
    )


class NotCordoned(DomainError):
    status_code = 409
    title = "Node is not cordoned"


@transaction.atomic
def node_cordon(
    *, node_id: UUID, reason: str, actor, drain_deadline: datetime | None = None
) -> Cordon:
    """Take the node out of scheduling (a drain when `drain_deadline` is given:
    `node_drain`). A repeat keeps who cordoned it and since when, and a cordon over a
    drain keeps the drain, as Nomad's ineligibility leaves a drain running: only a new
    reason is taken, with an event; the same one again changes nothing."""
    if drain_deadline is not None:
        return node_drain(node_id=node_id, reason=reason, actor=actor, deadline=drain_deadline)
    _lock_node(node_id)
    cordon, created = Cordon.objects.select_for_update().get_or_create(
        node_id=node_id, defaults={"reason": reason, "by": actor, "since": timezone.now()}
    )
    if not created:
        if cordon.reason == reason:
            return cordon
        cordon.reason = reason
        cordon.save(update_fields=["reason"])
    detail = "" if created else "reason changed"
    if cordon.drain_deadline:
        detail += "; still draining"
    node_event_record(
        node_id=node_id, kind=NodeEventKind.CORDON, actor=actor, reason=reason, detail=detail
    )
    return cordon


def drain_deadline_default(node_id: UUID, now: datetime | None = None) -> datetime:
    """A drain's deadline when none is given: the one a drain under way already has
    (a repeat does not push it back), else now + DRAIN_DEADLINE_MINUTES."""
    current = (
        Cordon.objects.filter(node_id=node_id, drain_deadline__isnull=False)
        .values_list("drain_deadline", flat=True)
        .first()
    )
    now = now or timezone.now()
    return current or now + timedelta(minutes=settings.DRAIN_DEADLINE_MINUTES)


@transaction.atomic
def node_drain(*, node_id: UUID, reason: str, actor, deadline: datetime | None = None) -> Cordon:
    """Cordon the node and set its drain deadline (`deadline`, else
    `drain_deadline_default`), keeping who cordoned it and since when if it already
    was; the event is recorded. What a drain does to the node's tasks is the tasks
    side's (nodes.work.NodeWork.drain)."""
    _lock_node(node_id)
    cordon, _ = Cordon.objects.select_for_update().get_or_create(
        node_id=node_id, defaults={"reason": reason, "by": actor, "since": timezone.now()}
    )
    # Read under the row's lock: two repeats at once cannot both take a fresh default.
    deadline = deadline or drain_deadline_default(node_id)
    cordon.reason, cordon.drain_deadline = reason, deadline
    cordon.save(update_fields=["reason", "drain_deadline"])
    node_event_record(
        node_id=node_id, kind=NodeEventKind.DRAIN, actor=actor, reason=reason, deadline=deadline
    )
    return cordon


@transaction.atomic
def node_uncordon(*, node_id: UUID, reason: str, actor) -> None:
    """End a cordon or a drain, and any maintenance window under way (its end set to
    now, so it stays in the node's windows as ended early): the node is schedulable
    again. One `uncordon` event, whose detail names the windows ended."""
    now = timezone.now()
    _lock_node(node_id)
    deleted, _ = Cordon.objects.filter(node_id=node_id).delete()
    under_way = list(
        MaintenanceWindow.objects.current(now)
        .filter(node_id=node_id)
        .select_for_update()
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if under_way:
        MaintenanceWindow.objects.filter(pk__in=under_way).update(ends_at=now)
    if not deleted and not under_way:
        raise NotCordoned("node is not cordoned or draining")
    ended = ", ".join(map(str, under_way))
    node_event_record(
        node_id=node_id,
        kind=NodeEventKind.UNCORDON,
        actor=actor,
        reason=reason,
        detail=f"ended maintenance window {ended} early"[:200] if under_way else "",
    )


@transaction.atomic
def node_maintenance_schedule(
    *, node_id: UUID, starts_at: datetime, ends_at: datetime, reason: str, drain: bool, actor
) -> MaintenanceWindow:
    """Plan a window (the serializer has checked it is in the future and ends after it
    starts). The node's state follows from it when read: nothing else to schedule.
    The node's lock first, as `node_uncordon` takes it before the node's windows': a new
    window waiting for the node's row (its foreign key) deadlocked with an uncordon."""
    _lock_node(node_id)
    window = MaintenanceWindow.objects.create(
        node_id=node_id, starts_at=starts_at, ends_at=ends_at, reason=reason, drain=drain, by=actor
    )
    node_event_record(
        node_id=node_id,
        kind=NodeEventKind.MAINTENANCE_SCHEDULED,
        actor=actor,
        reason=reason,
        deadline=starts_at,
        detail=f"window {window.pk} until {ends_at.isoformat()}{', drain' if drain else ''}",
    )
    return window


class WindowNotComing(DomainError):
    status_code = 409
    title = "Window not coming"


@transaction.atomic
def node_maintenance_cancel(*, node_id: UUID, window_id: int, actor) -> None:
    """Cancel a coming window (MaintenanceWindow.DoesNotExist if the node has none by
    that id). One under way or past is history: ending it early is `node_uncordon`'s job.
    The node's lock first, as `node_uncordon` takes it before the node's windows': the
    window's first, its event (which needs the node's row) deadlocked with an uncordon."""
    _lock_node(node_id)
    window = MaintenanceWindow.objects.select_for_update().get(pk=window_id, node_id=node_id)
    now = timezone.now()
    if window.starts_at <= now:
        which = "has ended" if window.ends_at <= now else "is under way (uncordon ends it)"
        raise WindowNotComing(f"only a coming window can be cancelled; this one {which}")
    window.delete()
    node_event_record(
        node_id=node_id,
        kind=NodeEventKind.MAINTENANCE_CANCELLED,
        actor=actor,
        reason=window.reason,
        deadline=window.starts_at,
        detail=f"window {window_id}",
    )
