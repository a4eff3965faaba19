"""Every Prometheus metric taskmgmt exports, the request middleware and the /metrics view.

Events (requests, claims, failures, reassignments, login failures) are counted
where they happen, in whichever process serves them: under gunicorn the client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py) sums every
worker's files at scrape time. State (tasks by status, nodes, the sweep) is read
from the database at scrape time by collectors the apps register here, so it is
the same whichever worker answers and survives restarts.

Labels are bounded sets: view names, methods, status codes, statuses, causes,
liveness states and node names (admin-created accounts). Never a task id or an email.
"""

import hmac
import ipaddress
import logging
import os
import time


def _multiprocess_dir_ready() -> None:
    """Make PROMETHEUS_MULTIPROC_DIR if it is named but missing: prometheus_client writes
    each process's first values there as the metrics below are made, so a command sharing
    gunicorn's directory (the sweep, docs/operations.md) failed to start while it was gone
    (gunicorn stopped, systemd's RuntimeDirectory removed). One that cannot be made leaves
    this process's counts in its own memory: a warning, never a failed sweep. Before
    prometheus_client is imported: it picks its mode then."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        logging.getLogger("taskmgmt.metrics").warning(
            "metrics counted in this process only: PROMETHEUS_MULTIPROC_DIR cannot be made",
            extra={"event": "metrics_dir_unavailable", "error": str(error)},
        )


_multiprocess_dir_ready()

from django.conf import settings  # noqa: E402
from django.db import DatabaseError, InterfaceError  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

from taskmgmt.metrics_files import ArchivedMultiProcessCollector  # noqa: E402

logger = logging.getLogger("taskmgmt.metrics")

REQUESTS = Counter(
    "taskmgmt_http_requests",
    "HTTP requests answered, by method, view (URL pattern name) and status code.",
    ["method", "view", "status"],
)
REQUEST_SECONDS = Histogram(
    "taskmgmt_http_request_duration_seconds",
    "Time to answer an HTTP request, by view (URL pattern name) and status code.",
    ["view", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CLAIM_LATENCY = Histogram(
    "taskmgmt_task_claim_latency_seconds",
    "Time a task waited pending (since it was created, reassigned or edited) before a node"
    " started it.",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
)
FAILURES = Counter(
    "taskmgmt_task_failures",
    "Tasks that failed, by cause (node_reported, deadline, node_lost, admin, drained).",
    ["cause"],
)
REASSIGNMENTS = Counter(
    "taskmgmt_task_reassignments",
    "Tasks given (back) to a node as pending: by an admin (manual), by the sweep off a lost"
    " node (failover), off a draining node (drain).",
    ["kind"],
)
CANCELLATIONS = Counter(
    "taskmgmt_task_cancellations",
    "Tasks cancelled, by how: a pending task at once (pending), a node's acknowledgement"
    " of a cancel request (acknowledged), the sweep after CANCEL_GRACE_SECONDS (timeout).",
    ["how"],
)
PROGRESS_REPORTS = Counter(
    "taskmgmt_progress_reports",
    "Progress reports accepted from nodes (PUT /api/tasks/progress answered 200).",
)
LOGIN_FAILURES = Counter(
    "taskmgmt_login_failures",
    "Refused logins, by where (api, admin_site) and why (unknown_user, wrong_password,"
    " inactive; the admin site's invalid_login, inactive, node_account, rate_limited,"
    " unavailable, busy).",
    ["via", "reason"],
)

# Methods outside this set share one label value, so a client cannot invent label values.
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

# Scrape-time collectors registered by the apps (their `ready()`), kept out of the
# process registry so multiprocess mode does not sum them once per worker.
_domain = CollectorRegistry()


def register_collector(collector) -> None:
    _domain.register(collector)


def _view_name(request) -> str:
    match = getattr(request, "resolver_match", None)
    return match.view_name if match else "unmatched"


class MetricsMiddleware:
    """Counts and times every request by its URL pattern's name (a bounded set)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        count_answer(request.method, _view_name(request), response.status_code, started)
        return response


def count_answer(method: str, view: str, status: int, started: float) -> None:
    """Count and time one answer; `started` is the request's time.perf_counter()."""
    method = method if method in _METHODS else "other"
    REQUESTS.labels(method, view, str(status)).inc()
    REQUEST_SECONDS.labels(view, str(status)).observe(time.perf_counter() - started)


def _refusal(status: int, title: str, message: str) -> JsonResponse:
    from taskmgmt.errors import error_response  # as in taskmgmt.middleware: DRF loads later

    response = error_response(status, message, title)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _address_allowed(request, networks: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


def _token_matches(request, token: str) -> bool:
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    # As bytes: compare_digest refuses non-ASCII text, which any client can send.
    supplied_bytes = supplied.strip().encode("utf-8", "surrogatepass")
    return scheme.lower() == "bearer" and hmac.compare_digest(supplied_bytes, token.encode())


METRICS_METHODS = ("GET", "HEAD")


# A scraper sends no CSRF token: another method gets the JSON 405 below, not Django's
# HTML 403 page for a POST without one.
@csrf_exempt
def metrics_view(request):
    """Prometheus text format, for a scraper that passes every check configured.

    Neither METRICS_TOKEN nor METRICS_ALLOWED_NETWORKS set: 404, so the metrics
    are never open by default. Both set: both must hold. Then, as the API does,
    a method other than GET or HEAD is a 405.
    """
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return _refusal(404, "Not Found", "Metrics are off: set METRICS_TOKEN.")
    if networks and not _address_allowed(request, networks):
        return _refusal(403, "Forbidden", "This address may not read the metrics.")
    if token and not _token_matches(request, token):
        return _refusal(401, "Unauthorized", "Send Authorization: Bearer <METRICS_TOKEN>.")
    if request.method not in METRICS_METHODS:
        response = _refusal(405, "Method Not Allowed", f'Method "{request.method}" not allowed.')
        response["Allow"] = ", ".join(METRICS_METHODS)
        return response
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        ArchivedMultiProcessCollector(registry)
    else:
        registry = REGISTRY
    figures = _DatabaseFigures()
    body = generate_latest(registry) + generate_latest(figures)
    response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    # nodes.serving: not the API serving its nodes, and its record would wait for the
    # database a second time (a connect timeout each, with one that never answers).
    response.without_database = not figures.up
    return response


class _DatabaseFigures:
    """The figures read from the database, and `taskmgmt_database_up`. A database that
    cannot be read leaves its figures out, not the events counted above: a 503 for the
    whole scrape lost the request and error counts exactly during the outage."""

    up = 0

    def collect(self):
        try:
            families, self.up = list(_domain.collect()), 1  # all of them, or none
        except (DatabaseError, InterfaceError):
            logger.error(
                "metrics served without the database's figures: it could not be read",
                exc_info=True,
                extra={"event": "metrics_database_unavailable"},
            )
            families, self.up = [], 0
        yield from families
        yield GaugeMetricFamily(
            "taskmgmt_database_up",
            "1 if the database answered this scrape's queries, 0 if not: its figures (tasks,"
            " nodes, the sweep) are then left out, the events counted still served.",
            value=self.up,
        )
