"""The tasks API's bodies: camelCase fields in, the API's task shape out.

Input serializers only validate; the views hand `validated_data` to
`tasks.services`, which owns the rules that need the database row. The reads
that feed the output (`task_rows` for lists, `active_task_row` for one task)
live here too, because they fetch exactly the columns `TaskSerializer` shows.
"""

from datetime import UTC, datetime
from operator import attrgetter
from uuid import UUID

from django.db.models.utils import create_namedtuple_class
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import User
from taskmgmt.fields import StringField
from taskmgmt.sql import driver_rows, select_one
from tasks.models import (
    FAILURE_REASON_MAX_LENGTH,
    FailureCause,
    Task,
    TaskHistory,
    TaskStatus,
    validate_future,
    validate_node,
)

# The columns a task's representation reads, in `TaskSerializer` order.
TASK_COLUMNS = (
    "id",
    "name",
    "details",
    "assigned_node_id",
    "status",
    "locked_at",
    "active",
    "created_at",
    "updated_at",
    "attempts",
    "failure_cause",
    "failure_reason",
)
_task_columns = attrgetter(*TASK_COLUMNS)
# The named row `task_rows` yields (Django caches one class per set of names).
TaskRow = create_namedtuple_class(*TASK_COLUMNS)


def task_rows(queryset, index: str | None = None):
    """The tasks' `TASK_COLUMNS` as `TaskRow`s of driver values, for lists, read
    through `index` where given (`Task.objects.page_index`)."""
    return driver_rows(queryset, *TASK_COLUMNS, index=index)


def active_task_row(task_id: str) -> TaskRow | None:
    """The active task with this id as a `TaskRow`, or None (also for a malformed id).

    One plain SELECT (`taskmgmt.sql`): the detail endpoint is the hottest read.
    """
    try:
        task_id = UUID(task_id)
    except ValueError:
        return None
    row = select_one(Task, TASK_COLUMNS, id=task_id, active=True)
    return None if row is None else TaskRow._make(row)


def iso_utc(value: datetime) -> str:
    """DRF's ISO 8601 form ("Z" for UTC) without its per-call settings lookups.

    A naive value is a database driver's, which is UTC.
    """
    if value.tzinfo is None:
        return value.isoformat() + "Z"
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z"


def uuid_text(value: UUID | str) -> str:
    """The canonical form of an id, from a UUID or a driver's text (hex on SQLite)."""
    if isinstance(value, str) and len(value) == 36:
        return value
    return str(value if isinstance(value, UUID) else UUID(hex=value))


# --- Output -----------------------------------------------------------------


class TaskSerializer(serializers.Serializer):
    """A task, as every endpoint returns it."""

    # The fields document the shape (for the schema); `to_representation`
    # builds it directly from a Task or a `TaskRow`, because DRF's
    # per-field calls were a third of a list page's time (docs/performance.md).
    id = serializers.UUIDField(read_only=True)
    taskName = serializers.CharField(read_only=True)
    taskDetails = serializers.CharField(read_only=True)
    assignedNode = serializers.UUIDField(read_only=True)
    status = serializers.ChoiceField(choices=TaskStatus.choices, read_only=True)
    lockedAt = serializers.DateTimeField(read_only=True)
    active = serializers.BooleanField(read_only=True)
    createdAt = serializers.DateTimeField(read_only=True)
    updatedAt = serializers.DateTimeField(read_only=True)
    attempts = serializers.IntegerField(
        read_only=True, help_text="How many times a node has started it (a claim or in_progress)."
    )
    failureCause = serializers.ChoiceField(
        choices=FailureCause.choices,
        allow_null=True,
        read_only=True,
        help_text="Why it failed; null unless the task is failed.",
    )
    failureReason = serializers.CharField(
        allow_null=True,
        read_only=True,
        help_text="The node's own words when it reported the failure; null when it gave none.",
    )

    def to_representation(self, task):
        return task_representation(task)


