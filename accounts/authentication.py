"""How the API knows who is calling: a bearer JWT, nothing else.

Session and Basic authentication are deliberately absent from the API: Basic
would let a client guess passwords without meeting the login rate limit.
"""

import uuid
from functools import lru_cache

from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication as BaseJWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import aware_utcnow, get_md5_hash_password

from accounts.models import User
from taskmgmt.sql import get_one

# What the API reads from the caller; any other field loads on first access.
USER_FIELDS = ("id", "password", "email", "name", "role", "is_active", "last_seen")


class JWTAuthentication(BaseJWTAuthentication):
    """simplejwt's, which also refuses a deactivated user and, through
    CHECK_REVOKE_TOKEN, a token issued before the last password change."""

    def get_validated_token(self, raw_token):
        """simplejwt's, with each token's signature and claims checked once per process.

        That check depends on the token's text alone, so its answer is kept (HMAC and
        JSON on every request were a measurable share: docs/performance.md); expiry
        is checked on every use, and the user (active, same password) is read afresh
        by `get_user`.
        """
        token = _verified_token(raw_token)
        try:
            token.check_exp(current_time=aware_utcnow())
        except TokenError:
            # simplejwt's own path gives the usual "not valid" answer for it.
            return super().get_validated_token(raw_token)
        return token

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


@lru_cache(maxsize=4096)
def _verified_token(raw_token: bytes):
    """The token `raw_token` decodes to, verified; an invalid one raises, and is not kept."""
    return BaseJWTAuthentication().get_validated_token(raw_token)


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI bearer scheme; drf-spectacular matches the exact class only."""

    target_class = JWTAuthentication
