"""The auth API at the original system's paths (routed in `accounts/urls.py`).

`TokenViewSet` (login, refresh) is open to anyone and runs no
authentication; `AccountViewSet` changes the signed-in user's account and, for
admins, lists users and signs nodes up. The profile, which shows a node's
tasks, is the tasks app's (tasks.views.ProfileViewSet), at the same path.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts import services
from accounts.authentication import JWTAuthentication
from accounts.hashers import HashQueueFull
from accounts.models import User
from accounts.permissions import IsAdminRole
from accounts.serializers import (
    LoginResultSerializer,
    LoginSerializer,
    MessageSerializer,
    PasswordChangeSerializer,
    ProfileEditSerializer,
    RefreshSerializer,
    SignupSerializer,
    TokenPairSerializer,
    UserDetailsSerializer,
    UserMessageSerializer,
    UsersListSerializer,
)
from accounts.throttling import LoginAccountThrottle, LoginIpThrottle
from taskmgmt.errors import error_responses
from taskmgmt.exceptions import ServiceUnavailable
from taskmgmt.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from taskmgmt.throttling import ApiRateThrottle, FirstRefusalThrottling


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

    # GET profile is tasks.views.ProfileViewSet's, at the same path: it shows tasks.

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
