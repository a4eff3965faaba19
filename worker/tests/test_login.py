"""A refused login against a real HTTP server: asked once, however many threads need a
token, so a misconfigured worker does not spend its account's login budget twice."""

import base64
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from taskmgmt_worker.client import Api, LoginRefused, TokenUnavailable
from taskmgmt_worker.worker import Worker


class Refusing(BaseHTTPRequestHandler):
    logins = 0

    def do_POST(self):
        if self.path == "/api/auth/login":
            Refusing.logins += 1
        body = json.dumps({"title": "Unauthorized", "message": "wrong password"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler):
    """A real HTTP server on 127.0.0.1 answering with `handler`: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def refusing():
    Refusing.logins = 0
    with serving(Refusing) as url:
        yield url


def test_a_refused_login_is_tried_once_and_reported_once(refusing, capsys):
    api = Api(refusing, "node@example.com", "wrong", threading.Event())
    worker = Worker(api, lambda task, context: None, idle_seconds=0.1, max_tasks=None)

    with pytest.raises(LoginRefused):
        worker.run()
    worker.heartbeat.join(5)

    assert Refusing.logins == 1
    assert not worker.heartbeat.is_alive()
    assert "heartbeat_error" not in capsys.readouterr().out


def test_an_account_that_is_not_a_node_is_refused_at_login(monkeypatch):
    # An admin's login succeeds, but its claims and beats are 403 for ever: the worker
    # logged claim_refused and heartbeat_refused every second and never exited.
    api = Api("http://127.0.0.1:9", "admin@example.com", "x", threading.Event())
    header = {"alg": "HS256"}
    claims = {"iat": 0, "exp": 4_000_000_000}
    token = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in (header, claims, {})
    )
    details = {"id": "a1", "email": "admin@example.com", "role": "admin"}
    answer = {"token": token, "refresh": token, "userDetails": details}
    monkeypatch.setattr(api, "send", lambda *args: (200, {}, answer))

    with pytest.raises(LoginRefused, match="not a worker node"):
        api.token()
    with pytest.raises(LoginRefused):  # remembered: not tried again
        api.token()


class Portal(BaseHTTPRequestHandler):
    """A proxy or captive portal between the worker and the server: 200, a page, no token."""

    def do_POST(self):
        body = b"<html><body>Please sign in to the network</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def portal():
    with serving(Portal) as url:
        yield url


def test_a_login_answered_200_without_a_token_is_retried_not_a_crash(portal, capsys):
    # It was a KeyError out of the worker's main loop (a traceback); now it is an
    # outage: retried with a backoff, each retry naming what was wrong.
    api = Api(portal, "node@example.com", "x", threading.Event())

    status, payload = api.call("POST", "/api/tasks/claim", {}, give_up_after=1.5)

    assert (status, payload) == (None, {})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    retries = [line for line in lines if line["event"] == "retry"]
    assert retries
    assert retries[0]["error"] == "/api/auth/login: 200 without a token"
    assert api.access is None and api.refused is None


@pytest.mark.parametrize(
    "answer",
    [
        {"token": "not-a-jwt", "refresh": "r"},
        {"token": "a.!!!.c", "refresh": "r"},
        {"refresh": "r"},
        {"token": "a.e30.c", "refresh": "r"},  # claims {} : no exp
        {"token": "x", "refresh": "r", "userDetails": "node"},
    ],
)
def test_a_malformed_200_to_a_login_is_token_unavailable(monkeypatch, answer):
    api = Api("http://127.0.0.1:9", "node@example.com", "x", threading.Event())
    monkeypatch.setattr(api, "send", lambda *args: (200, {}, answer))

    with pytest.raises(TokenUnavailable, match="200 without a token"):
        api.token()
    assert api.access is None and api.refresh_token is None


def node_token() -> str:
    header, claims = {"alg": "HS256"}, {"iat": 0, "exp": 4_000_000_000}
    return ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in (header, claims, {})
    )


class Emptied(BaseHTTPRequestHandler):
    """Logs a node in, then answers 200 `{}` to everything but every other claim (204,
    so the worker lists its tasks in progress): a proxy between the worker and the
    server answering with a page of its own for the API's paths."""

    claims = 0

    def answer(self):
        body, status = {}, 200
        if self.path == "/api/auth/login":
            details = {"id": "n1", "email": "node@example.com", "role": "node"}
            body = {"token": node_token(), "refresh": node_token(), "userDetails": details}
        if self.path == "/api/tasks/claim":
            Emptied.claims += 1
            status = 204 if Emptied.claims % 2 else 200
        data = json.dumps(body).encode() if status == 200 else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args):
        pass


def test_a_claim_answered_200_without_a_task_is_refused_not_a_crash(tmp_path, capsys):
    # `payload["task"]` was a KeyError out of the worker's main loop, as was
    # `payload["tasks"]` in the list of its tasks in progress read after a 204.
    from taskmgmt_worker.locks import TaskLocks

    with serving(Emptied) as url:
        api = Api(url, "node@example.com", "x", threading.Event())
        worker = Worker(
            api, lambda task, context: None, idle_seconds=0.05, max_tasks=None,
            locks=TaskLocks(tmp_path),
        )  # fmt: skip
        threading.Timer(1.0, worker.signalled).start()
        worker.run()  # returns once signalled, having polled ~20 times
        worker.heartbeat.join(5)

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    refused = [e for e in events if e["event"] == "claim_refused"]
    assert refused and (refused[0]["status"], refused[0]["message"]) == (
        200,
        "no task in the answer",
    )
    assert events[-1]["event"] == "stopped" and events[-1]["done"] == 0
