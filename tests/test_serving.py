"""The production server (gunicorn with gunicorn.conf.py): Redis going away and coming
back, and requests larger than the API accepts.

A private redis-server (own port, own dir, no persistence) is stopped and
started again. The database is a SQLite file,
so this needs nothing but the redis-server binary.
"""

import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys

import pytest

from tests.redis_server import PrivateRedis
from tests.test_faults import (
    ADMIN_EMAIL,
    NODE_EMAIL,
    PASSWORD,
    ROOT,
    Gunicorn,
    assert_json_error,
    login,
)

pytestmark = [
    pytest.mark.skipif(
        not shutil.which("redis-server"),
        reason="needs the Redis server binary (apt-get install redis-server)",
    ),
    pytest.mark.process,
]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site(redis_server, tmp_path_factory):
    """gunicorn over a migrated SQLite file with one node, counting in the private Redis."""
    database = tmp_path_factory.mktemp("db") / "db.sqlite3"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))},
        "DJANGO_SETTINGS_MODULE": "taskmgmt.settings",
        "DEBUG": "false",
        "SECRET_KEY": "cache-outage-test-key-not-secret-0123456789",
        "DATABASE_URL": f"sqlite:///{database}",
        "CACHE_URL": redis_server.url(),
        "ALLOWED_HOSTS": "127.0.0.1",
        # Counted in Redis on every request, but never reached.
        "RATELIMIT_API": "100000/m",
        "RATELIMIT_LOGIN_IP": "100000/m",
        "RATELIMIT_LOGIN_USER": "100000/m",
        "STATIC_ROOT": str(tmp_path_factory.mktemp("static")),
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    create_node = (
        "from accounts.models import User; "
        f"User.objects.create_user({NODE_EMAIL!r}, {PASSWORD!r}, name='Node'); "
        f"User.objects.create_superuser({ADMIN_EMAIL!r}, {PASSWORD!r}, name='Admin')"
    )
    subprocess.run([*manage, "shell", "-c", create_node], cwd=ROOT, env=env, check=True)
    server = Gunicorn(env, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log")
    server.database = database
    try:
        yield server
    finally:
        server.stop()


def issued_tokens(site) -> int:
    with sqlite3.connect(site.database) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM token_blacklist_outstandingtoken"
        ).fetchone()
    return count


def log_lines(site) -> list[dict]:
    return [json.loads(line) for line in site.log_path.read_text().splitlines()]


def test_with_redis_down_login_fails_closed_the_api_fails_open_and_healthz_says_so(
    redis_server, site
):
    node = login(site, NODE_EMAIL)
    health = site.get("/healthz")
    assert (health[0], json.loads(health[2])) == (
        200,
        {"status": "ok", "database": "up", "cache": "up"},
    )
    workers = site.worker_pids()
    tokens_before = issued_tokens(site)

    redis_server.stop()

    for _ in range(4):  # enough to reach both workers
        health = site.get("/healthz")
        assert health[0] == 503
        assert json.loads(health[2]) == {"status": "unavailable", "database": "up", "cache": "down"}
        for password in (PASSWORD, "a-wrong-password"):
            refused = site.request(
                "POST", "/api/auth/login", {"username": NODE_EMAIL, "password": password}
            )
            assert "unavailable" in assert_json_error(refused, 503)["message"]
            assert refused[1]["Retry-After"] == "5"
        assert site.get("/api/tasks", token=node["token"])[0] == 200
    assert issued_tokens(site) == tokens_before  # no login got through
    refreshed = site.request("POST", "/api/auth/refresh", {"refresh": node["refresh"]})
    assert refreshed[0] == 200  # anonymous, per IP: fails open too
    warnings = [line for line in log_lines(site) if line.get("event") == "ratelimit_unavailable"]
    assert len(warnings) >= 5 and {line["level"] for line in warnings} == {"WARNING"}

    redis_server.start()

    for _ in range(4):  # every request after the restart succeeds, the first one included
        assert json.loads(site.get("/healthz")[2])["cache"] == "up"
        assert site.get("/api/tasks", token=node["token"])[0] == 200
        login(site, NODE_EMAIL)
    assert site.worker_pids() == workers  # recovered in place, no worker restarted


def raw_get(site, target: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET sent as is, whatever its size."""
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=15)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("target", "headers", "status"),
    [
        (f"/api/tasks?cursor={'A' * 5000}", {}, 414),
        ("/api/tasks", {"X-Padding": "a" * 10000}, 431),
        ("/api/tasks", {f"X-Header-{number}": "1" for number in range(150)}, 431),
    ],
    ids=["long URI", "long header", "many headers"],
)
def test_a_request_larger_than_the_api_accepts_is_refused_as_json_not_gunicorns_html(
    site, target, headers, status
):
    code, content_type, body = raw_get(site, target, headers)

    assert (code, content_type) == (status, "application/json; charset=utf-8"), body[:200]
    assert json.loads(body).keys() == {"title", "message"}


def test_a_request_line_beyond_gunicorns_maximum_gets_gunicorns_answer_as_json_too(site):
    """gunicorn answers what it cannot read itself (docs/operations.md); that answer is
    in the API's error shape, where it was an HTML page."""
    answer = raw_get(site, f"/api/tasks?cursor={'A' * 8000}")
    assert answer[:2] == (414, "application/json; charset=utf-8")

    code, content_type, body = raw_get(site, f"/api/tasks?cursor={'A' * 8200}")

    assert (code, content_type) == (414, "application/json; charset=utf-8"), body[:200]
    assert json.loads(body)["title"] == "URI Too Long"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nA header without a colon\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS, not HTTP
        (b"GET /healthz HTTP/1.1\r\n" + b"X-A: 1\r\n" * 201 + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", 431),
    ],
    ids=["malformed header", "not HTTP", "over 200 headers", "a header over 16380 bytes"],
)
def test_what_gunicorn_cannot_read_is_refused_as_json(site, request_bytes, status):
    with socket.create_connection(("127.0.0.1", site.port), timeout=15) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")

    assert lines[0].split()[1] == str(status), answer[:300]
    assert "Content-Type: application/json; charset=utf-8" in lines
    assert json.loads(body).keys() == {"title", "message"}
    assert site.get("/healthz")[0] == 200  # and the server serves on


