"""Faults, on a real gunicorn over a MariaDB server that this module owns.

The database stopping and starting again, and a worker SIGKILLed in the middle
of writes. A private mariadbd (own datadir and port, in a temp dir) is stopped
and restarted, never the machine's shared server, so this runs in every CI leg.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path

import MySQLdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "faults-password-1"
ADMIN_EMAIL = "admin@faults.test"
NODE_EMAIL = "node@faults.test"
METRICS_TOKEN = "faults-metrics-token-0123456789"

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("mariadbd") and shutil.which("mariadb-install-db")),
        reason="needs the MariaDB server binaries (apt-get install mariadb-server)",
    ),
    pytest.mark.process,
]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(0.1)


class PrivateMariaDB:
    """A throwaway mariadbd on its own port and datadir, which the tests may stop at will."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.port = free_port()
        self.process = None
        subprocess.run(
            [
                "mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
                "--auth-root-authentication-method=normal", "--skip-test-db",
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "mariadbd", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
                f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--socket={self.workdir / 'mariadb.sock'}", f"--pid-file={self.workdir / 'pid'}",
                "--skip-log-bin", "--innodb-buffer-pool-size=32M",
            ],
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "server.log").open("a"),
        )  # fmt: skip
        wait_until(self.answers, 30, "private mariadbd did not answer")

    def stop(self) -> None:
        """A clean shutdown, as `systemctl stop mariadb` does it."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)

    def answers(self) -> bool:
        try:
            self.connect().close()
        except MySQLdb.OperationalError:
            return False
        return True

    def connect(self, database: str | None = None):
        return MySQLdb.connect(
            host="127.0.0.1", port=self.port, user="root", database=database or ""
        )

    def url(self, database: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"


class Gunicorn:
    """The production server (gunicorn.conf.py, DEBUG off) on a free port."""

    def __init__(self, env: dict, log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": "2"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: len(self.worker_pids()) == 2, 30, "gunicorn did not boot 2 workers")
        wait_until(lambda: self.get("/healthz")[0] == 200, 30, "gunicorn did not answer")

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def request(self, method, path, body=None, token=None, opener=None):
        """(status, headers, body) of one request; connection failures raise OSError."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
        )
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=15) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def get(self, path, token=None, opener=None):
        return self.request("GET", path, token=token, opener=opener)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=40)
        self.log.close()


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    server = PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site(mariadb, tmp_path_factory):
    """A migrated database with an admin and a node, served by gunicorn; logins done."""
    connection = mariadb.connect()
    connection.cursor().execute("CREATE DATABASE faults CHARACTER SET utf8mb4")
    connection.close()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))},
        "DJANGO_SETTINGS_MODULE": "taskmgmt.settings",
        "DEBUG": "false",
        "SECRET_KEY": "faults-test-key-not-secret-0123456789abcdef",
        "DATABASE_URL": mariadb.url("faults"),
        "ALLOWED_HOSTS": "127.0.0.1",
        "RATELIMIT_API": "100000/m",
        "RATELIMIT_LOGIN_IP": "100000/m",
        "RATELIMIT_LOGIN_USER": "100000/m",
        "METRICS_TOKEN": METRICS_TOKEN,
        # The admin-site login below runs over plain HTTP.
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        # As `make serve` does: whitenoise serves what collectstatic gathered.
        "STATIC_ROOT": str(tmp_path_factory.mktemp("static")),
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    create_users = (
        "from accounts.models import User; "
        f"User.objects.create_superuser({ADMIN_EMAIL!r}, {PASSWORD!r}, name='Admin'); "
        f"User.objects.create_user({NODE_EMAIL!r}, {PASSWORD!r}, name='Node')"
    )
    subprocess.run([*manage, "shell", "-c", create_users], cwd=ROOT, env=env, check=True)
    server = Gunicorn(env, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log")
    try:
        server.admin_token = login(server, ADMIN_EMAIL)["token"]
        node = login(server, NODE_EMAIL)
        server.node_token, server.node_id = node["token"], node["userDetails"]["id"]
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_up(mariadb):
    """Each test starts with the database running, whatever the one before left."""
    if not mariadb.answers():
        mariadb.start()


def login(server: Gunicorn, email: str) -> dict:
    status, _, body = server.request(
        "POST", "/api/auth/login", {"username": email, "password": PASSWORD}
    )
    assert status == 200, body
    return json.loads(body)


def admin_site_session(server: Gunicorn):
    """A urllib opener logged in to /admin/ through its login form."""
    cookies = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    server.get("/admin/login/", opener=opener)
    csrf = next(cookie.value for cookie in cookies if cookie.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": ADMIN_EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": csrf}
    ).encode()
    opener.open(f"http://127.0.0.1:{server.port}/admin/login/?next=/admin/", data=form)
    assert any(cookie.name == "sessionid" for cookie in cookies)
    return opener


