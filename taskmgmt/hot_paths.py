"""A worker node's most frequent requests, answered without Django's request handler,
its fourteen middlewares and DRF's dispatch: the heartbeat, a progress report, a
status change, a claim and a task's detail (registered by the nodes and tasks apps
when they start: nodes/hot_paths.py, tasks/hot_paths.py).

Why: that plumbing cost more CPU than the work of these requests, which every node
sends every few seconds (docs/performance.md, "Hot paths").

How the API stays the same: a request is answered here only in the shape a worker
sends (its exact method and path, no query string, no Origin or Idempotency-Key, a
bearer token of a user the route accepts, a JSON body its fields accept), and only
with a 200.
Anything else (a refusal, an error, a CORS request, a body to complain about) goes
to Django through every middleware, as before, by raising `Fallback` or any error.
A handler whose work is not safe to run twice (a status change, a claim) sets
`request.changed` once that work is committed: an error after it is a 500, never
a second run through Django.

Both paths call the same authentication, rate count, services and renderer; what the
middlewares add to a 200 (its headers, the log line, the metrics, the serving record)
is added here by the same functions. tests/test_hot_paths.py sends each request both
ways and compares answers and effects. HOT_PATHS=false turns this off.
"""

import io
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core import signals
from django.core.handlers.wsgi import WSGIRequest
from django.db import DEFAULT_DB_ALIAS, connections
from django.urls import resolve
from rest_framework.settings import api_settings

from taskmgmt.logging import current_request_id

logger = logging.getLogger("taskmgmt.request")


class Fallback(Exception):
    """Raised by a route's handler to let Django answer the request instead."""


@dataclass(frozen=True)
class Route:
    method: str
    path: re.Pattern  # matched against the whole PATH_INFO
    handler: Callable  # (HotRequest, match) -> the answer's data (a dict), or raises
    permission: type  # a DRF permission class the caller must pass
    allow: str  # the `Allow` header DRF sends for this URL
    example: str  # a path of the route, resolved once for the metrics' view name
    # Run before the rate count, for a route whose own work can make that count
    # (`taskmgmt.throttling.note_count`) in the same round trip: (HotRequest) -> None.
    before_count: Callable | None = None
    # The route's first read, sent in one round trip with the caller's user:
    # (HotRequest, match, user id from the token) -> a taskmgmt.sql.Read or None; its
    # rows are `request.read_with_user` (None when it was not sent).
    read_with_user: Callable | None = None


_routes: list[Route] = []
# Run after every answer made here, with its status (the serving record, nodes.serving).
_after_answer: list[Callable[[int], None]] = []


def register(
    method: str,
    path: str,
    handler: Callable,
    *,
    permission: type,
    allow: str,
    example: str,
    before_count: Callable | None = None,
    read_with_user: Callable | None = None,
) -> None:
    """Answer `method` on the paths matching regex `path` with `handler` (apps' ready()),
    for a caller authenticated by the API's bearer token who passes `permission`."""
    route = Route(
        method, re.compile(path), handler, permission, allow, example, before_count, read_with_user
    )
    _routes.append(route)


def after_answer(hook: Callable[[int], None]) -> None:
    _after_answer.append(hook)


class HotRequest(WSGIRequest):
    """Django's request, with what DRF's would give the code a view runs: `user`, `data`."""

    user = None
    data: object = None
    changed = False  # set by a handler once its work is committed (see the module's doc)
    read_with_user = None  # the rows of the route's `read_with_user`


def _static_headers() -> list[tuple[str, str]]:
    """What SecurityMiddleware, CorsMiddleware and XFrameOptionsMiddleware add to every
    API answer on plain HTTP (settings are read at each request, as theirs are)."""
    headers = [("X-Frame-Options", settings.X_FRAME_OPTIONS), ("Vary", "origin")]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        policy = policy if isinstance(policy, str) else ",".join(policy)
        headers.append(("Referrer-Policy", policy))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    return headers


def _hsts(request) -> list[tuple[str, str]]:
    if not (settings.SECURE_HSTS_SECONDS and request.is_secure()):
        return []
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return [("Strict-Transport-Security", value)]


# Headers whose presence sends the request to Django: a CORS request, a chunked body
# (RequestLimitsMiddleware's 411), a request to replay (taskmgmt.idempotency).
_DJANGO_ONLY = ("HTTP_ORIGIN", "HTTP_TRANSFER_ENCODING", "HTTP_IDEMPOTENCY_KEY")
# An Accept DRF's negotiation answers with plain application/json (JSON is the API's
# only renderer): media types without parameters (those can change the answer, e.g.
# `indent`), one of them JSON's. Anything else is Django's (JSON all the same:
# taskmgmt.renderers.JSONWhateverAccepted).
_JSON_MEDIA_TYPES = frozenset({"application/json", "application/*", "*/*"})


