"""Request plumbing of our own: a JSON log line per request, and a 503 when the database
or the cache is down."""

import logging
import re
import sys
import time
import uuid

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import DisallowedHost
from django.db import InterfaceError, OperationalError
from django.utils.functional import LazyObject, empty
from redis.exceptions import RedisError

from taskmgmt.logging import current_request_id

logger = logging.getLogger("taskmgmt.request")

# A client's X-Request-ID is kept so traces join up across services, but only
# in a shape that is safe to echo in a header and to write to a log line.
_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
REQUEST_ID_MAX_LENGTH = 64


def request_id_from(request) -> str:
    # META directly: `request.headers` builds a mapping of every header, on every request.
    supplied = request.META.get("HTTP_X_REQUEST_ID")
    if supplied:
        supplied = _REQUEST_ID_UNSAFE.sub("", supplied)[:REQUEST_ID_MAX_LENGTH]
    return supplied or uuid.uuid4().hex


def _user_id(request) -> str | None:
    """The caller's id if a view already looked them up; never a query of its own."""
    user = getattr(request, "user", None)
    if isinstance(user, LazyObject) and user._wrapped is empty:
        return None
    return str(user.pk) if getattr(user, "is_authenticated", False) else None


# Refused credentials, permissions and rate limits stand out from ordinary traffic.
_AUTH_FAILURES = {401, 403, 429}


def _level_for(status: int) -> int:
    if status >= 500:
        return logging.ERROR
    return logging.WARNING if status in _AUTH_FAILURES else logging.INFO


def log_answer(request, status: int, started: float) -> None:
    """The request's `taskmgmt.request` line, `started` being its time.perf_counter()."""
    level = _level_for(status)
    if not logger.isEnabledFor(level):
        return
    fields = {
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "user_id": _user_id(request),
        "remote_addr": request.META.get("REMOTE_ADDR"),
    }
    # The record `logger.log` would make, without its walk up the stack to find
    # the caller (findCaller): this frame is the caller.
    frame = sys._getframe()
    code = frame.f_code
    record = logger.makeRecord(
        logger.name,
        level,
        code.co_filename,
        frame.f_lineno,
        "request",
        (),
        None,
        code.co_name,
        fields,
    )
    logger.handle(record)


# What the API accepts; gunicorn.conf.py sets gunicorn's own limits above these, so an
# oversized request meets ours (a JSON answer) before gunicorn's (an HTML page). The
# numbers are gunicorn's defaults: clients lose nothing they had.
MAX_URI_LENGTH = 4094
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_SIZE = 8190


def _oversized(meta, uri: str) -> tuple[int, str] | None:
    """(status, message) when the request is larger than the API accepts, or its size
    is not stated."""
    if len(uri) > MAX_URI_LENGTH:
        return 414, f"The URI is longer than {MAX_URI_LENGTH} bytes."
    headers = [(key, value) for key, value in meta.items() if key.startswith("HTTP_")]
    if len(headers) > MAX_HEADER_FIELDS:
        return 431, f"The request has more than {MAX_HEADER_FIELDS} header fields."
    if any(len(key) + len(str(value)) > MAX_HEADER_FIELD_SIZE for key, value in headers):
        return 431, f"A header field is longer than {MAX_HEADER_FIELD_SIZE} bytes."
    if "HTTP_TRANSFER_ENCODING" in meta:
        # Django reads a body by its Content-Length only, so a chunked one looked empty;
        # and gunicorn parses chunks in Python, slowly for tiny ones (README, Request size).
        return 411, "Send the body with a Content-Length: a chunked request body is not read."
    return None


def within_limits(environ) -> bool:
    """Whether RequestLimitsMiddleware would let a request without a query string pass."""
    return _oversized(environ, environ.get("RAW_URI") or environ.get("PATH_INFO", "")) is None


class RequestLimitsMiddleware:
    """Refuses requests larger than the API accepts, as JSON, before anything reads them."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refusal = _oversized(request.META, request.META.get("RAW_URI") or request.get_full_path())
        if refusal is None and settings.DEBUG and is_api_path(request.path_info):
            refusal = _host_refused(request)
        if refusal is None:
            return self.get_response(request)
        from taskmgmt.errors import error_response  # see process_exception below

        return error_response(*refusal)


def _host_refused(request) -> tuple[int, str] | None:
    """With DEBUG (`make run`), Django answers a Host outside ALLOWED_HOSTS with its HTML
    debug page before any handler400; the API answers JSON, as without DEBUG."""
    try:
        request.get_host()
    except DisallowedHost:
        return 400, "The request could not be understood."
    return None


class RequestLogMiddleware:
    """One `taskmgmt.request` line per request, after the response, with its request id.

    The id is echoed in `X-Request-ID` and stamped on every line logged meanwhile.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.id = request_id_from(request)
        token = current_request_id.set(request.id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            log_answer(request, response.status_code, started)
        finally:
            current_request_id.reset(token)
        response["X-Request-ID"] = request.id
        return response

    def process_exception(self, request, exception):
        """A lost database or cache connection is an outage to retry, not a bug: 503 JSON."""
        # Imported here: middleware loads before the URLconf, and importing the API
        # module that early starts DRF's settings import chain from the wrong end.
        from taskmgmt.errors import error_response
        from taskmgmt.exceptions import CacheUnavailable

        if isinstance(exception, OperationalError | InterfaceError):
            what = "database"
        elif isinstance(exception, RedisError | CacheUnavailable):
            what = "cache"
        else:
            return None
        logger.error(f"{what} unavailable", exc_info=exception)
        response = error_response(503, f"The {what} is unavailable; try again shortly.")
        response["Retry-After"] = "5"
        return response


# --- The admin site's middlewares, skipped for the API ------------------------------------
# Sessions, the session's user and messages serve the admin site (and the cron views);
# the API authenticates a bearer JWT in DRF, which sets `request.user` itself, and reads
# no session or message. Skipped there, they cost nothing (they were ~80 us a request:
# a session store, a lazy user and a message storage built, then inspected, for nothing).
# Subclasses, so Django's checks still find them and their order in MIDDLEWARE holds;
# CsrfViewMiddleware stays for every path (its check runs in process_view).
_API_PREFIX = "/api/"
_API_PATHS = frozenset({"/api", "/healthz", "/healthz/", "/metrics", "/metrics/"})


def is_api_path(path_info: str) -> bool:
    return path_info.startswith(_API_PREFIX) or path_info in _API_PATHS


class SiteSessionMiddleware(SessionMiddleware):
    def __call__(self, request):
        if is_api_path(request.path_info):
            return self.get_response(request)
        return super().__call__(request)


class SiteAuthenticationMiddleware(AuthenticationMiddleware):
    def __call__(self, request):
        if is_api_path(request.path_info):
            return self.get_response(request)
        return super().__call__(request)


class SiteMessageMiddleware(MessageMiddleware):
    def __call__(self, request):
        if is_api_path(request.path_info):
            return self.get_response(request)
        return super().__call__(request)
