"""A node's writes: its heartbeat."""

from datetime import datetime
from uuid import UUID

from nodes import heartbeats


def node_heartbeat(*, node_id: UUID, now: datetime) -> None:
    """Stamp the node's `last_seen` with the server's clock, never the node's.

    No instance saved, no signal, no history row, since every node runs this
    every few seconds: one Redis command, written to the database with the
    other nodes' beats in batches (nodes/heartbeats.py).
    """
    heartbeats.record(node_id=node_id, now=now)
