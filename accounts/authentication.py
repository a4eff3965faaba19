"""How the API knows who is calling: a bearer JWT, nothing else.

Session and Basic authentication are deliberately absent from the API: Basic
would let a client guess passwords without meeting the login rate limit.
"""

import uuid

from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication as BaseJWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import User
from taskmgmt.sql import get_one

# What the API reads from the caller; any other field loads on first access.
USER_FIELDS = ("id", "password", "email", "name", "role", "is_active")


class JWTAuthentication(BaseJWTAuthentication):
    """simplejwt's, which also refuses a deactivated user and, through
    CHECK_REVOKE_TOKEN, a token issued before the last password change."""

    def get_user(self, validated_token):
        """simplejwt's checks, on a user read with one plain SELECT.

        Read on every request, never cached, so a deactivation, a deletion or a
        new password counts at once; the ORM's query building cost 4x the SELECT.
        """
        user = load_user(validated_token)
        if user is None:
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        if not user.is_active:
            raise AuthenticationFailed(_("User is inactive"), code="user_inactive")
        revoke_claim = validated_token.get(api_settings.REVOKE_TOKEN_CLAIM)
        if revoke_claim != get_md5_hash_password(user.password):
            raise AuthenticationFailed(
                _("The user's password has been changed."), code="password_changed"
            )
        return user


def load_user(validated_token):
    """The token's user with USER_FIELDS loaded, or None when it no longer exists."""
    try:
        user_id = uuid.UUID(str(validated_token[api_settings.USER_ID_CLAIM]))
    except (KeyError, ValueError) as e:
        raise InvalidToken(_("Token contained no recognizable user identification")) from e
    return get_one(User, USER_FIELDS, id=user_id)


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI bearer scheme; drf-spectacular matches the exact class only."""

    target_class = JWTAuthentication
