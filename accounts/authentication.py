"""How the API knows who is calling: a bearer JWT, nothing else.

Session and Basic authentication are deliberately absent from the API: Basic
would let a client guess passwords without meeting the login rate limit.
"""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication as BaseJWTAuthentication


class JWTAuthentication(BaseJWTAuthentication):
    """simplejwt's, which also refuses a deactivated user and, through
    CHECK_REVOKE_TOKEN, a token issued before the last password change."""


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI bearer scheme; drf-spectacular matches the exact class only."""

    target_class = JWTAuthentication
