"""The nodes API, mounted at `api/` (nodes/urls.py): a node's heartbeat, and the
node list for admins. What they say of a node's tasks comes from nodes.work."""

from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from accounts.permissions import IsAdminRole, IsNodeRole
from accounts.serializers import MessageSerializer
from nodes import heartbeats
from nodes.models import (
    MaintenanceWindow,
    Node,
    NodeEvent,
    drain_deadline_from_text,
    node_state,
    window_shown,
)
from nodes.serializers import (
    CordonSerializer,
    DrainSerializer,
    HeartbeatResultSerializer,
    HeartbeatSerializer,
    MaintenanceWindowSerializer,
    MaintenanceWindowsSerializer,
    NodeEnvelopeSerializer,
    NodeEventsSerializer,
    NodeLabelsSerializer,
    NodesListSerializer,
    NodeStateSerializer,
    UncordonSerializer,
)
from nodes.services import (
    node_cordon,
    node_drain,
    node_heartbeat,
    node_maintenance_cancel,
    node_maintenance_schedule,
    node_set_labels,
    node_uncordon,
)
from nodes.work import node_work
from taskmgmt.errors import error_responses
from taskmgmt.fields import iso_utc
from taskmgmt.pagination import KeysetPagination


def held_task_ids(data) -> set:
    """The task ids a heartbeat's body names (a ValidationError when it is not one)."""
    # A beat without a body (the common one), or with {}, has nothing to validate;
    # any other body must be the object the schema names (null, [] or 0 is a 400).
    if isinstance(data, dict) and not data:
        return set()
    serializer = HeartbeatSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return set(serializer.validated_data.get("taskIds", ()))


def heartbeat_answer(node, held: set, *, now=None, beaten=False, facts=None) -> dict:
    """Record `node`'s beat and answer it (HeartbeatResultSerializer's shape, built
    directly: every node sends this every few seconds). `held`: the task ids it sent.
    The hot path gives the moment it read at (`now`), says the beat is recorded already
    (`beaten`: with its rate count) and gives the `facts` it read with the caller's user.

    Shared by the view and its hot path (nodes.hot_paths)."""
    now, work = now or timezone.now(), node_work()
    if not beaten:
        node_heartbeat(node_id=node.pk, now=now)
    # State, not a log of events: a lost answer costs nothing, the next beat says it again.
    kept = set(work.in_progress_of(node, held)) if held else set()
    facts = facts or work.heartbeat_facts(node, now)
    pending_count, cancel_ids, cordon, windows, draining = facts
    schedulable, drain_deadline = drain_deadline_from_text(cordon, windows, draining)
    if drain_deadline is not None:
        # A draining node's claims answer 204 (Task.objects.claimable_first): nothing to claim.
        pending_count = 0
    return {
        "serverTime": iso_utc(now),
        "leaseExpiresAt": iso_utc(now + timedelta(seconds=settings.NODE_DOWN_AFTER)),
        "heartbeatSeconds": settings.NODE_HEARTBEAT_SECONDS,
        "pendingCount": pending_count,
        "revokedTaskIds": sorted(map(str, held - kept)),
        "cancelTaskIds": sorted(map(str, cancel_ids)),
        "schedulable": schedulable,
        "drainDeadline": drain_deadline and iso_utc(drain_deadline),
    }


class NodeEventPagination(KeysetPagination):
    """A node's events in the task lists' pages; their ids are integers, not UUIDs."""

    results_key = "events"
    id_type = int
    limit_description = "Events per page; left out or empty, every event."


