"""The nodes API's bodies: the heartbeat in and out, and the node list."""

from rest_framework import serializers

from nodes.models import Liveness
from taskmgmt.fields import IdField

# A node works on the few tasks it claimed; the bound keeps one beat's lookup small.
HEARTBEAT_MAX_TASK_IDS = 1000


class NodeSerializer(serializers.Serializer):
    """A node as `GET /api/nodes` shows it: a user annotated with `liveness` and
    with `open_count`/`in_progress_count` set by the view."""

    nodeId = serializers.UUIDField(source="id", read_only=True)
    name = serializers.CharField(read_only=True)
    email = serializers.EmailField(read_only=True)
    liveness = serializers.ChoiceField(choices=Liveness.choices, read_only=True)
    lastSeen = serializers.DateTimeField(
        source="last_seen", allow_null=True, read_only=True, help_text="By the server's clock."
    )
    openCount = serializers.IntegerField(
        source="open_count", read_only=True, help_text="Active tasks pending or in progress."
    )
    inProgressCount = serializers.IntegerField(source="in_progress_count", read_only=True)


class NodesListSerializer(serializers.Serializer):
    nodes = NodeSerializer(many=True, read_only=True)


class HeartbeatResultSerializer(serializers.Serializer):
    serverTime = serializers.DateTimeField(read_only=True, help_text="The server's clock.")
    leaseExpiresAt = serializers.DateTimeField(
        read_only=True, help_text="When the node counts as down without another beat or claim."
    )
    heartbeatSeconds = serializers.IntegerField(
        read_only=True, help_text="How often the node should beat (NODE_HEARTBEAT_SECONDS)."
    )
    pendingCount = serializers.IntegerField(
        read_only=True, help_text="The node's pending tasks it can still claim."
    )
    revokedTaskIds = serializers.ListField(
        child=serializers.UUIDField(),
        read_only=True,
        help_text=(
            "Of the taskIds sent, those no longer this node's to work on (reassigned, failed, "
            "deleted): stop working on them."
        ),
    )
    cancelTaskIds = serializers.ListField(
        child=serializers.UUIDField(),
        read_only=True,
        help_text=(
            "The node's in-progress tasks an admin asked to cancel: stop them and report "
            "taskStatus cancelled (a task that finished first may report its outcome)."
        ),
    )


class HeartbeatSerializer(serializers.Serializer):
    taskIds = serializers.ListField(
        child=IdField(),
        required=False,
        max_length=HEARTBEAT_MAX_TASK_IDS,
        help_text="The tasks the node is working on now; the answer names those taken away.",
    )
