"""Rate limits as DRF throttles, counted by django-ratelimit in the shared cache.

One count per key in CACHES["default"] (Redis in production), so every
worker process sees the same numbers. Rates are read from settings on each
request, so `override_settings` and the environment both apply.

When the cache cannot be reached, a count is not kept: the login limits fail
closed (503), the general API limit fails open with a warning (docs/security.md,
"When Redis is down").
"""

import ipaddress
import logging
import time

from django.conf import settings
from django.core.cache import caches
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle

from taskmgmt.exceptions import CacheUnavailable
from taskmgmt.sql import rate_window, ratelimit_key

logger = logging.getLogger("taskmgmt.ratelimit")

# What a cache backend for Redis (django-redis or Django's own) raises when the
# server is down, refuses or times out; socket errors for anything below it.
CACHE_ERRORS = (RedisError, OSError)


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

    def window_for(self, request):
        """The window this request is counted in (a RateWindow); None: limits are off.

        The same however often it is asked for one request (the heartbeat's hot path asks
        before the throttle does): a window ending between two asks would count twice."""
        key = self.get_key(request)
        if key == "ip" and not has_client_address(request):
            key = unknown_address_key
        if not settings.RATELIMIT_ENABLE:
            return None
        rate = getattr(settings, self.rate_setting)
        value = key(self.group, request) if callable(key) else ratelimit_key(key, request)
        windows = request.META.setdefault(_WINDOWS_KEY, {})
        if (self.group, rate, value) not in windows:
            windows[self.group, rate, value] = rate_window(self.group, rate, value)
        return windows[self.group, rate, value]

    def allow_request(self, request, view):
        window = self.window_for(request)
        if window is None:
            return True
        count = count_once(request, window)
        if count is None:
            # The count could not be kept: refuse, as django-ratelimit does.
            self.seconds_left = -1
            return False
        self.seconds_left = window.ends_at - int(time.time())
        return count <= window.limit

    def wait(self):
        # Retry-After must be a positive whole number of seconds.
        return max(self.seconds_left, 1)


def counts_cache():
    """The cache the counts live in (django-ratelimit's setting)."""
    return caches[_counts_alias()]


def _counts_alias() -> str:
    return getattr(settings, "RATELIMIT_USE_CACHE", "default")


# Where a request's counts are kept in its WSGI environ: a request the hot paths
# (taskmgmt.hot_paths) counted and then handed to Django is not counted twice.
_COUNTS_KEY = "taskmgmt.rate_counts"
_WINDOWS_KEY = "taskmgmt.rate_windows"


def count_once(request, window):
    """`count_request` for this request and window, once however often it is asked."""
    counts = request.META.setdefault(_COUNTS_KEY, {})
    if window.cache_key not in counts:
        counts[window.cache_key] = count_request(window.cache_key, window.timeout)
    return counts[window.cache_key]


def note_count(request, window, count: int) -> None:
    """Record `count` as this request's count in `window`, made by another Redis command
    that counted it (the heartbeat's, nodes.heartbeats): `count_once` then sends none."""
    request.META.setdefault(_COUNTS_KEY, {})[window.cache_key] = count


def counts_in_default_cache() -> bool:
    """Whether the counts live in CACHES["default"], where the heartbeats are kept."""
    return _counts_alias() == "default"


def count_request(cache_key, timeout):
    """django-ratelimit's count (get_usage with increment=True): same key, window
    and expiry, in one cache round trip once the window's count exists.

    get_usage always sends `add` before `incr`; incrementing first skips the
    `add` on every request but the window's first. Raises CacheUnavailable
    when the cache cannot be reached.
    """
    cache = counts_cache()
    try:
        try:
            return cache.incr(cache_key)
        except ValueError:
            pass
        if cache.add(cache_key, 1, timeout):
            return 1
        try:
            # Another process started the window between our incr and add.
            return cache.incr(cache_key)
        except ValueError:
            return None
    except CACHE_ERRORS as error:
        raise CacheUnavailable("The rate-limit cache is unavailable; try again shortly.") from error


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


class FirstRefusalThrottling:
    """A view mixin: its throttles run in order and stop at the first that refuses.

    DRF runs every throttle to report the longest wait; here a request refused per IP
    costs no more work (the per-account throttle parses the body and looks up the user).
    """

    def check_throttles(self, request):
        for throttle in self.get_throttles():
            if not throttle.allow_request(request, self):
                self.throttled(request, throttle.wait())


class ApiRateThrottle(RatelimitThrottle):
    """RATELIMIT_API per user; per IP for anonymous calls (the token refresh).

    Fails open: it caps load, not guessing (a token is a signed JWT), and a cache
    outage should not stop nodes that already hold one.
    """

    group = "api"
    rate_setting = "RATELIMIT_API"

    def get_key(self, request):
        return "user" if request.user else "ip"

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except CacheUnavailable as error:
            logger.warning(
                "rate limit not counted: the cache is unavailable",
                extra={"event": "ratelimit_unavailable", "error": str(error.__cause__)},
            )
            return True


class RefusedRateThrottle(ApiRateThrottle):
    """RATELIMIT_API per IP for requests refused 401 or 403, which DRF answers before
    its throttles run: bad tokens and forbidden calls are counted too."""

    group = "api-refused"

    def get_key(self, request):
        return "ip"
