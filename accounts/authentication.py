"""How the API knows who is calling: a bearer JWT, nothing else.

Session and Basic authentication are deliberately absent from the API: Basic
would let a client guess passwords without meeting the login rate limit.
"""

from rest_framework_simplejwt.authentication import JWTAuthentication as BaseJWTAuthentication


class JWTAuthentication(BaseJWTAuthentication):
    pass
