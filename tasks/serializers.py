"""The tasks API's bodies: camelCase fields in, the API's task shape out.

Input serializers only validate; the views hand `validated_data` to
`tasks.services`, which owns the rules that need the database row. The reads
that feed the output (`task_rows` for lists, `active_task_row` for one task)
are in tasks.selectors, with every other task read.
"""

import json
from operator import attrgetter

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from accounts.models import User
from accounts.serializers import UserDetailsSerializer
from nodes.serializers import LabelsField
from taskmgmt.fields import IdField, MomentField, StringField, iso_utc, uuid_text
from taskmgmt.pagination import next_cursor_field
from taskmgmt.renderers import JSONText
from tasks.models import (
    ATTEMPTS_MAX,
    CANCEL_REASON_MAX_LENGTH,
    FAILURE_REASON_MAX_LENGTH,
    PRIORITY_DEFAULT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PROGRESS_MESSAGE_MAX_LENGTH,
    FailureCause,
    TaskHistory,
    TaskStatus,
    json_size_error,
    validate_future,
    validate_node,
)
from tasks.selectors import TASK_COLUMNS

_task_columns = attrgetter(*TASK_COLUMNS)


# --- Output -----------------------------------------------------------------


class ProgressSerializer(serializers.Serializer):
    percent = serializers.FloatField(read_only=True, allow_null=True)
    message = serializers.CharField(read_only=True, allow_null=True)
    updatedAt = serializers.DateTimeField(read_only=True)


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
    payload = serializers.JSONField(
        read_only=True, allow_null=True, help_text="The task's input: any JSON value, or null."
    )
    result = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text="What the node sent with completed or failed; null until then.",
    )
    progress = ProgressSerializer(
        read_only=True, allow_null=True, help_text="The latest progress report; null if none."
    )
    checkpoint = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text="The latest checkpoint: kept across reassignments, for the next attempt.",
    )
    attempt = serializers.IntegerField(
        read_only=True, help_text="The current attempt (= attempts): send it with reports."
    )
    priority = serializers.IntegerField(
        read_only=True, help_text="1-100, higher first: its node claims it before lower ones."
    )
    nodeSelector = serializers.DictField(
        child=serializers.CharField(),
        read_only=True,
        allow_null=True,
        help_text="The labels a node must have to take it; null: any node.",
    )
    pinned = serializers.BooleanField(
        read_only=True,
        help_text="One of a broadcast's tasks: never moved to another node, failed instead.",
    )
    cancelRequestedAt = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When an admin asked to cancel this in-progress task; null if nobody did.",
    )
    cancelReason = serializers.CharField(
        read_only=True, allow_null=True, help_text="The admin's reason for the cancel request."
    )

    def to_representation(self, task):
        return task_representation(task)


def task_representation(task, *, json_text: bool = False) -> dict:
    """`TaskSerializer`'s output for a Task or a `TaskRow`.

    `json_text` (lists): a row's JSON columns stay the database's text, which the
    renderer copies out unparsed (`taskmgmt.renderers.JSONText`)."""
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
        payload,
        result,
        percent,
        message,
        progress_at,
        checkpoint,
        priority,
        node_selector,
        pinned,
        cancel_requested_at,
        cancel_reason,
    ) = _task_columns(task)
    if isinstance(task, tuple):  # a `TaskRow`: JSON columns as the driver's text
        as_value = _json_text if json_text else _json
        payload, result, checkpoint = as_value(payload), as_value(result), as_value(checkpoint)
        node_selector = _json(node_selector)
    # A cause outlives its failure until the task is given out again: show it only on
    # failed (and on cancelled, where the sweep's cancel_timeout is one).
    failed = status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
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
        "payload": payload,
        "result": result,
        "progress": None
        if progress_at is None
        else {"percent": percent, "message": message, "updatedAt": iso_utc(progress_at)},
        "checkpoint": checkpoint,
        "attempt": attempts,
        "priority": priority,
        "nodeSelector": node_selector,
        "pinned": bool(pinned),
        "cancelRequestedAt": None if cancel_requested_at is None else iso_utc(cancel_requested_at),
        "cancelReason": cancel_reason,
    }


class ProfileSerializer(serializers.Serializer):
    userDetails = UserDetailsSerializer(read_only=True)
    tasks = TaskSerializer(
        many=True, read_only=True, help_text="The node's own active tasks, one page of them."
    )
    nextCursor = next_cursor_field()


def _json(text):
    """A JSON column's driver value, parsed (None is SQL NULL)."""
    return None if text is None else json.loads(text)


