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
from taskmgmt.sql import get_one, get_one_and

# What the API reads from the caller; any other field loads on first access.
USER_FIELDS = ("id", "password", "email", "name", "role", "is_active", "last_seen")


class JWTAuthentication(BaseJWTAuthentication):
    """simplejwt's, which also refuses a deactivated user and, through
    CHECK_REVOKE_TOKEN, a token issued before the last password change."""

    def get_raw_token(self, header: bytes) -> bytes | None:
        """simplejwt's, with the scheme's case ignored (RFC 9110: `bearer` is `Bearer`)."""
        parts = header.split()
        if len(parts) == 2 and parts[0].lower() == b"bearer":
            return parts[1]
        return super().get_raw_token(header)

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
        return self.checked_user(load_user(validated_token), validated_token)

    def authenticate_with(self, request, also):
        """`authenticate`, with another read sent in one round trip with the user's
        SELECT: `also(user id)` gives it (a taskmgmt.sql.Read), from the token alone.
        (user, token, that read's rows), or None without a bearer token."""
        header = self.get_header(request)
        raw_token = None if header is None else self.get_raw_token(header)
        if raw_token is None:
            return None
        token = self.get_validated_token(raw_token)
        user_id, rows = token_user_id(token), None
        also_read = also(user_id)
        if also_read is None:
            user = get_one(User, USER_FIELDS, id=user_id)
        else:
            user, rows = get_one_and(User, USER_FIELDS, also_read, id=user_id)
        return self.checked_user(user, token), token, rows

    def checked_user(self, user, validated_token):
        """`user` (read for `validated_token`, None if gone) if the token may act as it."""
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
    return get_one(User, USER_FIELDS, id=token_user_id(validated_token))


def token_user_id(validated_token) -> uuid.UUID:
    try:
        return uuid.UUID(str(validated_token[api_settings.USER_ID_CLAIM]))
    except (KeyError, ValueError) as e:
        raise InvalidToken(_("Token contained no recognizable user identification")) from e


# What simplejwt's claim checks raise, rather than a TokenError, for a token signed with
# our key whose claims have the wrong shape (no `jti`, an `exp` past any date).
MALFORMED_CLAIMS = (KeyError, OverflowError, TypeError, ValueError)


@lru_cache(maxsize=4096)
def _verified_token(raw_token: bytes):
    """The token `raw_token` decodes to, verified; an invalid one raises, and is not kept."""
    try:
        return BaseJWTAuthentication().get_validated_token(raw_token)
    except MALFORMED_CLAIMS as error:
        raise InvalidToken(_("Given token not valid for any token type")) from error


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI bearer scheme; drf-spectacular matches the exact class only."""

    target_class = JWTAuthentication
