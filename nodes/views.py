"""The nodes API, mounted at `api/` (nodes/urls.py): a node's heartbeat, and the
node list for admins. What they say of a node's tasks comes from nodes.work."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from accounts.permissions import IsAdminRole, IsNodeRole
from nodes import heartbeats
from nodes.models import Node
from nodes.serializers import (
    HeartbeatResultSerializer,
    HeartbeatSerializer,
    NodesListSerializer,
)
from nodes.services import node_heartbeat
from nodes.work import node_work
from taskmgmt.errors import error_responses
from taskmgmt.fields import iso_utc


@extend_schema(tags=["nodes"])
class NodeViewSet(viewsets.GenericViewSet):
    """Liveness: nodes beat, admins see who is alive."""

    action_permissions = {"heartbeat": [IsNodeRole], "list_nodes": [IsAdminRole]}

    def get_permissions(self):
        # OPTIONS has no action: only a signed-in admin or node gets its 405.
        permissions = self.action_permissions.get(self.action, [IsAuthenticated])
        return [permission() for permission in permissions]

    @extend_schema(
        summary="A node's heartbeat: the server stamps its last_seen (node)",
        request=HeartbeatSerializer,
        responses={
            200: HeartbeatResultSerializer,
            **error_responses(400, 401, 403, 413, 415, 429),
        },
    )
    def heartbeat(self, request):
        held = set()
        # A beat without a body (the common one), or with {}, has nothing to validate;
        # any other body must be the object the schema names (null, [] or 0 is a 400).
        if not isinstance(request.data, dict) or request.data:
            serializer = HeartbeatSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            held = set(serializer.validated_data.get("taskIds", ()))
        node, now, work = request.user, timezone.now(), node_work()
        node_heartbeat(node_id=node.pk, now=now)
        # State, not a log of events: a lost answer costs nothing, the next beat says it again.
        kept = set(work.in_progress_of(node, held)) if held else set()
        pending_count, cancel_ids = work.claimable_count_and_cancels(node, now)
        # HeartbeatResultSerializer's shape, built directly: every node sends this every
        # few seconds, and instantiating it copied each of its fields per answer.
        return Response(
            {
                "serverTime": iso_utc(now),
                "leaseExpiresAt": iso_utc(now + timedelta(seconds=settings.NODE_DOWN_AFTER)),
                "heartbeatSeconds": settings.NODE_HEARTBEAT_SECONDS,
                "pendingCount": pending_count,
                "revokedTaskIds": sorted(map(str, held - kept)),
                "cancelTaskIds": sorted(map(str, cancel_ids)),
            }
        )

    @extend_schema(
        summary="Every active node with its liveness and open work (admin)",
        responses={200: NodesListSerializer, **error_responses(401, 403, 429)},
    )
    def list_nodes(self, request):
        # Not `list`: drf-spectacular would document the envelope as an array.
        heartbeats.flush()
        nodes = list(
            Node.objects.filter(is_active=True)
            .with_liveness(timezone.now())
            .only("id", "name", "email", "last_seen")
            .order_by("name", "email")
        )
        counts = node_work().open_counts_by_node()
        for node in nodes:
            node.open_count, node.in_progress_count = counts.get(node.pk, (0, 0))
        return Response(NodesListSerializer({"nodes": nodes}).data)
