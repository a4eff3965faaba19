"""gunicorn settings for production (`make serve`); every value can be set from the environment.

gthread workers, one per core with four threads each: keep-alive connections
spare a TCP handshake and teardown per request, and on the 2-core box measured
in bench/load they served 10-40 % more than sync workers, with a lower p99.
One worker per core, not two: on a box shared with its database the second
set of workers bought no throughput, only memory and GIL hand-offs.
"""

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import environ
from gunicorn import glogging, util

from taskmgmt.logging import JsonFormatter

# The same .env as Django's settings, so WEB_CONCURRENCY and friends can live there too.
environ.Env.read_env(Path(__file__).resolve().parent / ".env")

# /metrics sums every worker's counts (taskmgmt/metrics.py): prometheus_client's
# multiprocess mode keeps each process's values in files here. It must be set before
# the app (and prometheus_client) loads; a directory of our own unless one is named.
# A reload (SIGHUP) runs this file again in the master, whose environment then names
# the directory made here: OWN_METRICS_DIR_VARIABLE remembers it is ours to remove.
OWN_METRICS_DIR_VARIABLE = "TASKMGMT_GUNICORN_OWN_METRICS_DIR"
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="taskmgmt-metrics-")
    os.environ[OWN_METRICS_DIR_VARIABLE] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
_OWN_METRICS_DIR = os.environ.get(OWN_METRICS_DIR_VARIABLE) == str(METRICS_DIR)


def _cores() -> int:
    """Cores this process may run on (taskset, cgroup cpusets), not all the machine has."""
    return len(os.sched_getaffinity(0))


wsgi_app = "taskmgmt.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", _cores()))
# More than one thread makes gthread workers; 1 gives sync workers (no keep-alive).
threads = int(os.environ.get("GUNICORN_THREADS", 4))
# A worker silent this long is killed and replaced (its transactions roll back). A sync
# worker is silent while it serves a request, so this bounds each request; a gthread
# worker's main thread keeps answering while its threads serve, so it catches hung workers.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
# On SIGTERM, requests in flight get this long to finish before workers are killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", 30))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", 5))
# A kept-alive connection stays with the worker that accepted it, and a burst of
# connects can all land on one worker (one core, for the GIL) while another idles.
# Each worker closes the connection of every this-many-th request after answering it
# (as nginx's keepalive_requests does): the client reconnects to the worker that
# accepts first, the less busy one, so the load evens out within seconds.
KEEPALIVE_REQUESTS = int(os.environ.get("GUNICORN_KEEPALIVE_REQUESTS", 100))
# Each worker loads the application itself, not the master before it forks: so
# `systemctl reload` (SIGHUP) starts workers on the code now on disk (with the app
# preloaded they would fork from the master's old copy), and the master holds no
# Django. A broken configuration still stops startup: gunicorn halts when a worker
# fails to boot. Measured (docs/performance.md): RSS summed over the processes
# 242 -> ~200 MiB under load, PSS about the same (the workers shared little of a
# preloaded master once Python's reference counts had touched its pages).
preload_app = False
# Honour X-Forwarded-* only from a proxy on this host.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Above what the API accepts (taskmgmt.middleware.MAX_URI_LENGTH and friends), so an
# oversized request gets the API's JSON answer; only a request line over 8190 bytes
# (gunicorn's maximum) or headers over these get gunicorn's own HTML 400/414.
limit_request_line = 8190
limit_request_fields = 200
limit_request_field_size = 16380
# No gunicornc control socket: nothing uses it, and its one default path per user
# would be shared by every gunicorn on the host.
control_socket_disable = True


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's answer to a request it cannot read (a request line over 8190 bytes, a
    malformed header, bytes that are not HTTP) in the API's error shape, where gunicorn
    writes an HTML page: every answer the server sends is JSON."""
    body = json.dumps({"title": reason, "message": mesg or reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn's workers call util.write_error (its one use, Worker.handle_error) by name.
util.write_error = write_json_error


# No access log: taskmgmt.middleware.RequestLogMiddleware writes one JSON line per
# request, with its request id and user, so a second line would be a duplicate.
accesslog = None
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


class JsonLogger(glogging.Logger):
    """gunicorn's own events (boot, worker timeouts and restarts) as JSON lines on stdout.

    Set through `logger_class`, not `logconfig_dict`: any log config makes gunicorn
    build an access line for every request, even with no access log to write it to.
    """

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)
            handler.setFormatter(JsonFormatter())


logger_class = JsonLogger


def on_starting(server):
    """Start the counts from zero: files of an earlier server's processes would be summed in
    (their archives and a half-done compaction's files too; the lock file may stay)."""
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in METRICS_DIR.iterdir():
        if stale.is_file() and stale.name != "compaction.lock":
            stale.unlink()


def child_exit(server, worker):
    """A dead worker's counts stay in the sums, folded into the archive files so they do
    not pile up (taskmgmt/metrics_files.py); its live-gauge values go."""
    # Imported here, not at the top: the master otherwise carries prometheus_client
    # (~10 MiB) for the calls it makes when a worker dies.
    from taskmgmt import metrics_files

    try:
        metrics_files.compact(METRICS_DIR, ended=[worker.pid])
    except OSError as error:  # the directory gone or full: the files wait for the next one
        server.log.warning("metric files not compacted: %s", error)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)


# gunicorn drains at most this much of a body the app did not read before it reads the
# next request on a kept-alive connection; beyond it, it drops the connection.
DRAINED_BODY_BYTES = 64 * 1024


def body_may_stay_unread(req) -> bool:
    """A chunked body (refused 411 unread) or one larger than gunicorn drains: the app
    may answer without reading it (a 413, 401, 429), and the connection cannot then be kept."""
    for name, value in req.headers:
        if name == "TRANSFER-ENCODING":
            return True
        if name == "CONTENT-LENGTH" and value.isdigit() and int(value) > DRAINED_BODY_BYTES:
            return True
    return False


def pre_request(worker, req):
    # Closing is said in the answer (Connection: close), so a client reconnects instead of
    # losing its next request on a connection the server drops (README, Production serving).
    if worker.nr % KEEPALIVE_REQUESTS == KEEPALIVE_REQUESTS - 1 or body_may_stay_unread(req):
        req.force_close()


# What a development install (requirements-dev.txt) adds that DRF imports whenever it is
# there (rest_framework.compat): requests, for its test client, and pygments and markdown,
# for the browsable API this project does not serve. A production install has none of
# them; kept out of the workers, a server started from either venv holds the same memory
# (~6 MiB a worker, docs/performance.md). Nothing the server runs imports them.
DEVELOPMENT_ONLY_IMPORTS = ("requests", "pygments", "markdown")


def post_fork(server, worker):
    """In the new worker, before it loads the application."""
    for name in DEVELOPMENT_ONLY_IMPORTS:
        # None in sys.modules: `import name` raises ImportError, as where it is not installed.
        sys.modules.setdefault(name, None)
    # The master imported taskmgmt.logging (JsonFormatter, above) when it read this file,
    # maybe a deploy ago: the worker imports the project's code from disk, as it does
    # the rest of the application, or settings naming something new in it fail to load.
    for name in [name for name in sys.modules if name.partition(".")[0] == "taskmgmt"]:
        del sys.modules[name]


def post_worker_init(worker):
    """Import the URLconf, and with it every view, before the worker's first request,
    which then is served at full speed (Django imports it lazily, on the first)."""
    from django.conf import settings

    importlib.import_module(settings.ROOT_URLCONF)
