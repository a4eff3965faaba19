"""`systemctl reload taskmgmt` (SIGHUP to gunicorn) serves the code now on disk.

deploy/README.md upgrades a host with `git pull`, `make setup-production` and `systemctl reload`.
gunicorn.conf.py's workers load the application themselves: had the master loaded
it before forking (preload_app), reloaded workers would fork from its old copy.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.test_faults import wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.process

# A module of the application that a deploy changes: it answers its VERSION and hands
# every other path to Django, as the project's own WSGI module does.
PROBE = """
from taskmgmt.wsgi import application as django_application

VERSION = "{version}"


def application(environ, start_response):
    if environ["PATH_INFO"] == "/probe-version":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [VERSION.encode()]
    return django_application(environ, start_response)
"""


def workers_of(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return {int(pid) for pid in children.read_text().split()}


def fetch(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return answer.status, answer.read().decode()


def answers(port: int, path: str):
    try:
        return fetch(port, path)
    except OSError:
        return None


def gunicorn_env(tmp_path, port: int) -> dict:
    """Production settings, one worker on `port`, a SQLite file in `tmp_path`, and
    `tmp_path` importable (where a test writes its probe module)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "DEBUG": "false",
        "SECRET_KEY": "gunicorn-test-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def start_gunicorn(env: dict, app: str, log) -> subprocess.Popen:
    """gunicorn with the project's gunicorn.conf.py serving `app`, logging to `log`."""
    return subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", app],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_a_reload_serves_the_code_deployed_since_the_start(tmp_path):
    probe = tmp_path / "deployed_probe.py"
    probe.write_text(PROBE.format(version="1"))
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = start_gunicorn(gunicorn_env(tmp_path, port), "deployed_probe:application", log)
    try:
        wait_until(lambda: answers(port, "/probe-version"), 30, "gunicorn did not answer")
        assert fetch(port, "/probe-version") == (200, "1")
        assert fetch(port, "/healthz")[0] == 200  # Django itself, behind the probe
        before = workers_of(server.pid)

        probe.write_text(PROBE.format(version="2"))  # the deploy
        # A fresh mtime, even within the file system's timestamp resolution.
        later = time.time() + 5
        os.utime(probe, (later, later))
        server.send_signal(signal.SIGHUP)

        wait_until(
            lambda: workers_of(server.pid) and not workers_of(server.pid) & before,
            30,
            "the reload did not replace the worker",
        )
        wait_until(lambda: answers(port, "/probe-version") == (200, "2"), 30, "old code served")
        assert fetch(port, "/healthz")[0] == 200
        assert server.poll() is None  # reloaded in place, the master kept
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_after_a_reload_stopping_still_removes_the_metrics_dir_gunicorn_made(tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR gunicorn.conf.py makes a temp dir and removes it
    on exit; a reload reads the config again, which must not forget the dir is its own."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**gunicorn_env(tmp_path, free_port()), "TMPDIR": str(temp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])
    log = (tmp_path / "gunicorn.log").open("w")
    server = start_gunicorn(env, "taskmgmt.wsgi:application", log)
    try:
        wait_until(lambda: answers(port, "/healthz"), 30, "gunicorn did not answer")
        [made] = temp.glob("taskmgmt-metrics-*")
        before = workers_of(server.pid)
        server.send_signal(signal.SIGHUP)
        wait_until(
            lambda: workers_of(server.pid) and not workers_of(server.pid) & before,
            30,
            "the reload did not replace the worker",
        )
        wait_until(lambda: answers(port, "/healthz"), 30, "gunicorn did not answer")
        assert list(temp.glob("taskmgmt-metrics-*")) == [made]  # the same dir, kept
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert not made.exists()


# gunicorn.conf.py imports taskmgmt.logging in the master (its JSON log lines); this
# config marks the master's copy, and the probe says whether a worker got that copy.
MARKING_CONFIG = """
exec(compile(open({config!r}).read(), {config!r}, "exec"))
import taskmgmt.logging
taskmgmt.logging.MASTERS_COPY = True
"""

LOGGING_PROBE = """
import sys

from taskmgmt.wsgi import application as django_application


def application(environ, start_response):
    if environ["PATH_INFO"] == "/probe-logging":
        stale = hasattr(sys.modules["taskmgmt.logging"], "MASTERS_COPY")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"master's copy" if stale else b"from disk"]
    return django_application(environ, start_response)
"""


def test_a_worker_loads_the_logging_module_from_disk_not_the_masters_copy(tmp_path):
    """A reload after a deploy that adds to taskmgmt/logging.py (a filter LOGGING names)
    must not give the new workers the master's old module: they failed to boot, and
    gunicorn shut down, the whole service with it."""
    config = tmp_path / "marking.conf.py"
    config.write_text(MARKING_CONFIG.format(config=str(ROOT / "gunicorn.conf.py")))
    (tmp_path / "logging_probe.py").write_text(LOGGING_PROBE)
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", str(config), "logging_probe:application"],
        cwd=ROOT,
        env=gunicorn_env(tmp_path, port),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: answers(port, "/probe-logging"), 30, "gunicorn did not answer")
        assert fetch(port, "/probe-logging") == (200, "from disk")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
