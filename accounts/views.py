"""The auth API at the original system's paths (routed in `accounts/urls.py`),
and the nodes' liveness API (`accounts/node_urls.py`).

`TokenViewSet` (login, refresh) is open to anyone and runs no
authentication; `AccountViewSet` serves the signed-in user and, for admins,
the user list and signup; `NodeViewSet` takes a node's heartbeat and shows
admins who is alive.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts import heartbeats, services
from accounts.authentication import JWTAuthentication
from accounts.hashers import HashQueueFull
from accounts.models import User
from accounts.permissions import IsAdminRole, IsNodeRole
from accounts.serializers import (
    HeartbeatResultSerializer,
    HeartbeatSerializer,
    LoginResultSerializer,
    LoginSerializer,
    NodesListSerializer,
    PasswordChangeSerializer,
    ProfileEditSerializer,
    ProfileSerializer,
    RefreshSerializer,
    SignupSerializer,
    TokenPairSerializer,
    UserDetailsSerializer,
    UserMessageSerializer,
    UsersListSerializer,
)
from accounts.throttling import LoginAccountThrottle, LoginIpThrottle
from taskmgmt.api import ServiceUnavailable, error_responses
from taskmgmt.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from taskmgmt.throttling import ApiRateThrottle, FirstRefusalThrottling
from tasks.models import Task
from tasks.pagination import CappedKeysetPagination
from tasks.serializers import MessageSerializer, iso_utc, task_rows

# The profile's tasks take the task lists' `limit` and `cursor`.
PROFILE_PAGE_PARAMETERS = [
    OpenApiParameter(
        parameter["name"],
        parameter["schema"],
        OpenApiParameter.QUERY,
        required=False,
        description=parameter["description"],
    )
    for parameter in CappedKeysetPagination().get_schema_operation_parameters(view=None)
]


class HashesBusy(ServiceUnavailable):
    default_detail = "Too many password checks at once; retry after Retry-After seconds."

    def __init__(self, wait: int):
        super().__init__()
        self.wait = wait  # DRF sends it as Retry-After


class PasswordCheckMixin(FirstRefusalThrottling):
    """A password check that found no free hash slot is a 503 with Retry-After; its
    limits stop at the first refusal, so a refused guess costs a cache count only."""

    def handle_exception(self, exc):
        if isinstance(exc, HashQueueFull):
            exc = HashesBusy(exc.retry_after)
        return super().handle_exception(exc)


class TokenViewSet(PasswordCheckMixin, viewsets.GenericViewSet):
    """Login and refresh. No authentication runs here: a client holding an
    expired access token must still be able to get a new one."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request):
        # With no authenticator DRF would turn our 401s into 403s.
        return JWTAuthentication().authenticate_header(request)

    @extend_schema(
        summary="Log in with email and password",
        responses={
            200: LoginResultSerializer,
            **error_responses(400, 401, 403, 413, 415, 429, 503),
        },
    )
    @action(
        detail=False,
        methods=["post"],
        serializer_class=LoginSerializer,
        throttle_classes=[LoginIpThrottle, LoginAccountThrottle],
    )
    def login(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        tokens = services.tokens_issue(user=user)
        return Response({**tokens, "userDetails": UserDetailsSerializer(user).data})

    @extend_schema(
        summary="Exchange a refresh token for a new pair (the old one stops working)",
        responses={200: TokenPairSerializer, **error_responses(400, 401, 413, 415, 429)},
    )
    @action(detail=False, methods=["post"], serializer_class=RefreshSerializer)
    def refresh(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tokens = services.tokens_rotate(refresh=serializer.validated_data["refresh"])
        except TokenError as error:
            raise InvalidToken(error.args[0]) from error
        return Response(tokens)


class AccountViewSet(PasswordCheckMixin, viewsets.GenericViewSet):
    """The signed-in user's own account; the user list and signup for admins."""

    @extend_schema(
        summary="The signed-in user and, for a node, a page of its active tasks",
        parameters=PROFILE_PAGE_PARAMETERS,
        responses={200: ProfileSerializer, **error_responses(400, 401, 429)},
    )
    @action(detail=False, methods=["get"], pagination_class=CappedKeysetPagination)
    def profile(self, request):
        queryset = task_rows(Task.objects.active().filter(assigned_node=request.user))
        tasks = self.paginate_queryset(queryset)
        profile = {
            "userDetails": request.user,
            "tasks": tasks,
            "nextCursor": self.paginator.next_cursor,
        }
        return Response(ProfileSerializer(profile).data)

    @extend_schema(
        summary="Change the signed-in user's name and email",
        responses={200: UserMessageSerializer, **error_responses(400, 401, 409, 413, 415, 429)},
    )
    @action(
        detail=False,
        methods=["put"],
        url_path="edit-profile",
        serializer_class=ProfileEditSerializer,
    )
    def edit_profile(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_edit_profile(user=request.user, **serializer.validated_data)
        return Response(
            {"message": "Profile updated.", "userDetails": UserDetailsSerializer(user).data}
        )

    @extend_schema(
        summary="Change the signed-in user's password; every token issued before stops working",
        responses={200: MessageSerializer, **error_responses(400, 401, 413, 415, 429, 503)},
    )
    @action(
        detail=False,
        methods=["put"],
        url_path="update-password",
        serializer_class=PasswordChangeSerializer,
        # The old password is a password check: it spends the login budgets.
        throttle_classes=[ApiRateThrottle, LoginIpThrottle, LoginAccountThrottle],
    )
    def update_password(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.user_change_password(
            user=request.user, password=serializer.validated_data["newPassword"]
        )
        return Response({"message": "Password updated; log in again with the new password."})

    @extend_schema(
        summary="Every active user, admins too, by name",
        responses={200: UsersListSerializer, **error_responses(401, 403, 429)},
    )
    @action(detail=False, methods=["get"], permission_classes=[IsAdminRole])
    def users(self, request):
        users = User.objects.filter(is_active=True).order_by("name", "email")
        return Response(UsersListSerializer({"usersList": users}).data)

    @extend_schema(
        summary="Create a worker node (the API never creates admins)",
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={
            201: UserMessageSerializer,
            **error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
        },
    )
    @action(
        detail=False,
        methods=["post"],
        permission_classes=[IsAdminRole],
        serializer_class=SignupSerializer,
    )
    @idempotent
    def signup(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_create_node(**serializer.validated_data)
        return Response(
            {"message": "Node created.", "userDetails": UserDetailsSerializer(user).data},
            status=status.HTTP_201_CREATED,
        )


@extend_schema(tags=["nodes"])
class NodeViewSet(viewsets.GenericViewSet):
    """Liveness: nodes beat, admins see who is alive (SPEC, Nodes)."""

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
        node, now = request.user, timezone.now()
        services.node_heartbeat(node_id=node.pk, now=now)
        # State, not a log of events: a lost answer costs nothing, the next beat says it again.
        kept = set(Task.objects.in_progress_of(node, held)) if held else set()
        # HeartbeatResultSerializer's shape, built directly: every node sends this every
        # few seconds, and instantiating it copied each of its fields per answer.
        return Response(
            {
                "serverTime": iso_utc(now),
                "leaseExpiresAt": iso_utc(now + timedelta(seconds=settings.NODE_DOWN_AFTER)),
                "heartbeatSeconds": settings.NODE_HEARTBEAT_SECONDS,
                "pendingCount": Task.objects.claimable_count(node, now),
                "revokedTaskIds": sorted(map(str, held - kept)),
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
            User.objects.nodes()
            .filter(is_active=True)
            .with_liveness(timezone.now())
            .only("id", "name", "email", "last_seen")
            .order_by("name", "email")
        )
        counts = Task.objects.open_counts_by_node()
        for node in nodes:
            node.open_count, node.in_progress_count = counts.get(node.pk, (0, 0))
        return Response(NodesListSerializer({"nodes": nodes}).data)
