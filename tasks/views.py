"""The tasks API at the original system's paths (routed in `tasks/urls.py`).

Views route and authorize: querysets are scoped to the requester, permission
classes decide who may call what, and every change goes through
`tasks.services`, whose domain errors `taskmgmt.errors` turns into responses.
"""

from collections.abc import Callable
from functools import cache
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.fields import SkipField, empty, get_error_detail
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.status import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from accounts.permissions import IsAdminRole, IsNodeRole
from accounts.serializers import MessageSerializer
from taskmgmt.errors import error_responses
from taskmgmt.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from taskmgmt.parsers import body_up_to
from tasks import services
from tasks.actor import acting_as
from tasks.models import PRIORITY_DEFAULT, Task, TaskStatus
from tasks.pagination import CappedTaskPagination, TaskPagination
from tasks.permissions import IsAssignedNodeOrAdmin, IsNodeWithOwnTasks
from tasks.selectors import TaskRow, active_task_row, task_page_rows, task_rows
from tasks.serializers import (
    FailedCountSerializer,
    ProfileSerializer,
    TaskAssignSerializer,
    TaskBroadcastSerializer,
    TaskBulkSerializer,
    TaskCancelSerializer,
    TaskEditSerializer,
    TaskEnvelopeSerializer,
    TaskFieldsSerializer,
    TaskHistoryEnvelopeSerializer,
    TaskProgressSerializer,
    TasksEnvelopeSerializer,
    TaskSerializer,
    TaskStatusSerializer,
    bulk_items,
    task_representation,
)

NO_SUCH_TASK = "No task has this taskId."
FILTER_STATUSES = ("all", *TaskStatus.values)

TASK_ID_PARAMETER = OpenApiParameter(
    "taskId", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The task's id."
)
STATUS_PARAMETER = OpenApiParameter(
    "status", OpenApiTypes.STR, OpenApiParameter.PATH, enum=FILTER_STATUSES
)


def validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@cache
def _bound_fields(serializer_class):
    return serializer_class().fields


def validated_fast(serializer_class, request) -> dict:
    """`validated()` for a hot, flat body of simple fields (status changes, progress
    reports; the API parses JSON only, so `data.get` reads each field as DRF would): the same
    fields, bound once per process, since a serializer per request deep-copied them all,
    half of a progress report's cost. Its fields must hold no per-request state."""
    data = request.data
    if not isinstance(data, dict):
        serializer_class(data=data).is_valid(raise_exception=True)  # DRF's own 400
    values, errors = {}, {}
    for name, field in _bound_fields(serializer_class).items():
        try:
            values[name] = field.run_validation(data.get(name, empty))
        except SkipField:
            continue
        except ValidationError as error:
            errors[name] = error.detail
        except DjangoValidationError as error:
            errors[name] = get_error_detail(error)
    if errors:
        raise ValidationError(errors)
    return values


def create_arguments(data: dict) -> dict:
    """`services.task_create`'s arguments from a validated create body (`TaskFieldsSerializer`),
    or from what is valid of a bad bulk item (`bulk_items`: its node's fields only)."""
    return {
        "name": data.get("taskName"),
        "details": data.get("taskDetails"),
        "assigned_node": data.get("assignedNode"),
        "locked_at": data.get("lockedAt"),
        "payload": data.get("payload"),
        "node_selector": data.get("nodeSelector"),
        "priority": data.get("priority", PRIORITY_DEFAULT),
    }


def existing_task(service: Callable[..., Task], **arguments) -> Task:
    """Run a service on the task named in the body: an unknown id is a 404."""
    try:
        return service(**arguments)
    except Task.DoesNotExist:
        raise NotFound(NO_SUCH_TASK) from None


def shift_status_change(request) -> Task:
    """Advance the calling node's task as the request's body says; the task after.
    Shared by the view and its hot path (tasks.hot_paths)."""
    data = validated_fast(TaskStatusSerializer, request)
    return existing_task(
        services.task_change_status,
        task_id=data["taskId"],
        node=request.user,
        status=data["taskStatus"],
        reason=data.get("reason", ""),
        result=data.get("result"),
        attempt=data.get("attempt"),
    )


def progress_answer(request) -> dict:
    """Record the calling node's progress report (the request's body) and answer it.
    Shared by the view and its hot path (tasks.hot_paths)."""
    data = validated_fast(TaskProgressSerializer, request)
    checkpoint = {"checkpoint": data["checkpoint"]} if "checkpoint" in data else {}
    task = existing_task(
        services.task_report_progress,
        task_id=data["taskId"],
        node=request.user,
        attempt=data.get("attempt"),
        percent=data.get("percent"),
        message=data.get("message"),
        **checkpoint,
    )
    return {"task": task_representation(task)}


