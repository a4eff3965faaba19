"""A node's work, as the nodes API and the node page show it, told by the app that owns it.

The heartbeat's answer (its pending count, the tasks taken away), the node list's
counts and the node page's task panels are task data. The tasks app registers
its `NodeWork` when it starts (tasks.apps), so nodes never imports tasks and the
layers stay one-way (docs/architecture.md, Layers).
"""

from collections.abc import Collection
from datetime import datetime
from uuid import UUID

from django.http import HttpResponse


class NodeWork:
    """What the nodes app asks about nodes' work; these defaults answer "none"."""

    def open_counts_by_node(self) -> dict[UUID, tuple[int, int]]:
        """{node id: (open, in progress)} over active tasks."""
        return {}

    def in_progress_of(self, node, task_ids: Collection[UUID]) -> Collection[UUID]:
        """Of `task_ids`, those in progress on `node` now."""
        return ()

    def heartbeat_facts(
        self, node, now: datetime
    ) -> tuple[int, Collection[UUID], list, list, list]:
        """`claimable_count`, the node's in-progress tasks an admin asked to cancel, and
        its cordon and current windows as `nodes.models.drain_deadline_from_text` reads
        them, read together: the heartbeat answers them all."""
        return self.claimable_count(node, now), (), [], [], []

    def heartbeat_facts_read(self, node_id: UUID, now: datetime):
        """`heartbeat_facts`' statement (a taskmgmt.sql.Read) to send with another read,
        or None when it has none; `heartbeat_facts_from` reads its rows."""
        return None

    def heartbeat_facts_from(self, rows) -> tuple[int, Collection[UUID], list, list, list]:
        raise NotImplementedError  # only called with the rows of heartbeat_facts_read

    def claimable_count(self, node, now: datetime) -> int:
        """How many pending tasks `node` could claim now."""
        return 0

    def drain(self, node_id: UUID, now: datetime) -> tuple[int, int]:
        """A drain's move of the node's pending tasks: (moved, stayed)."""
        return 0, 0

    def drain_preview(self, node_id: UUID, now: datetime) -> tuple[int, int]:
        """What `drain` would do now, nothing changed: (movable, staying)."""
        return 0, 0

    def node_page(self, request, node, now: datetime) -> dict | HttpResponse:
        """The node page's work panels (a template context), or the answer to a POST of theirs."""
        return {}


_registered = NodeWork()


def register(work: NodeWork) -> None:
    global _registered
    _registered = work


def node_work() -> NodeWork:
    return _registered
