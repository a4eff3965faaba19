"""The auth API's bodies, with the original system's camelCase names.

Input serializers validate and, for login and password change, check the
credentials; `accounts.services` writes the users and issues and revokes the tokens.
"""

import logging

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied

from accounts.models import User, UserManager
from taskmgmt.fields import JSONStringMixin, StringField
from taskmgmt.metrics import LOGIN_FAILURES

logger = logging.getLogger("taskmgmt.auth")

# One answer for an unknown email and a wrong password: no account enumeration.
INVALID_CREDENTIALS = "Invalid email or password."
PASSWORD_RULES = (
    "Django's password validators apply: at least 8 characters, not all digits, "
    "not a common password, not too like the email or name."
)
REFRESH_MAX_LENGTH = 4096


def _check_password_strength(password: str, user: User, field: str) -> None:
    """Django's AUTH_PASSWORD_VALIDATORS, reported against the API's field name."""
    try:
        password_validation.validate_password(password, user=user)
    except DjangoValidationError as error:
        raise serializers.ValidationError({field: error.messages}) from error


class EmailAddressField(JSONStringMixin, serializers.EmailField):
    """An email in its stored, canonical form (UserManager.normalize_email), which the
    validators and the length limit then check."""

    def to_internal_value(self, data):
        # JSONStringMixin refuses an overlong text first, before the costly NFKC.
        return UserManager.normalize_email(super().to_internal_value(data))


class UserInputSerializer(serializers.ModelSerializer):
    """User fields as JSON strings only, with the model's own limits."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StringField,
        models.EmailField: EmailAddressField,
    }


class PasswordField(StringField):
    """Taken as typed: spaces are part of a password."""

    def __init__(self, **kwargs):
        super().__init__(write_only=True, trim_whitespace=False, **kwargs)


# --- Output -----------------------------------------------------------------


class UserDetailsSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "name", "email", "role"]
        read_only_fields = fields


class UserListItemSerializer(serializers.ModelSerializer):
    nodeId = serializers.UUIDField(source="id", read_only=True)

    class Meta:
        model = User
        fields = ["nodeId", "name", "email", "role"]
        read_only_fields = fields


class UsersListSerializer(serializers.Serializer):
    usersList = UserListItemSerializer(many=True, read_only=True)


class TokenPairSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True, help_text="Access token: send as Bearer.")
    refresh = serializers.CharField(read_only=True, help_text="Works once, at /api/auth/refresh.")


class LoginResultSerializer(TokenPairSerializer):
    userDetails = UserDetailsSerializer(read_only=True)


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField(read_only=True)


class UserMessageSerializer(serializers.Serializer):
    message = serializers.CharField(read_only=True)
    userDetails = UserDetailsSerializer(read_only=True)


# --- Input ------------------------------------------------------------------


def _log_login_failure(reason: str, user: User | None = None) -> None:
    """For spotting password guessing; an unknown name is not logged (it may be a password)."""
    user_id = str(user.pk) if user else None
    extra = {"event": "login_failed", "reason": reason, "user_id": user_id}
    logger.warning("login failed", extra=extra)
    LOGIN_FAILURES.labels("api", reason).inc()


class LoginSerializer(serializers.Serializer):
    username = StringField(max_length=254, help_text="The user's email.")
    password = PasswordField()

    def validate(self, attrs):
        user = User.objects.get_for_login(attrs["username"])
        if user is None:
            # Hash anyway, so an unknown email answers as slowly as a wrong password.
            User().set_password(attrs["password"])
            _log_login_failure("unknown_user")
            raise AuthenticationFailed(INVALID_CREDENTIALS)
        if not user.check_password(attrs["password"]):
            _log_login_failure("wrong_password", user)
            raise AuthenticationFailed(INVALID_CREDENTIALS)
        if not user.is_active:
            _log_login_failure("inactive", user)
            raise PermissionDenied("This account is deactivated.")
        return {"user": user}


class RefreshSerializer(serializers.Serializer):
    # A token is a few hundred characters; a longer text is refused before it is decoded.
    refresh = StringField(
        max_length=REFRESH_MAX_LENGTH,
        help_text="The refresh token from login or the last refresh.",
    )


class SignupSerializer(UserInputSerializer):
    """A new worker node. No `role` field: the API never creates admins."""

    password = PasswordField(help_text=PASSWORD_RULES)

    class Meta:
        model = User
        fields = ["name", "email", "password"]
        # Uniqueness is a 409 from accounts.services, on the canonical form.
        extra_kwargs = {"email": {"validators": []}}

    def validate(self, attrs):
        candidate = User(name=attrs["name"], email=attrs["email"])
        _check_password_strength(attrs["password"], candidate, "password")
        return attrs


class ProfileEditSerializer(UserInputSerializer):
    class Meta:
        model = User
        fields = ["name", "email"]
        extra_kwargs = {"email": {"validators": []}}


class PasswordChangeSerializer(serializers.Serializer):
    oldPassword = PasswordField()
    newPassword = PasswordField(help_text=f"Must differ from the old one. {PASSWORD_RULES}")

    def validate(self, attrs):
        user = self.context["request"].user
        if not user.check_password(attrs["oldPassword"]):
            raise AuthenticationFailed("The old password is wrong.")
        if attrs["newPassword"] == attrs["oldPassword"]:
            raise serializers.ValidationError(
                {"newPassword": "The new password must differ from the old one."}
            )
        _check_password_strength(attrs["newPassword"], user, "newPassword")
        return attrs
