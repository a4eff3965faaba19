"""A refused login against a real HTTP server: asked once, however many threads need a
token, so a misconfigured worker does not spend its account's login budget twice."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from taskmgmt_worker.client import Api, LoginRefused
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


@pytest.fixture
def refusing():
    Refusing.logins = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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
