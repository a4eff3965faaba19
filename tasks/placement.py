"""Placement: which node may take a task (SPEC, Placement; docs/placement.md).

The one rule, asked by create, bulk, broadcast and failover alike (and by drain
when it lands): among the schedulable active nodes that match the task's
selector (every one, without a selector), the least-loaded alive one (fewest
open tasks, ties by id), else the least-loaded one that is not down.
"""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.core.exceptions import ValidationError

from nodes import heartbeats
from nodes.models import Liveness, Node, labels_by_node, labels_match
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


class Placement:
    """The fleet as placement sees it at `now`: the schedulable nodes, their liveness,
    labels and open tasks. Built once for a batch of tasks; each `pick` counts the task
    it placed, so a batch spreads as one task at a time would.

    `alive_only`: only alive nodes may take work, never the not-down fallback (failover,
    which has always moved work to alive nodes only). `flush`: write the beats waiting in
    Redis first, as every reader of liveness does (the failover has just done so)."""

    def __init__(self, *, now: datetime, alive_only: bool = False, flush: bool = True):
        if flush:
            heartbeats.flush()
        rows = (
            Node.objects.schedulable(now)
            .with_liveness(now)
            .with_labels()
            .values_list("pk", "liveness", "label_set")
        )
        nodes = [row for row in rows if row[1] == Liveness.ALIVE or not alive_only]
        loads = Task.objects.filter(
            assigned_node_id__in=[pk for pk, *_ in nodes]
        ).open_counts_by_node()
        self.nodes = [
            Candidate(pk, str(pk), liveness, labels or {}, loads.get(pk, (0, 0))[0])
            for pk, liveness, labels in nodes
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

    def pick(self, selector: dict | None) -> UUID | None:
        """The node to take one more task with `selector`, counted as taken; None if none."""
        matching = self.matching(selector)
        pool = [node for node in matching if node.liveness == Liveness.ALIVE] or [
            node for node in matching if node.liveness != Liveness.DOWN
        ]
        if not pool:
            return None
        best = min(pool, key=lambda node: (node.load, node.key))
        best.load += 1
        return best.id


def node_for(selector: dict | None, *, now: datetime) -> Node:
    """The node a new task with `selector` goes to (`Placement.pick`); 409 if none matches."""
    node_id = Placement(now=now).pick(selector)
    if node_id is None:
        raise NoNodeMatches("no node matches: no schedulable node has the nodeSelector's labels")
    return Node.objects.get(pk=node_id)


def check_node_matches(node, selector: dict | None, *, field: str = "assigned_node") -> None:
    """A node named with a selector must match it (a 400 on `field` otherwise)."""
    if selector and not labels_match(labels_by_node([node.pk]).get(node.pk, {}), selector):
        raise ValidationError({field: ["This node does not match the task's nodeSelector."]})
