"""A node's writes: its heartbeat, its labels."""

import logging
from datetime import datetime
from uuid import UUID

from django.db import transaction

from nodes import heartbeats
from nodes.models import NodeLabels, validate_labels

logger = logging.getLogger("taskmgmt.nodes")


def node_heartbeat(*, node_id: UUID, now: datetime) -> None:
    """Stamp the node's `last_seen` with the server's clock, never the node's.

    No instance saved, no signal, no history row, since every node runs this
    every few seconds: one Redis command, written to the database with the
    other nodes' beats in batches (nodes/heartbeats.py).
    """
    heartbeats.record(node_id=node_id, now=now)


@transaction.atomic
def node_set_labels(*, node, labels: dict, actor=None) -> dict:
    """Replace the node's labels (what placement matches selectors against); returns them.

    A change is a node event (`labels_change`); setting the same labels again is none."""
    validate_labels(labels)
    row, _ = NodeLabels.objects.select_for_update().get_or_create(node_id=node.pk)
    before = row.labels
    if before == labels:
        return labels
    row.labels = labels
    row.save()
    # NODE EVENT (issue 21, h20): node events land with cordon and drain; at merge this
    # becomes node_event_record(node=node, action="labels_change", actor=actor, reason="").
    logger.info(
        "node labels changed",
        extra={
            "event": "labels_change",
            "node_id": str(node.pk),
            "performed_by": str(actor.pk) if actor else None,
            "from_value": before,
            "to_value": labels,
        },
    )
    return labels