@extend_schema(tags=["nodes"])
class NodeViewSet(viewsets.GenericViewSet):
    """Liveness: nodes beat, admins see who is alive."""

    action_permissions = {
        "heartbeat": [IsNodeRole],
        "list_nodes": [IsAdminRole],
        "update_node": [IsAdminRole],
        "cordon": [IsAdminRole],
        "drain": [IsAdminRole],
        "uncordon": [IsAdminRole],
        "events": [IsAdminRole],
        "maintenance_list": [IsAdminRole],
        "maintenance_schedule": [IsAdminRole],
        "maintenance_cancel": [IsAdminRole],
    }

    def get_permissions(self):
        # OPTIONS has no action: only a signed-in admin or node gets its 405.
        permissions = self.action_permissions.get(self.action, [IsAuthenticated])
        return [permission() for permission in permissions]

    def throttled(self, request, wait):
        if self.action == "heartbeat":
            # A node over its rate limit is still alive: its beats are stamped and only
            # the answer is a 429. Refused, they let liveness see it down and the sweep
            # fail over work it was still doing.
            node_heartbeat(node_id=request.user.pk, now=timezone.now())
        super().throttled(request, wait)

    @extend_schema(
        summary="A node's heartbeat: the server stamps its last_seen (node)",
        request=HeartbeatSerializer,
        responses={
            200: HeartbeatResultSerializer,
            **error_responses(400, 401, 403, 413, 415, 429),
        },
    )
    def heartbeat(self, request):
        return Response(heartbeat_answer(request.user, held_task_ids(request.data)))

    @extend_schema(
        summary="Every active node with its liveness, open work and scheduling state (admin)",
        responses={200: NodesListSerializer, **error_responses(401, 403, 429)},
    )
    def list_nodes(self, request):
        # Not `list`: drf-spectacular would document the envelope as an array.
        return Response(NodesListSerializer({"nodes": self.shown(Node.objects.all())}).data)

    @extend_schema(
        summary="Set a node's labels (admin)",
        parameters=[
            OpenApiParameter(
                "nodeId", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The node's id."
            )
        ],
        request=NodeLabelsSerializer,
        responses={200: NodeEnvelopeSerializer, **error_responses(400, 401, 403, 404, 415, 429)},
    )
    def update_node(self, request, nodeId):
        data = NodeLabelsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        node = Node.objects.filter(pk=_uuid_or_none(nodeId), is_active=True).first()
        if node is None:
            raise NotFound("No active node has this nodeId.")
        node_set_labels(node=node, labels=data.validated_data["labels"], actor=request.user)
        (shown,) = self.shown(Node.objects.filter(pk=node.pk))
        return Response(NodeEnvelopeSerializer({"node": shown}).data)

    @staticmethod
    def shown(nodes) -> list:
        """The active ones of `nodes` as the node list shows them: liveness, open work, labels."""
        heartbeats.flush()
        now = timezone.now()
        nodes = list(
            nodes.filter(is_active=True)
            .with_liveness(now)
            .with_labels()
            .with_schedule(now)
            .with_window(now)
            .only("id", "name", "email", "last_seen", "cordon")
            .order_by("name", "email")
        )
        counts = node_work().open_counts_by_node()
        for node in nodes:
            node.open_count, node.in_progress_count = counts.get(node.pk, (0, 0))
            state = node.schedule_state()
            node.state, node.schedulable = state["state"], state["schedulable"]
            node.cordonReason, node.cordonedBy = state["reason"], state["by"]
            node.cordonedSince, node.drainDeadline = state["since"], state["drainDeadline"]
            node.maintenanceWindow = window_shown(node, now)
        return nodes

    def target(self, node_id: str) -> Node:
        """The active node named in the path: a 404 for anything else."""
        node = Node.objects.filter(pk=parse_id(node_id), is_active=True).first()
        if node is None:
            raise NotFound("No active node has this nodeId.")
        return node

    def state_response(self, node, **counts) -> Response:
        body = {"nodeId": node.pk, **node_state(node.pk), **counts}
        return Response(NodeStateSerializer(body).data)

    @extend_schema(
        summary="Cordon a node: no new work is given to it (admin)",
        description="It keeps, and may claim, the pending tasks it has. A reason is required.",
        request=CordonSerializer,
        responses={200: NodeStateSerializer, **error_responses(400, 401, 403, 404, 415, 429)},
    )
    def cordon(self, request, nodeId):
        node = self.target(nodeId)
        data = validated(CordonSerializer, request)
        node_cordon(node_id=node.pk, reason=data["reason"], actor=request.user)
        return self.state_response(node)

    @extend_schema(
        summary="Drain a node: cordon it and move its pending work now (admin)",
        description=(
            "Its pending tasks move to other alive, schedulable nodes as failover moves them "
            "(those with nowhere to go stay: `stayedCount`); its claims answer 204; its "
            "in-progress tasks may finish until `deadline`, after which the sweep fails them "
            "(cause drained) and moves them."
        ),
        request=DrainSerializer,
        responses={200: NodeStateSerializer, **error_responses(400, 401, 403, 404, 415, 429)},
    )
    def drain(self, request, nodeId):
        node = self.target(nodeId)
        data = validated(DrainSerializer, request)
        node_drain(
            node_id=node.pk,
            reason=data["reason"],
            actor=request.user,
            deadline=data.get("deadline"),
        )
        # After the cordon commits: nothing new lands on the node while its work moves.
        moved, stayed = node_work().drain(node.pk, timezone.now())
        return self.state_response(node, movedCount=moved, stayedCount=stayed)

    @extend_schema(
        summary="End a node's cordon, drain or maintenance window under way (admin)",
        description=(
            "A window under way ends now (kept in the list, ended early). No body is "
            "needed; a `reason`, when given, is kept with the event. 409: none to end."
        ),
        request=UncordonSerializer,
        responses={200: NodeStateSerializer, **error_responses(400, 401, 403, 404, 409, 429)},
    )
    def uncordon(self, request, nodeId):
        node = self.target(nodeId)
        data = validated(UncordonSerializer, request)
        node_uncordon(node_id=node.pk, reason=data.get("reason", ""), actor=request.user)
        return self.state_response(node)

    @extend_schema(
        summary="A node's events, newest first (admin)",
        description=(
            "Paged as the task lists are: `limit` and `cursor`, `nextCursor` to pass back. "
            "Without `limit`, every event."
        ),
        parameters=NodeEventPagination().openapi_parameters(),
        responses={200: NodeEventsSerializer, **error_responses(400, 401, 403, 404, 429)},
    )
    def events(self, request, nodeId):
        node = Node.objects.filter(pk=parse_id(nodeId)).first()
        if node is None:
            raise NotFound("No node has this nodeId.")
        # The node_event_time index (node, created_at; InnoDB appends the id) serves it.
        pages = NodeEventPagination()
        events = pages.paginate_queryset(NodeEvent.objects.filter(node=node), request)
        body = {"events": events, "nextCursor": pages.next_cursor}
        return Response(NodeEventsSerializer(body).data)

    @extend_schema(
        summary="A node's maintenance windows, past and coming (admin)",
        responses={200: MaintenanceWindowsSerializer, **error_responses(401, 403, 404, 429)},
    )
    def maintenance_list(self, request, nodeId):
        node = self.target(nodeId)
        windows = MaintenanceWindow.objects.filter(node=node).order_by("starts_at", "id")
        return Response(MaintenanceWindowsSerializer({"windows": windows}).data)

    @extend_schema(
        summary="Plan a maintenance window for a node (admin)",
        description=(
            "From `startsAt` to `endsAt` the node is cordoned (drained, with deadline = "
            "startsAt, when `drain`), and schedulable again after, unless cordoned by hand. "
            "Derived when read: the sweep moves the work, no cron entry of its own."
        ),
        request=MaintenanceWindowSerializer,
        responses={
            201: MaintenanceWindowSerializer,
            **error_responses(400, 401, 403, 404, 415, 429),
        },
    )
    def maintenance_schedule(self, request, nodeId):
        node = self.target(nodeId)
        data = validated(MaintenanceWindowSerializer, request)
        window = node_maintenance_schedule(node_id=node.pk, actor=request.user, **data)
        return Response(MaintenanceWindowSerializer(window).data, status=201)

    @extend_schema(
        summary="Cancel a coming maintenance window (admin)",
        responses={200: MessageSerializer, **error_responses(401, 403, 404, 409, 429)},
    )
    def maintenance_cancel(self, request, nodeId, windowId):
        node = self.target(nodeId)
        if not (windowId.isascii() and windowId.isdigit()):  # "²" or "٣" is no id
            raise NotFound("This node has no window with this id.")
        try:
            node_maintenance_cancel(node_id=node.pk, window_id=int(windowId), actor=request.user)
        except MaintenanceWindow.DoesNotExist:
            raise NotFound("This node has no window with this id.") from None
        return Response({"message": "Maintenance window cancelled."})


def parse_id(text: str):
    try:
        return UUID(text)
    except ValueError:
        raise NotFound("No node has this nodeId.") from None


def validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _uuid_or_none(text: str):
    try:
        return UUID(text)
    except ValueError:
        return None