def task_representation(task) -> dict:
    """`TaskSerializer`'s output for a Task or a `TaskRow`."""
    (
        task_id,
        name,
        details,
        node_id,
        status,
        locked_at,
        active,
        created_at,
        updated_at,
        attempts,
        failure_cause,
        failure_reason,
    ) = _task_columns(task)
    # A cause outlives its failure until the task is given out again: show it only on failed.
    failed = status == TaskStatus.FAILED
    return {
        "id": uuid_text(task_id),
        "taskName": name,
        "taskDetails": details,
        "assignedNode": uuid_text(node_id),
        "status": status,
        "lockedAt": iso_utc(locked_at),
        "active": bool(active),
        "createdAt": iso_utc(created_at),
        "updatedAt": iso_utc(updated_at),
        "attempts": attempts,
        "failureCause": (failure_cause or None) if failed else None,
        "failureReason": (failure_reason or None) if failed else None,
    }


class TaskEnvelopeSerializer(serializers.Serializer):
    """`{task}`: documents the shape; `tasks.views.task_response` builds it directly,
    because instantiating this copies every declared field (docs/performance.md)."""

    task = TaskSerializer(read_only=True)


class TaskHistorySerializer(serializers.ModelSerializer):
    fromValue = serializers.CharField(source="from_value", allow_null=True, read_only=True)
    toValue = serializers.CharField(source="to_value", allow_null=True, read_only=True)
    performedBy = serializers.UUIDField(
        source="performed_by_id",
        allow_null=True,
        read_only=True,
        help_text="The acting user's id; null means the system (the sweep).",
    )
    cause = serializers.SerializerMethodField(
        help_text="Why (a failure cause) for failures and the system's failover steps; else null."
    )
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = TaskHistory
        fields = ["id", "action", "fromValue", "toValue", "performedBy", "cause", "createdAt"]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(choices=FailureCause.choices, allow_null=True, read_only=True)
    )
    def get_cause(self, row) -> str | None:
        return row.cause or None


class TaskHistoryEnvelopeSerializer(serializers.Serializer):
    history = TaskHistorySerializer(many=True, read_only=True)


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField(read_only=True)


class FailedCountSerializer(serializers.Serializer):
    failedCount = serializers.IntegerField(
        read_only=True, help_text="How many tasks the sweep failed."
    )
    # Not read_only: drf-spectacular would document it as always present.
    reassignedCount = serializers.IntegerField(
        required=False,
        help_text="With FAILOVER=reassign only: tasks of down nodes given to alive ones.",
    )


# --- Input ------------------------------------------------------------------


class IdField(serializers.UUIDField):
    """A UUID sent as a JSON string; DRF's own field would also take a number."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ActiveNodeField(IdField):
    """The id of an active node, resolved to that user."""

    default_error_messages = {"does_not_exist": "No user has this id."}
    default_validators = [validate_node]

    def to_internal_value(self, data):
        node = User.objects.filter(pk=super().to_internal_value(data)).first()
        if node is None:
            self.fail("does_not_exist")
        return node


class DeadlineField(serializers.DateTimeField):
    """A future moment; sent without an offset it is taken as UTC."""

    default_validators = [validate_future]

    def __init__(self, **kwargs):
        super().__init__(default_timezone=UTC, **kwargs)


class TaskFieldsSerializer(serializers.Serializer):
    taskName = StringField(max_length=255)
    taskDetails = StringField(max_length=10_000)
    assignedNode = ActiveNodeField()
    lockedAt = DeadlineField(help_text="The deadline: ISO 8601, in the future; no offset = UTC.")


class TaskEditSerializer(TaskFieldsSerializer):
    taskId = IdField()


class TaskAssignSerializer(serializers.Serializer):
    taskId = IdField()
    nodeId = ActiveNodeField()
    lockedAt = DeadlineField(
        required=False,
        allow_null=True,
        help_text=(
            "A new future deadline. Without one the task keeps its deadline, unless that "
            "has passed or is nearer than REASSIGN_DEADLINE_MINUTES: then now + that."
        ),
    )


class ReasonField(serializers.CharField):
    """A JSON string only: DRF's CharField would turn 0 into "0". NUL is refused by DRF."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TaskStatusSerializer(serializers.Serializer):
    taskId = IdField()
    taskStatus = serializers.ChoiceField(choices=TaskStatus.choices)
    reason = ReasonField(
        max_length=FAILURE_REASON_MAX_LENGTH,
        required=False,
        allow_blank=True,
        help_text="Why the node failed it; kept with taskStatus failed, ignored otherwise.",
    )