def task_response(task: Task | TaskRow, status_code: int = HTTP_200_OK) -> Response:
    """`TaskEnvelopeSerializer`'s shape, built without instantiating it."""
    return Response({"task": task_representation(task)}, status=status_code)


@extend_schema(tags=["tasks"])
class TaskViewSet(viewsets.GenericViewSet):
    serializer_class = TaskSerializer
    pagination_class = TaskPagination
    lookup_url_kwarg = "taskId"

    # Who may call each action; object-level checks happen in `get_object()`.
    action_permissions = {
        "create": [IsAdminRole],
        "bulk": [IsAdminRole],
        "broadcast": [IsAdminRole],
        "update": [IsAdminRole],
        "assign": [IsAdminRole],
        "cancel": [IsAdminRole],
        "destroy": [IsAdminRole],
        "list_all": [IsAdminRole],
        "history": [IsAdminRole],
        "list": [IsNodeWithOwnTasks],
        "list_by_status": [IsAuthenticated],
        "shift_status": [IsNodeRole],
        "progress": [IsNodeRole],
        "claim": [IsNodeRole],
        "retrieve": [IsAssignedNodeOrAdmin],
    }

    def get_permissions(self):
        # OPTIONS has no action: any signed-in user may ask which methods a path has.
        permissions = self.action_permissions.get(self.action, [IsAuthenticated])
        return [permission() for permission in permissions]

    def get_queryset(self):
        return Task.objects.visible_to(self.request.user)

    def get_object(self):
        # The other task routes' words, not DRF's "No Task matches the given query."
        try:
            return super().get_object()
        except Http404:
            raise NotFound(NO_SUCH_TASK) from None

    def task_page(self, status: str | None = None) -> Response:
        """One keyset page of the caller's tasks (`Task.objects.visible_to`, in one
        `status`), read as plain rows through its index: no model instances, no ORM
        query built per page (`taskmgmt.sql.page_rows`)."""
        user = self.request.user
        where = Task.objects.visible_where(user)
        if status is not None:
            where["status"] = status
        index = Task.objects.page_index(user, status)
        page = self.paginator.paginate_rows(
            lambda after, limit: task_page_rows(where, after=after, limit=limit, index=index),
            self.request,
        )
        tasks = [task_representation(task, json_text=True) for task in page]
        return self.get_paginated_response(tasks)

    @extend_schema(
        summary="Create a task (admin)",
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        request=TaskFieldsSerializer,
        responses={
            201: TaskEnvelopeSerializer,
            **error_responses(400, 401, 403, 409, 413, 415, 422, 429),
        },
    )
    @idempotent
    def create(self, request):
        data = validated(TaskFieldsSerializer, request)
        task = services.task_create(**create_arguments(data))
        return task_response(task, HTTP_201_CREATED)

    @extend_schema(
        summary="Create up to BULK_MAX_TASKS tasks at once, all or none (admin)",
        description=(
            "Each item is a create body. Any bad item: a 400 naming its index and field "
            "(`tasks[3].lockedAt`), nothing created. 201 with the tasks in the order sent. "
            "The body may be up to BULK_MAX_BODY_BYTES (8 MiB), not the 1 MiB of other routes."
        ),
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        request=TaskBulkSerializer,
        responses={
            201: TasksEnvelopeSerializer,
            **error_responses(400, 401, 403, 409, 413, 415, 422, 429),
        },
    )
    @body_up_to("BULK_MAX_BODY_BYTES")
    @idempotent
    def bulk(self, request):
        items, errors = bulk_items(request.data)
        tasks = services.tasks_create_bulk(
            tasks=[create_arguments(item) for item in items], errors=errors
        )
        return Response(
            {"tasks": [task_representation(task) for task in tasks]}, status=HTTP_201_CREATED
        )

    @extend_schema(
        summary="One task for every schedulable node matching nodeSelector (admin)",
        description=(
            "Each task is pinned to its node: failover fails it for a human rather than "
            "move it. 409 when no node matches; one transaction."
        ),
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        request=TaskBroadcastSerializer,
        responses={
            201: TasksEnvelopeSerializer,
            **error_responses(400, 401, 403, 409, 413, 415, 422, 429),
        },
    )
    @idempotent
    def broadcast(self, request):
        data = validated(TaskBroadcastSerializer, request)
        tasks = services.tasks_broadcast(
            name=data["taskName"],
            details=data["taskDetails"],
            locked_at=data["lockedAt"],
            payload=data.get("payload"),
            node_selector=data.get("nodeSelector"),
            priority=data.get("priority", PRIORITY_DEFAULT),
        )
        return Response(
            {"tasks": [task_representation(task) for task in tasks]}, status=HTTP_201_CREATED
        )

    @extend_schema(
        summary="Edit a pending task (admin)",
        request=TaskEditSerializer,
        responses={
            200: TaskEnvelopeSerializer,
            **error_responses(400, 401, 403, 404, 409, 413, 415, 429),
        },
    )
    def update(self, request):
        data = validated(TaskEditSerializer, request)
        # Sent or not, not null or not: an edit without `payload` keeps the task's.
        kept = {"payload": "payload", "nodeSelector": "node_selector", "priority": "priority"}
        sent = {argument: data[field] for field, argument in kept.items() if field in data}
        task = existing_task(
            services.task_update,
            task_id=data["taskId"],
            name=data["taskName"],
            details=data["taskDetails"],
            assigned_node=data["assignedNode"],
            locked_at=data["lockedAt"],
            **sent,
        )
        return task_response(task)

    @extend_schema(
        summary="Reassign a task to a node, back to pending (admin)",
        request=TaskAssignSerializer,
        responses={
            200: TaskEnvelopeSerializer,
            **error_responses(400, 401, 403, 404, 409, 413, 415, 429),
        },
    )
    def assign(self, request):
        data = validated(TaskAssignSerializer, request)
        task = existing_task(
            services.task_assign,
            task_id=data["taskId"],
            node=data["nodeId"],
            locked_at=data.get("lockedAt"),
        )
        return task_response(task)

    @extend_schema(
        summary="Cancel a task (admin): a pending one at once, an in-progress one by request",
        description=(
            "A pending task becomes cancelled. An in-progress task gets a cancel request "
            "(`cancelRequestedAt`, `cancelReason`): its node learns it from its heartbeat "
            "answers (`cancelTaskIds`) and acknowledges with taskStatus cancelled; after "
            "CANCEL_GRACE_SECONDS without an answer the sweep cancels it (cause "
            "cancel_timeout). A repeat while the request stands changes nothing; a "
            "completed, failed or cancelled task is a 409."
        ),
        parameters=[TASK_ID_PARAMETER],
        request=TaskCancelSerializer,
        responses={
            200: TaskEnvelopeSerializer,
            **error_responses(400, 401, 403, 404, 409, 413, 415, 429),
        },
    )
    def cancel(self, request, taskId):
        # A body is optional: `reason` is the only field, and optional itself.
        empty = isinstance(request.data, dict) and not request.data
        data = {} if empty else validated(TaskCancelSerializer, request)
        try:
            task_id = UUID(taskId)
        except ValueError:
            raise NotFound(NO_SUCH_TASK) from None
        task = existing_task(services.task_cancel, task_id=task_id, reason=data.get("reason", ""))
        return task_response(task)

    @extend_schema(
        summary="Advance a task's status (its assigned node)",
        request=TaskStatusSerializer,
        responses={
            200: TaskEnvelopeSerializer,
            **error_responses(400, 401, 403, 404, 409, 413, 415, 429),
        },
    )
    def shift_status(self, request):
        return task_response(shift_status_change(request))

    @extend_schema(
        summary="Report how far an in-progress task has got (its assigned node)",
        description=(
            "Only the latest report is kept; no history row. `checkpoint`, when sent, "
            "replaces the last one and survives a reassignment, so the next attempt can "
            "resume from it. 409 when the task is not in progress or `attempt` is stale."
        ),
        request=TaskProgressSerializer,
        responses={
            200: TaskEnvelopeSerializer,
            **error_responses(400, 401, 403, 404, 409, 413, 415, 429),
        },
    )
    def progress(self, request):
        return Response(progress_answer(request))

    @extend_schema(
        summary="Start the calling node's next pending task (node); counts as a heartbeat",
        description=(
            "Earliest deadline first, then oldest; a task whose deadline has passed is not "
            "offered. 204 with an empty body when there is none."
        ),
        request=None,
        responses={
            200: TaskEnvelopeSerializer,
            204: OpenApiResponse(description="No pending task to claim."),
            **error_responses(401, 403, 429),
        },
    )
    def claim(self, request):
        # Nothing in a body is read, but one that is not a JSON object is refused (400,
        # 415) as on every other endpoint, before anything is claimed.
        serializers.Serializer(data=request.data).is_valid(raise_exception=True)
        task = services.task_claim(node=request.user)
        if task is None:
            return Response(status=HTTP_204_NO_CONTENT)
        return task_response(task)

    @extend_schema(
        summary="Soft-delete a task (admin)",
        parameters=[TASK_ID_PARAMETER],
        responses={200: MessageSerializer, **error_responses(401, 403, 404, 429)},
    )
    def destroy(self, request, **kwargs):
        task = self.get_object()
        existing_task(services.task_set_active, task_id=task.pk, active=False)
        return Response({"message": "Task deleted."})

    @extend_schema(
        summary="Read a task (admin, or its assigned node)",
        parameters=[TASK_ID_PARAMETER],
        responses={200: TaskEnvelopeSerializer, **error_responses(401, 403, 404, 429)},
    )
    def retrieve(self, request, taskId):
        # Another node's task is a 403 (SPEC), not a 404: look among every
        # active task and let IsAssignedNodeOrAdmin refuse it.
        task = active_task_row(taskId)
        if task is None:
            raise NotFound(NO_SUCH_TASK)
        self.check_object_permissions(request, task)
        return task_response(task)

    @extend_schema(
        summary="A task's history, newest first (admin)",
        parameters=[TASK_ID_PARAMETER],
        responses={200: TaskHistoryEnvelopeSerializer, **error_responses(401, 403, 404, 429)},
    )
    def history(self, request, **kwargs):
        rows = self.get_object().history.order_by("-created_at", "-id")
        return Response(TaskHistoryEnvelopeSerializer({"history": rows}).data)

    @extend_schema(
        summary="Every task, newest first (admin)",
        responses={200: TaskSerializer(many=True), **error_responses(400, 401, 403, 429)},
    )
    def list_all(self, request):
        return self.task_page()

    @extend_schema(
        summary="The calling node's own tasks, newest first (node)",
        responses={200: TaskSerializer(many=True), **error_responses(400, 401, 403, 429)},
    )
    def list(self, request):
        return self.task_page()

    @extend_schema(
        summary="Tasks in one status (admin: every task; node: its own)",
        parameters=[STATUS_PARAMETER],
        responses={200: TaskSerializer(many=True), **error_responses(400, 401, 403, 429)},
    )
    def list_by_status(self, request, status):
        # In any case, as the original's MySQL comparison read it (`PENDING`).
        status = status.lower()
        if status not in FILTER_STATUSES:
            raise ValidationError({"status": [f"Must be one of: {', '.join(FILTER_STATUSES)}."]})
        return self.task_page(None if status == "all" else status)


