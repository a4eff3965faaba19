"""The nodes API's bodies: the heartbeat in and out, and the node list."""

from rest_framework import serializers

from nodes.models import Liveness, labels_errors
from taskmgmt.fields import IdField

# A node works on the few tasks it claimed; the bound keeps one beat's lookup small.
HEARTBEAT_MAX_TASK_IDS = 1000


class LabelsField(serializers.JSONField):
    """A JSON object of label keys to string values (SPEC, Placement): a node's labels,
    or a task's `nodeSelector`."""

    def __init__(self, **kwargs):
        kwargs.setdefault(
            "help_text",
            "A JSON object: at most 32 keys matching [a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?, "
            "each to a string of at most 63 characters.",
        )
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        errors = labels_errors(value)
        if errors:
            raise serializers.ValidationError(errors)
        return value


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
    labels = serializers.DictField(
        source="label_set",
        child=serializers.CharField(),
        read_only=True,
        help_text="What the node is, for selectors.",
    )


class NodeEnvelopeSerializer(serializers.Serializer):
    node = NodeSerializer(read_only=True)


class NodeLabelsSerializer(serializers.Serializer):
    labels = LabelsField(help_text="The node's labels, all of them: they replace its current ones.")


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


class HeartbeatSerializer(serializers.Serializer):
    taskIds = serializers.ListField(
        child=IdField(),
        required=False,
        max_length=HEARTBEAT_MAX_TASK_IDS,
        help_text="The tasks the node is working on now; the answer names those taken away.",
    )