def _accepts_json(accept: str) -> bool:
    if not accept:
        return True
    kinds = [kind.strip() for kind in accept.split(",")]
    return not any(";" in kind for kind in kinds) and not _JSON_MEDIA_TYPES.isdisjoint(kinds)


def _plain(environ) -> bool:
    """Whether nothing in the request asks for more than the common 200 path."""
    # A format or page asked for in the query string; the app mounted under a prefix.
    if environ.get("QUERY_STRING") or environ.get("SCRIPT_NAME"):
        return False
    if any(name in environ for name in _DJANGO_ONLY):
        return False
    if not _accepts_json(environ.get("HTTP_ACCEPT", "")):
        return False
    if settings.SECURE_SSL_REDIRECT:
        return False
    from taskmgmt.middleware import within_limits

    return within_limits(environ)


class HotPaths:
    """WSGI middleware around Django's application (taskmgmt.wsgi)."""

    def __init__(self, django_app):
        self.django_app = django_app
        self._view_names: dict[str, str] = {}

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        for route in _routes:
            if route.method == method:
                match = route.path.fullmatch(path)
                if match and settings.HOT_PATHS and _plain(environ):
                    answer = self.answer(route, match, environ)
                    if answer is not None:
                        status, headers, body = answer
                        start_response(status, headers)
                        return [body]
                    break
        return self.django_app(environ, start_response)

    def view_name(self, route: Route) -> str:
        name = self._view_names.get(route.example)
        if name is None:
            name = self._view_names[route.example] = resolve(route.example).view_name
        return name

    def answer(self, route: Route, match, environ):
        """(status line, headers, body) of a 200 (or of a 500 after a committed change),
        or None for Django to answer."""
        # Imported here, as RequestLogMiddleware does: this module loads before the URLconf.
        from taskmgmt.metrics import count_answer
        from taskmgmt.middleware import log_answer, request_id_from
        from taskmgmt.renderers import JSON_CONTENT_TYPE, JSONRenderer
        from taskmgmt.views import server_error

        started = time.perf_counter()
        signals.request_started.send(sender=self.__class__, environ=environ)
        # No ping first (CONN_HEALTH_CHECKS): the request's first query, a read of the
        # caller's user, finds a dead connection itself, and then nothing has changed:
        # Django answers the request, and its close_old_connections reconnects.
        connections[DEFAULT_DB_ALIAS].health_check_done = True
        request = HotRequest(environ)
        request.id = request_id_from(request)
        token = current_request_id.set(request.id)
        try:
            body = None
            try:
                request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it
                body = request.body
                _authenticate(request, route, match)
                request.data = _parsed(request, body)
                if route.before_count:
                    route.before_count(request)
                _throttle(request)
                data = route.handler(request, match)
                status, content = 200, JSONRenderer().render(data)
            except Exception:
                if not request.changed:
                    # Django answers, with everything it does (including for this error).
                    if body is not None:
                        environ["wsgi.input"] = io.BytesIO(body)
                    return None
                logger.exception("a hot path failed after its change was committed")
                status, content = 500, server_error(request).content
            headers = [
                ("Content-Type", JSON_CONTENT_TYPE),
                ("Allow", route.allow),
                ("Content-Length", str(len(content))),
                *_static_headers(),
                *_hsts(request),
                ("X-Request-ID", request.id),
            ]
            for hook in _after_answer:
                hook(status)
            count_answer(request.method, self.view_name(route), status, started)
            log_answer(request, status, started)
            return ("200 OK" if status == 200 else "500 Internal Server Error"), headers, content
        finally:
            current_request_id.reset(token)
            signals.request_finished.send(sender=self.__class__)


# DRF's steps, in its order, for a request it would answer with a 200; anything else
# is Django's to answer.


def _authenticate(request, route: Route, match) -> None:
    for authenticator in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
        authenticator = authenticator()
        if route.read_with_user and hasattr(authenticator, "authenticate_with"):
            found = authenticator.authenticate_with(
                request, lambda user_id: route.read_with_user(request, match, user_id)
            )
            if found is not None:
                request.user, _, request.read_with_user = found
                break
            continue
        user_and_token = authenticator.authenticate(request)
        if user_and_token is not None:
            request.user = user_and_token[0]
            break
    if not route.permission().has_permission(request, None):
        raise Fallback


def _parsed(request, body: bytes):
    """The body as DRF's parser reads it: {} when empty, JSON when declared so."""
    if not body:
        return {}
    if request.content_type != "application/json" or request.content_params:
        raise Fallback  # DRF's media type matching and charsets, or its 415
    (parser,) = api_settings.DEFAULT_PARSER_CLASSES
    return parser().parse(io.BytesIO(body), "application/json", {"request": request})


def _throttle(request) -> None:
    for throttle in api_settings.DEFAULT_THROTTLE_CLASSES:
        if not throttle().allow_request(request, None):
            raise Fallback