def _json_text(text):
    """A JSON column's driver value, for the renderer to copy out as it is."""
    return None if text is None else JSONText(text)


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


class ActiveNodeField(IdField):
    """The id of an active node, resolved to that user."""

    default_error_messages = {"does_not_exist": "No user has this id."}
    default_validators = [validate_node]

    def to_internal_value(self, data):
        node = User.objects.filter(pk=super().to_internal_value(data)).first()
        if node is None:
            self.fail("does_not_exist")
        return node


class DeadlineField(MomentField):
    """A future moment; sent without an offset it is taken as UTC."""

    default_validators = [validate_future]


class JSONValueField(serializers.JSONField):
    """Any JSON value (null too) up to the bytes named by the setting `limit`, without
    NUL or lone surrogates (`tasks.models.json_size_error`)."""

    def __init__(self, *, limit: str, **kwargs):
        self.limit = limit
        super().__init__(required=False, allow_null=True, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        error = json_size_error(value, getattr(settings, self.limit))
        if error:
            raise serializers.ValidationError(error)
        return value


class AttemptField(serializers.IntegerField):
    """A JSON integer the attempts column can hold: DRF's own field would take "3", 3.0
    or true."""

    def __init__(self, **kwargs):
        super().__init__(
            required=False,
            min_value=0,
            max_value=ATTEMPTS_MAX,
            help_text=(
                "The attempt this report is about (the task's `attempt` when it was "
                "claimed): any other is a 409 stale attempt."
            ),
            **kwargs,
        )

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class PercentField(serializers.FloatField):
    """A JSON number 0-100: DRF's own field would take "50" or true."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class PriorityField(serializers.IntegerField):
    """A JSON integer 1-100: DRF's own field would take "3", 3.0 or true."""

    def __init__(self, **kwargs):
        super().__init__(
            min_value=PRIORITY_MIN,
            max_value=PRIORITY_MAX,
            help_text=(
                f"{PRIORITY_MIN}-{PRIORITY_MAX}, default {PRIORITY_DEFAULT}: a node claims "
                "its highest-priority task first."
            ),
            **kwargs,
        )

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class TaskFieldsSerializer(serializers.Serializer):
    taskName = StringField(max_length=255)
    taskDetails = StringField(max_length=10_000)
    assignedNode = ActiveNodeField(
        required=False,
        help_text=(
            "The node; optional with nodeSelector (then the server picks one that matches; "
            "null there counts as left out)."
        ),
    )
    lockedAt = DeadlineField(help_text="The deadline: ISO 8601, in the future; no offset = UTC.")
    payload = JSONValueField(
        limit="TASK_PAYLOAD_MAX_BYTES",
        help_text=(
            "The task's input: any JSON value, at most TASK_PAYLOAD_MAX_BYTES as JSON. "
            "Left out of an edit, the task keeps its payload."
        ),
    )
    nodeSelector = LabelsField(
        required=False,
        allow_null=True,
        help_text=(
            "The labels a node must have to take this task (every key at that value). "
            "Without assignedNode the server picks the least-loaded matching node; with "
            "it, that node must match. Left out of an edit, the task keeps its selector."
        ),
    )
    priority = PriorityField(required=False)

    # SPEC: with nodeSelector, assignedNode is optional, so null there means left out.
    null_node_with_selector = True

    def to_internal_value(self, data):
        if (
            self.null_node_with_selector
            and isinstance(data, dict)
            and "nodeSelector" in data
            and data.get("assignedNode", "") is None
        ):
            data = {name: value for name, value in data.items() if name != "assignedNode"}
        try:
            data = super().to_internal_value(data)
        except serializers.ValidationError as error:
            # Named with the other fields' errors, not only once they pass.
            if isinstance(error.detail, dict) and _no_node(data):
                error.detail.setdefault("assignedNode", [NODE_REQUIRED])
            raise
        if _no_node(data):
            raise serializers.ValidationError({"assignedNode": [NODE_REQUIRED]})
        return data


NODE_REQUIRED = "This field is required (or send nodeSelector)."


def _no_node(data) -> bool:
    return isinstance(data, dict) and "assignedNode" not in data and "nodeSelector" not in data


class TaskEditSerializer(TaskFieldsSerializer):
    taskId = IdField()
    assignedNode = ActiveNodeField()

    null_node_with_selector = False  # an edit always names its node


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
    result = JSONValueField(
        limit="TASK_RESULT_MAX_BYTES",
        help_text=(
            "The task's output, any JSON value: kept with completed or failed, and with "
            "cancelled (what the work had done when it stopped); ignored with in_progress."
        ),
    )
    attempt = AttemptField()


class TaskProgressSerializer(serializers.Serializer):
    taskId = IdField()
    attempt = AttemptField()
    percent = PercentField(required=False, allow_null=True, min_value=0, max_value=100)
    message = StringField(
        max_length=PROGRESS_MESSAGE_MAX_LENGTH, required=False, allow_null=True, allow_blank=True
    )
    checkpoint = JSONValueField(
        limit="TASK_CHECKPOINT_MAX_BYTES",
        help_text=(
            "Where the next attempt may resume, any JSON value: kept until the next "
            "checkpoint, across reassignments. Left out, the last one stays."
        ),
    )


class TaskBulkItemSerializer(TaskFieldsSerializer):
    """One task of a bulk create: a create body. Its node is resolved with the others'
    in one query (tasks.services.tasks_create_bulk), not one query per item."""

    assignedNode = IdField(
        required=False,
        help_text=(
            "The node; optional with nodeSelector (then the server picks one that matches; "
            "null there counts as left out)."
        ),
    )


class TaskBulkSerializer(serializers.Serializer):
    tasks = TaskBulkItemSerializer(
        many=True, help_text="1 to BULK_MAX_TASKS create bodies; all are created, or none."
    )


class TaskBroadcastSerializer(serializers.Serializer):
    taskName = StringField(max_length=255)
    taskDetails = StringField(max_length=10_000)
    lockedAt = DeadlineField(help_text="The deadline: ISO 8601, in the future; no offset = UTC.")
    payload = JSONValueField(
        limit="TASK_PAYLOAD_MAX_BYTES",
        help_text="Every task's input: any JSON value, at most TASK_PAYLOAD_MAX_BYTES as JSON.",
    )
    nodeSelector = LabelsField(
        required=False,
        allow_null=True,  # as on create: null is no selector
        help_text=(
            "One task for every schedulable node with these labels; {}, null or none: every one."
        ),
    )
    priority = PriorityField(required=False)


class TasksEnvelopeSerializer(serializers.Serializer):
    tasks = TaskSerializer(many=True, read_only=True, help_text="In the order sent.")


def bulk_items(data) -> tuple[list[dict], list[dict]]:
    """The items of a bulk body `{tasks: [...]}`, each validated, and each one's errors
    by index and field (`{"tasks[3].lockedAt": [...]}`; `{}` for a good item). A bad item
    keeps only its valid `assignedNode` and `nodeSelector`: its node is checked with the
    others' (tasks.services.tasks_create_bulk), so one 400 names every bad item. A body
    that is not a list of 1 to BULK_MAX_TASKS is a 400 on `tasks`. One serializer for
    every item: DRF's fields are bound once, not copied per item (a thousand items)."""
    items = data.get("tasks") if isinstance(data, dict) else None
    limit = settings.BULK_MAX_TASKS
    if not isinstance(items, list):
        raise serializers.ValidationError({"tasks": ["Must be a list of task create bodies."]})
    if not 1 <= len(items) <= limit:
        raise serializers.ValidationError(
            {"tasks": [f"Must hold 1 to {limit} tasks; this holds {len(items)}."]}
        )
    item_serializer = TaskBulkItemSerializer()
    validated, errors = [], []
    for index, item in enumerate(items):
        try:
            validated.append(item_serializer.run_validation(item))
            errors.append({})
            continue
        except serializers.ValidationError as error:
            detail = error.detail if isinstance(error.detail, dict) else {None: error.detail}
        found = {}
        for field, messages in detail.items():
            whole = field in (None, api_settings.NON_FIELD_ERRORS_KEY)  # not an object
            found[f"tasks[{index}]" if whole else f"tasks[{index}].{field}"] = messages
        errors.append(found)
        validated.append(_node_fields(item_serializer, item, detail))
    return validated, errors


def _node_fields(item_serializer, item, detail: dict) -> dict:
    """What of a bad bulk item its node check needs, where valid: `assignedNode`
    (null counts as left out, as with nodeSelector it may) and `nodeSelector`."""
    if not isinstance(item, dict) or None in detail or "assignedNode" in detail:
        return {}
    fields = {}
    for name in ("assignedNode", "nodeSelector"):
        if name in detail or item.get(name) is None:
            continue
        try:
            fields[name] = item_serializer.fields[name].run_validation(item[name])
        except serializers.ValidationError:
            return {}
    return fields


class TaskCancelSerializer(serializers.Serializer):
    reason = ReasonField(
        max_length=CANCEL_REASON_MAX_LENGTH,
        required=False,
        allow_blank=True,
        help_text="Why it is cancelled: shown to the node and kept in history.",
    )
