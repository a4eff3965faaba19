"""Rate limits as DRF throttles, counted by django-ratelimit in the shared cache.

One count per key in CACHES["default"] (Redis in production), so every
worker process sees the same numbers. Rates are read from settings on each
request, so `override_settings` and the environment both apply.
"""

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.throttling import BaseThrottle

from accounts.models import UserManager


class RatelimitThrottle(BaseThrottle):
    """Allows `rate_setting` requests per window for each value of `key`.

    `key` is any django-ratelimit key: "ip", "user", or a callable
    `(group, request) -> str`.
    """

    group: str
    rate_setting: str
    key: object

    def get_key(self, request):
        return self.key

    def allow_request(self, request, view):
        usage = get_usage(
            request,
            group=self.group,
            key=self.get_key(request),
            rate=getattr(settings, self.rate_setting),
            increment=True,
        )
        self.seconds_left = usage["time_left"] if usage else 0
        return not (usage and usage["should_limit"])

    def wait(self):
        # Retry-After must be a positive whole number of seconds.
        return max(self.seconds_left, 1)


def login_username_key(group, request) -> str:
    """The login name from the JSON body, as the login looks it up."""
    data = request.data
    username = data.get("username") if isinstance(data, dict) else None
    if not isinstance(username, str):
        return ""
    # Lone surrogates are valid JSON but cannot be encoded into a cache key.
    return UserManager.normalize_email(username).encode("utf-8", "backslashreplace").decode()


class ApiRateThrottle(RatelimitThrottle):
    """RATELIMIT_API per user; per IP for anonymous calls (the token refresh)."""

    group = "api"
    rate_setting = "RATELIMIT_API"

    def get_key(self, request):
        return "user" if request.user else "ip"


class LoginIpThrottle(RatelimitThrottle):
    group = "login-ip"
    rate_setting = "RATELIMIT_LOGIN_IP"
    key = "ip"


class LoginUsernameThrottle(RatelimitThrottle):
    """Caps password guessing on one account, whatever the number of IPs used."""

    group = "login-username"
    rate_setting = "RATELIMIT_LOGIN_USER"
    key = staticmethod(login_username_key)
