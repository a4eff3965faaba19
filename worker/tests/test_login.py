"""A refused login against a real HTTP server: asked once, however many threads need a
token, so a misconfigured worker does not spend its account's login budget twice."""

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