def assert_json_error(response, status: int) -> dict:
    code, headers, body = response
    assert code == status, body[:300]
    assert headers["Content-Type"] == "application/json; charset=utf-8", body[:300]
    document = json.loads(body)
    assert document.keys() >= {"title", "message"}
    return document


def future(days: int = 1) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def test_gunicorn_writes_one_json_line_per_request_and_its_own_events_as_json(site):
    """Its access log is off, so the request log is not doubled; its boot lines are JSON too."""
    status, headers, _ = site.get("/healthz?probe=1")
    request_id = headers["X-Request-ID"]

    assert status == 200

    lines = [json.loads(line) for line in site.log_path.read_text().splitlines()]
    assert [line["path"] for line in lines if line.get("request_id") == request_id] == ["/healthz"]
    assert any(
        line["logger"] == "gunicorn.error" and line["message"].startswith("Booting worker")
        for line in lines
    )


def test_with_the_database_down_every_path_answers_503_json_and_recovers_without_restart(
    mariadb, site, database_up
):
    admin_site = admin_site_session(site)
    for _ in range(4):  # both workers hold a persistent connection before the outage
        assert site.get("/api/tasks/all", token=site.admin_token)[0] == 200
    workers = site.worker_pids()

    mariadb.stop()

    for _ in range(4):  # enough to reach both workers
        down = site.get("/healthz")
        assert down[0] == 503
        assert json.loads(down[2])["database"] == "down"
        assert_json_error(site.get("/api/tasks/all", token=site.admin_token), 503)
        assert_json_error(site.get(f"/api/tasks/{site.node_id}", token=site.node_token), 503)
        login_body = {"username": ADMIN_EMAIL, "password": PASSWORD}
        assert_json_error(site.request("POST", "/api/auth/login", login_body), 503)
        assert_json_error(site.get("/admin/", opener=admin_site), 503)

    mariadb.start()

    for _ in range(4):  # every request after the restart succeeds, the first one included
        assert site.get("/healthz")[0] == 200
        assert site.get("/api/tasks/all", token=site.admin_token)[0] == 200
        assert site.get("/admin/", opener=admin_site)[0] == 200
    assert site.worker_pids() == workers  # recovered in place, no worker restarted


def scrape(server: Gunicorn) -> tuple[int, float, dict]:
    """(status, seconds taken, {(sample name, frozenset of labels): value}) of one scrape."""
    started = time.monotonic()
    status, _, body = server.get("/metrics", token=METRICS_TOKEN)
    took = time.monotonic() - started
    assert status == 200, body[:300]
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    return status, took, samples


def healthz_answers(samples: dict, status: str) -> float:
    labels = frozenset({"method": "GET", "view": "healthz", "status": status}.items())
    return samples.get(("taskmgmt_http_requests_total", labels), 0.0)


def test_with_the_database_down_metrics_answer_200_with_the_events_and_database_up_0(
    mariadb, site, database_up
):
    """A 503 for the whole scrape lost every metric, the request and error counts too,
    exactly while the database was down."""
    for _ in range(4):
        assert site.get("/healthz")[0] == 200
    _, _, up = scrape(site)
    assert up[("taskmgmt_database_up", frozenset())] == 1
    assert ("taskmgmt_tasks_open", frozenset({("status", "pending")})) in up

    mariadb.stop()

    for _ in range(4):  # enough to reach both workers
        assert site.get("/healthz")[0] == 503
    for _ in range(4):
        _, took, down = scrape(site)
        assert took < 5
        assert down[("taskmgmt_database_up", frozenset())] == 0
        assert healthz_answers(down, "200") >= healthz_answers(up, "200") >= 4
        assert healthz_answers(down, "503") >= 4  # the outage, counted and served
        figures = ("taskmgmt_tasks_", "taskmgmt_nodes", "taskmgmt_sweep_")
        assert not [name for name, _ in down if name.startswith(figures)]

    mariadb.start()

    for _ in range(4):
        _, _, again = scrape(site)
        assert again[("taskmgmt_database_up", frozenset())] == 1
        assert ("taskmgmt_tasks_open", frozenset({("status", "pending")})) in again