@extend_schema(tags=["cron"])
class CollectFailedViewSet(viewsets.ViewSet):
    permission_classes = [IsAdminRole]

    @extend_schema(
        summary="Run the expiry sweep now (admin)",
        request=None,
        responses={200: FailedCountSerializer, **error_responses(401, 403, 429)},
    )
    def collect(self, request):
        # The same sweep as `manage.py collect_failed`: its history rows name the
        # system, whoever triggered it.
        with acting_as(None):
            run, _ = services.sweep_run(batch_size=settings.SWEEP_BATCH_SIZE)
        body = {"failedCount": run.failed_count}
        if settings.FAILOVER == "reassign":  # FAILOVER=off answers as the original did
            body["reassignedCount"] = run.reassigned_count
        return Response(body)


# The profile's tasks take the task lists' `limit` and `cursor`.
PROFILE_PAGE_PARAMETERS = CappedTaskPagination().openapi_parameters()


class ProfileViewSet(viewsets.GenericViewSet):
    """The signed-in user's own account, with a page of a node's active tasks."""

    # At the auth API's path (the original system's), served here because its
    # data is the tasks': accounts imports nothing from tasks (docs/architecture.md).

    @extend_schema(
        summary="The signed-in user and, for a node, a page of its active tasks",
        parameters=PROFILE_PAGE_PARAMETERS,
        responses={200: ProfileSerializer, **error_responses(400, 401, 429)},
    )
    @action(detail=False, methods=["get"], pagination_class=CappedTaskPagination)
    def profile(self, request):
        queryset = task_rows(Task.objects.active().filter(assigned_node=request.user))
        tasks = self.paginate_queryset(queryset)
        profile = {
            "userDetails": request.user,
            "tasks": tasks,
            "nextCursor": self.paginator.next_cursor,
        }
        return Response(ProfileSerializer(profile).data)
