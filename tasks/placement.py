"""Placement: which node may take a task (SPEC, Placement; docs/placement.md).

The one rule, asked by create, bulk, broadcast, failover and drain alike: among
the schedulable active nodes that match the task's selector (every one, without a
selector), the alive ones, else those that are not down; of these, the ones with
no maintenance window starting before the task's deadline, unless every one has
such a window; of these, the least-loaded (fewest open tasks, ties by id).
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db.models import OuterRef, Subquery

from nodes import heartbeats
from nodes.models import Liveness, MaintenanceWindow, Node, labels_by_node, labels_match
from tasks.models import Task, TaskConflict


class NoNodeMatches(TaskConflict):
    title = "No node matches"


@dataclass
class Candidate:
    id: UUID
    key: str  # ties go to the lowest id, as text: the order failover always used
    liveness: str
    labels: dict
    load: int
    next_window: datetime | None  # when its first coming maintenance window starts

    def free_until(self, deadline: datetime) -> bool:
        """No maintenance window of this node starts before `deadline`."""
        return self.next_window is None or self.next_window >= deadline


class Placement:
    """The fleet as placement sees it at `now`: the schedulable nodes, their liveness,
    labels and open tasks. Built once for a batch of tasks; each `pick` counts the task
    it placed, so a batch spreads as one task at a time would.

    `alive_only`: only alive nodes may take work, never the not-down fallback (failover,
    which has always moved work to alive nodes only). `flush`: write the beats waiting in
    Redis first, as every reader of liveness does (the failover has just done so).
    `exclude`: nodes that may take none of them (the nodes a move takes the tasks from,
    or one about to be drained)."""

    def __init__(
        self,
        *,
        now: datetime,
        alive_only: bool = False,
        flush: bool = True,
        exclude: Collection[UUID] = (),
    ):
        if flush:
            heartbeats.flush()
        # A window under way makes a node unschedulable; the first coming one is read
        # in the same query, as a subquery per node, for `pick` to weigh.
        coming = MaintenanceWindow.objects.coming(now).filter(node=OuterRef("pk"))
        rows = (
            Node.objects.schedulable(now)
            .exclude(pk__in=list(exclude))
            .with_liveness(now)
            .with_labels()
            .annotate(next_window=Subquery(coming.order_by("starts_at").values("starts_at")[:1]))
            .values_list("pk", "liveness", "label_set", "next_window")
        )
        nodes = [row for row in rows if row[1] == Liveness.ALIVE or not alive_only]
        loads = Task.objects.filter(
            assigned_node_id__in=[pk for pk, *_ in nodes]
        ).open_counts_by_node()
        self.nodes = [
            Candidate(pk, str(pk), liveness, labels or {}, loads.get(pk, (0, 0))[0], window)
            for pk, liveness, labels, window in nodes
        ]
        self._matching: dict[str, list[Candidate]] = {}

    def __bool__(self) -> bool:
        return bool(self.nodes)

    def matching(self, selector: dict | None) -> list[Candidate]:
        """The nodes that match `selector`, remembered per selector for the batch."""
        key = repr(sorted((selector or {}).items()))
        if key not in self._matching:
            self._matching[key] = [
                node for node in self.nodes if labels_match(node.labels, selector)
            ]
        return self._matching[key]

    def pick(self, selector: dict | None, deadline: datetime | None = None) -> UUID | None:
        """The node to take one more task with `selector`, counted as taken; None if none.

        With the task's `deadline`, a node whose coming maintenance window starts before
        it is taken only when every other candidate has one too."""
        matching = self.matching(selector)
        pool = [node for node in matching if node.liveness == Liveness.ALIVE] or [
            node for node in matching if node.liveness != Liveness.DOWN
        ]
        if not pool:
            return None
        if deadline is not None:
            pool = [node for node in pool if node.free_until(deadline)] or pool
        best = min(pool, key=lambda node: (node.load, node.key))
        best.load += 1
        return best.id


def broadcast_targets(
    selector: dict | None, *, now: datetime, flush: bool = True
) -> list[Candidate]:
    """The nodes a broadcast with `selector` gives a task: every active schedulable one
    that matches (every one, without a selector), whatever its liveness or load.
    `flush`: as `Placement`'s (a write that has flushed before its transaction says no)."""
    return Placement(now=now, flush=flush).matching(selector)


def node_for(
    selector: dict | None,
    *,
    now: datetime,
    deadline: datetime | None = None,
    flush: bool = True,
) -> Node:
    """The node a new task with `selector` (and `deadline`) goes to (`Placement.pick`);
    409 if none matches. `flush`: as `Placement`'s."""
    placement = Placement(now=now, flush=flush)
    node_id = placement.pick(selector, deadline)
    if node_id is None:
        detail = no_match_detail(placement, selector, "the nodeSelector's labels")
        raise NoNodeMatches(f"no node matches: {detail}")
    return Node.objects.get(pk=node_id)


def no_match_detail(placement: Placement, selector: dict | None, labels: str) -> str:
    """Why `pick` found nothing: no schedulable node has the labels (named as `labels`
    says), or every one is down."""
    if placement.matching(selector):
        return f"every schedulable node with {labels} is down"
    return f"no schedulable node has {labels}"


NODE_DOES_NOT_MATCH = "This node does not match the task's nodeSelector."


def check_node_matches(node, selector: dict | None, *, field: str = "assigned_node") -> None:
    """A node named with a selector must match it (a 400 on `field` otherwise)."""
    if selector and not labels_match(labels_by_node([node.pk]).get(node.pk, {}), selector):
        raise ValidationError({field: [NODE_DOES_NOT_MATCH]})