def test_a_worker_killed_during_writes_loses_no_acknowledged_write_and_no_history(
    mariadb, site, database_up
):
    """Writers create a task then start it; meanwhile workers are SIGKILLed one after another."""
    created, started, failures = [], [], []
    stop = threading.Event()

    def write_stream():
        while not stop.is_set():
            try:
                status, _, body = site.request(
                    "POST",
                    "/api/tasks",
                    {
                        "taskName": "under fire",
                        "taskDetails": "written while workers die",
                        "assignedNode": site.node_id,
                        "lockedAt": future(),
                    },
                    token=site.admin_token,
                )
                if status != 201:
                    failures.append(status)
                    continue
                task_id = json.loads(body)["task"]["id"]
                created.append(task_id)
                status, _, _ = site.request(
                    "PUT",
                    "/api/tasks/shift-status",
                    {"taskId": task_id, "taskStatus": "in_progress"},
                    token=site.node_token,
                )
                if status == 200:
                    started.append(task_id)
                else:
                    failures.append(status)
            except (OSError, http.client.HTTPException) as error:
                failures.append(type(error).__name__)  # not acknowledged: may or may not be saved

    writers = [threading.Thread(target=write_stream) for _ in range(4)]
    for writer in writers:
        writer.start()
    killed = set()
    try:
        for _ in range(4):
            time.sleep(0.8)
            victim = min(site.worker_pids() - killed)
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            wait_until(lambda: len(site.worker_pids() - killed) == 2, 20, "no worker respawned")
        time.sleep(0.8)
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=30)

    assert len(killed) == 4
    assert len(created) > 20 and len(started) > 20
    assert all(isinstance(failure, str) for failure in failures), failures  # no HTTP errors
    with mariadb.connect("faults").cursor() as cursor:
        cursor.execute("SELECT id, status FROM tasks_task")
        saved = {str(task_id): status for task_id, status in cursor.fetchall()}
        cursor.execute(
            "SELECT COUNT(*) FROM tasks_task t WHERE NOT EXISTS ("
            " SELECT 1 FROM tasks_taskhistory h"
            " WHERE h.task_id = t.id AND h.action = 'initial_assign')"
        )
        (without_assignment,) = cursor.fetchone()
        cursor.execute(
            "SELECT COUNT(*) FROM tasks_task t WHERE t.status = 'in_progress' AND NOT EXISTS ("
            " SELECT 1 FROM tasks_taskhistory h WHERE h.task_id = t.id"
            " AND h.action = 'status_change' AND h.to_value = 'in_progress')"
        )
        (started_without_history,) = cursor.fetchone()
    assert set(created) <= saved.keys()
    assert all(saved[task_id] == "in_progress" for task_id in started)
    assert without_assignment == 0
    assert started_without_history == 0


def test_after_a_database_restart_the_first_hot_request_on_each_kept_connection_succeeds(
    mariadb, site, database_up
):
    """A node's hot requests send no ping before their first query (taskmgmt.hot_paths):
    a connection the restart killed fails that read, and Django then answers the same
    request on a new connection; no node sees the restart."""
    beat = ("POST", "/api/nodes/heartbeat")
    for _ in range(6):  # every worker thread likely holds a kept connection
        assert site.request(*beat, token=site.node_token)[0] == 200
    workers = site.worker_pids()

    mariadb.stop()
    mariadb.start()

    for _ in range(6):
        status, _, body = site.request(*beat, token=site.node_token)
        assert status == 200, body[:300]
        assert "pendingCount" in json.loads(body)
    assert site.worker_pids() == workers


def with_a_silent_database(code: str, **settings: str) -> subprocess.CompletedProcess:
    """`manage.py shell -c code` whose DATABASE_URL names a server that accepts the TCP
    connection and never says a word (the kernel completes the handshake: a hung MariaDB,
    or a proxy in front of a dead one)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    env = {
        **os.environ,
        "DATABASE_URL": f"mysql://root@127.0.0.1:{silent.getsockname()[1]}/silent",
        "SECRET_KEY": "faults-silent-database-key",
        "DEBUG": "false",
        **settings,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    try:
        return subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        silent.close()


def test_a_database_that_accepts_but_never_answers_is_down_within_seconds(tmp_path):
    """Without a connect timeout every request and /healthz waited minutes on it."""
    started = time.monotonic()
    result = with_a_silent_database(CONNECT)

    assert result.stdout.splitlines()[-1] == "down", result.stderr
    assert time.monotonic() - started < 20


def test_metrics_with_a_database_that_never_answers_is_served_within_its_connect_timeout(
    tmp_path,
):
    """The figures wait for one connect timeout (5 s), then the events are served."""
    # An empty CACHE_URL: the process's own memory (/metrics needs no shared cache).
    result = with_a_silent_database(
        SCRAPE, ALLOWED_HOSTS="testserver", METRICS_TOKEN=METRICS_TOKEN, CACHE_URL=""
    )

    status, took, database_up = result.stdout.split()[-3:]
    assert (status, database_up) == ("200", "0.0"), result.stderr[-2000:]
    assert float(took) < 8  # one 5 s connect timeout, not one per query or middleware


SCRAPE = f"""
import time
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
started = time.monotonic()
response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer {METRICS_TOKEN}")
took = time.monotonic() - started
up = [sample.value for family in text_string_to_metric_families(response.content.decode())
      for sample in family.samples if sample.name == "taskmgmt_database_up"]
print(response.status_code, round(took, 2), up[0] if up else "-")
"""


CONNECT = """
from django.db import OperationalError, connection
try:
    connection.ensure_connection()
except OperationalError:
    print("down")
"""
