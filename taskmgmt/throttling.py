"""Rate limits as DRF throttles, counted by django-ratelimit in the shared cache.

One count per key in CACHES["default"] (Redis in production), so every
worker process sees the same numbers. Rates are read from settings on each
request, so `override_settings` and the environment both apply.
"""

import ipaddress

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
        key = self.get_key(request)
        if key == "ip" and not has_client_address(request):
            key = unknown_address_key
        usage = get_usage(
            request,
            group=self.group,
            key=key,
            rate=getattr(settings, self.rate_setting),
            increment=True,
        )
        self.seconds_left = usage["time_left"] if usage else 0
        return not (usage and usage["should_limit"])

    def wait(self):
        # Retry-After must be a positive whole number of seconds.
        return max(self.seconds_left, 1)


def has_client_address(request) -> bool:
    """Whether the request has an IP where django-ratelimit reads it.

    It raises (a 500) on a missing or empty REMOTE_ADDR, or a proxy header that is
    absent or not an address, which a client can send.
    """
    address = request.META.get(settings.RATELIMIT_IP_META_KEY or "REMOTE_ADDR", "")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def unknown_address_key(group, request) -> str:
    """One count shared by every request without a usable address: still limited."""
    return "unknown-address"


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