# Counts one login and reads /healthz with the settings' own cache configuration.
STALLED_REDIS_SCRIPT = """
import json, time
import django
django.setup()
from django.test import Client
started = time.monotonic()
body = {"username": "a@example.com", "password": "x"}
login = Client().post("/api/auth/login", body, content_type="application/json")
health = Client().get("/healthz")
print(json.dumps({
    "login": login.status_code, "healthz": health.json(), "seconds": time.monotonic() - started
}))
"""


def test_a_redis_that_accepts_but_never_answers_fails_a_login_within_a_second(tmp_path):
    with socket.socket() as stalled:  # the kernel completes the handshake; nobody reads
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(8)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))},
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "CACHE_URL": f"redis://127.0.0.1:{stalled.getsockname()[1]}/0",
            "ALLOWED_HOSTS": "testserver",
        }
        result = subprocess.run(
            [sys.executable, "-c", STALLED_REDIS_SCRIPT],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    answer = json.loads(result.stdout.splitlines()[-1])

    assert answer["login"] == 503
    assert answer["healthz"]["cache"] == "down"
    assert answer["seconds"] < 4  # a second for each (redis-py alone waited 5 for each)


# --- Request bodies: chunked, and larger than the API accepts ------------------------

LIMIT = 1024 * 1024  # DATA_UPLOAD_MAX_MEMORY_SIZE's default


def chunked(body: bytes, size: int = 1000):
    """`body` as http.client sends an iterable: Transfer-Encoding chunked, no length."""
    return (body[start : start + size] for start in range(0, len(body), size))


def send(connection, method, path, body, token, content_length=True):
    """(status, headers, parsed body) of one request on `connection`, kept open."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if content_length:
        connection.request(method, path, body=body, headers=headers)
    else:
        connection.request(method, path, body=chunked(body), headers=headers, encode_chunked=True)
    response = connection.getresponse()
    return response.status, response, json.loads(response.read())


def test_a_chunked_body_is_refused_411_never_taken_for_an_empty_one(site):
    """A chunked heartbeat was a 200 whatever its taskIds (Django saw no body), and a
    chunked task a misleading "field is required"."""
    node, admin = login(site, NODE_EMAIL)["token"], login(site, ADMIN_EMAIL)["token"]
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=15)
    try:
        for path, body, token in [
            ("/api/nodes/heartbeat", {"taskIds": "not-a-list"}, node),
            ("/api/tasks", {"taskName": "chunked", "taskDetails": "x" * 5000}, admin),
        ]:
            status, response, answer = send(
                connection, "POST", path, json.dumps(body).encode(), token, False
            )
            assert status == 411, answer
            assert answer.keys() == {"title", "message"}
            assert "Content-Length" in answer["message"]
            assert response.getheader("Connection") == "close"  # the body is left unread
    finally:
        connection.close()
    assert json.loads(site.get("/api/tasks/all", token=admin)[2])["tasks"] == []


SIZES = {
    "413": (b'{"taskIds": ["' + b"a" * LIMIT + b'"]}', 413),
    "401 with a body larger than gunicorn drains": (b" " * 200_000 + b"{}", 401),
}


@pytest.mark.parametrize("case", SIZES.keys())
def test_after_a_refused_body_the_next_request_on_the_connection_is_answered(site, case):
    """Either the body is drained and the connection kept, or the answer says it closes
    (http.client then reconnects): never a connection dropped after promising to keep it."""
    body, refused = SIZES[case]
    node = login(site, NODE_EMAIL)["token"]
    token = "not-a-token" if refused == 401 else node
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=15)
    try:
        status, response, answer = send(connection, "POST", "/api/nodes/heartbeat", body, token)
        assert status == refused, answer
        kept = response.getheader("Connection", "").lower() != "close"

        status, _, answer = send(connection, "POST", "/api/nodes/heartbeat", b"{}", node)
    finally:
        connection.close()

    assert status == 200, (kept, answer)


def test_a_bulk_create_may_send_more_than_a_mebibyte_through_gunicorn(site):
    """Only POST /api/tasks/bulk reads past DATA_UPLOAD_MAX_MEMORY_SIZE (up to
    BULK_MAX_BODY_BYTES): read from gunicorn's stream, not Django's checked body."""
    admin = login(site, ADMIN_EMAIL)["token"]
    node_id = login(site, NODE_EMAIL)["userDetails"]["id"]
    deadline = "2999-01-01T00:00:00Z"
    tasks = [
        {"taskName": f"big {i}", "taskDetails": "x", "assignedNode": node_id,
         "lockedAt": deadline, "payload": {"blob": "y" * 2048}}
        for i in range(1000)
    ]  # fmt: skip

    status, _, answer = site.request("POST", "/api/tasks/bulk", {"tasks": tasks}, admin)
    assert status == 201, answer[:300]
    names = [task["taskName"] for task in json.loads(answer)["tasks"]]
    assert names == [task["taskName"] for task in tasks]

    one = {**tasks[0], "payload": {"blob": "y" * LIMIT}}
    status, _, answer = site.request("POST", "/api/tasks", one, admin)
    assert status == 413, answer[:300]
