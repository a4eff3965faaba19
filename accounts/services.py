"""Creating nodes, editing profiles, and issuing, rotating and revoking a user's JWTs.

A write of a user names the fields it changes: the user the request loaded may
be older than a password change or deactivation committed since.
Every refresh token is recorded (simplejwt's OutstandingToken) when issued,
so a user's tokens can all be revoked at once; access tokens carry a digest
of the password hash (CHECK_REVOKE_TOKEN), so a new password revokes them.
"""

from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.authentication import MALFORMED_CLAIMS
from accounts.models import User
from taskmgmt.exceptions import Conflict

EMAIL_TAKEN = "A user with this email already exists."


def ensure_email_free(*, email: str, user: User | None = None) -> None:
    """409 when another user has `email`: checked before any hashing, and again by
    the unique index when the row is written (a concurrent request may win meanwhile)."""
    taken = User.objects.filter(email=email)
    if user is not None:
        taken = taken.exclude(pk=user.pk)
    if taken.exists():
        raise Conflict(EMAIL_TAKEN)


def user_create_node(*, name: str, email: str, password: str) -> User:
    """A new worker node; a lost race for its email is the same 409 as a plain duplicate."""
    ensure_email_free(email=email)
    try:
        with transaction.atomic():
            return User.objects.create_user(email, password, name=name)
    except IntegrityError as error:
        raise Conflict(EMAIL_TAKEN) from error


def user_edit_profile(*, user: User, name: str, email: str) -> User:
    """Writes the name and email only: `user` was read when the request began, and
    writing its other fields back would undo a password change or a deactivation
    committed since."""
    ensure_email_free(email=email, user=user)
    try:
        with transaction.atomic():
            _write(user, name=name, email=User.objects.normalize_email(email))
    except IntegrityError as error:
        raise Conflict(EMAIL_TAKEN) from error
    return user


def _write(user: User, **values) -> None:
    """UPDATE these fields of the user's row, and set them on `user`. A user deleted
    since the request read it gets the 401 its next request would, not a 500."""
    if not User.objects.filter(pk=user.pk).update(**values):
        raise AuthenticationFailed(_("User not found"), code="user_not_found")
    for name, value in values.items():
        setattr(user, name, value)


def tokens_issue(*, user: User) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    return {"token": str(refresh.access_token), "refresh": str(refresh)}


@transaction.atomic
def tokens_rotate(*, refresh: str) -> dict[str, str]:
    """A new pair for a refresh token, which is blacklisted: each works once.

    The token's row is locked, so two concurrent uses of one token cannot
    both succeed. Raises TokenError for a bad, expired, used or revoked token.
    """
    try:
        token = RefreshToken(refresh)
        jti = token[api_settings.JTI_CLAIM]
    except MALFORMED_CLAIMS as error:  # signed with our key, but no jti, an exp past any date
        raise TokenError("Token is invalid") from error
    outstanding = (
        OutstandingToken.objects.select_for_update().select_related("user").filter(jti=jti).first()
    )
    if outstanding is None or BlacklistedToken.objects.filter(token=outstanding).exists():
        raise TokenError("Token is blacklisted")
    user = outstanding.user
    if user is None or not user.is_active:
        raise TokenError("The user is deactivated or gone.")
    if token.get(api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password):
        raise TokenError("The user's password has been changed.")
    BlacklistedToken.objects.create(token=outstanding)
    return tokens_issue(user=user)


def user_change_password(*, user: User, password: str) -> None:
    """Set a new password and revoke every token issued before it.

    The UPDATE names the hash the old password was checked against: of two changes
    in flight at once only the first is made, and the other finds the old password
    wrong (401), as it would a moment later, rather than both answering 200.
    """
    checked, new_hash = user.password, make_password(password)  # hashed outside the transaction
    with transaction.atomic():
        if not User.objects.filter(pk=user.pk, password=checked).update(password=new_hash):
            if User.objects.filter(pk=user.pk).exists():
                raise AuthenticationFailed("The old password is wrong.")
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        user.password = new_hash
        unrevoked = OutstandingToken.objects.filter(
            user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
        )
        BlacklistedToken.objects.bulk_create(BlacklistedToken(token=token) for token in unrevoked)


def user_deactivate(*, user: User) -> None:
    """Stop a user from logging in; its tokens stop working (authentication checks is_active).

    Writes `is_active` alone: a whole-row save would put back whatever this copy
    of the row holds, such as a `last_seen` older than the node's latest heartbeat.
    """
    User.objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
