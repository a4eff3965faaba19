"""The nodes API's bodies: the heartbeat in and out, and the node list."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from nodes.models import NODE_REASON_MAX_LENGTH, Liveness, NodeEventKind, NodeState, labels_errors
from taskmgmt.fields import IdField, JSONBooleanField, MomentField, StringField
from taskmgmt.pagination import next_cursor_field

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


class NodeWindowSerializer(serializers.Serializer):
    """The maintenance window a node shows: the one under way, else the next coming one."""

    id = serializers.IntegerField(read_only=True)
    startsAt = serializers.DateTimeField(read_only=True)
    endsAt = serializers.DateTimeField(read_only=True)
    reason = serializers.CharField(read_only=True)
    drain = serializers.BooleanField(read_only=True)
    underWay = serializers.BooleanField(
        read_only=True, help_text="True: the window is under way now; false: it is to come."
    )


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
    schedulable = serializers.BooleanField(read_only=True, help_text="May be given new work.")
    state = serializers.ChoiceField(choices=NodeState.choices, read_only=True)
    cordonReason = serializers.CharField(read_only=True, allow_null=True)
    cordonedBy = serializers.UUIDField(read_only=True, allow_null=True)
    cordonedSince = serializers.DateTimeField(read_only=True, allow_null=True)
    drainDeadline = serializers.DateTimeField(read_only=True, allow_null=True)
    labels = serializers.DictField(
        source="label_set",
        child=serializers.CharField(),
        read_only=True,
        help_text="What the node is, for selectors.",
    )
    maintenanceWindow = NodeWindowSerializer(
        read_only=True,
        allow_null=True,
        help_text="Its maintenance window under way, else its next coming one; null for none.",
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
    schedulable = serializers.BooleanField(
        read_only=True, help_text="False when cordoned or draining: no new work comes."
    )
    drainDeadline = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="Draining: finish the work in progress by then, claim nothing, and exit.",
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


class CordonSerializer(serializers.Serializer):
    reason = StringField(
        max_length=NODE_REASON_MAX_LENGTH, help_text="Why: kept with the node's state and events."
    )


class UncordonSerializer(serializers.Serializer):
    # Optional (SPEC gives uncordon no body); checked like any reason when sent.
    reason = StringField(
        required=False,
        max_length=NODE_REASON_MAX_LENGTH,
        help_text="Why (optional): kept with the uncordon event.",
    )


class DrainSerializer(CordonSerializer):
    deadline = MomentField(
        required=False,
        help_text=(
            "Until when in-progress work may finish (future; no offset = UTC); it replaces "
            "a drain's current deadline. Default: the node's current drain deadline when "
            "draining, else now + DRAIN_DEADLINE_MINUTES."
        ),
    )

    def validate_deadline(self, value):
        if value <= timezone.now():
            raise serializers.ValidationError("The deadline must be in the future.")
        return value


class NodeStateSerializer(serializers.Serializer):
    """A node's scheduling state after a cordon, drain or uncordon."""

    nodeId = serializers.UUIDField(read_only=True)
    state = serializers.ChoiceField(choices=NodeState.choices, read_only=True)
    schedulable = serializers.BooleanField(read_only=True)
    reason = serializers.CharField(read_only=True, allow_null=True)
    by = serializers.UUIDField(read_only=True, allow_null=True)
    since = serializers.DateTimeField(read_only=True, allow_null=True)
    drainDeadline = serializers.DateTimeField(read_only=True, allow_null=True)
    movedCount = serializers.IntegerField(
        required=False, help_text="A drain: pending tasks moved to other nodes now."
    )
    stayedCount = serializers.IntegerField(
        required=False, help_text="A drain: pending tasks no other node could take (they stay)."
    )


class NodeEventSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    kind = serializers.ChoiceField(choices=NodeEventKind.choices, read_only=True)
    actor = serializers.UUIDField(source="actor_id", read_only=True, allow_null=True)
    reason = serializers.CharField(read_only=True)
    deadline = serializers.DateTimeField(read_only=True, allow_null=True)
    detail = serializers.CharField(read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)


class NodeEventsSerializer(serializers.Serializer):
    events = NodeEventSerializer(
        many=True, read_only=True, help_text="Newest first: one page, or every event."
    )
    nextCursor = next_cursor_field()


class MaintenanceWindowSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    startsAt = MomentField(source="starts_at")
    endsAt = MomentField(source="ends_at")
    reason = StringField(max_length=NODE_REASON_MAX_LENGTH)
    drain = JSONBooleanField(
        required=False,
        default=False,
        help_text="Drain at the start (deadline = startsAt) instead of only cordoning.",
    )
    by = serializers.UUIDField(source="by_id", read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)

    def validate(self, data):
        now = timezone.now()
        if data["ends_at"] <= now:
            raise serializers.ValidationError({"endsAt": ["The window lies in the past."]})
        if data["starts_at"] < now - timedelta(minutes=1):
            raise serializers.ValidationError(
                {"startsAt": ["The window must not start in the past."]}
            )
        if data["ends_at"] <= data["starts_at"]:
            raise serializers.ValidationError({"endsAt": ["The window must end after it starts."]})
        return data


class MaintenanceWindowsSerializer(serializers.Serializer):
    windows = MaintenanceWindowSerializer(many=True, read_only=True)
