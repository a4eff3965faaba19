"""Retries against a real HTTP server that misbehaves on purpose (http.server, a thread):
heartbeats are tried again within heartbeatSeconds whatever Retry-After says."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from taskmgmt_worker.client import Api, Stopping


class Unavailable(BaseHTTPRequestHandler):
    """503 with Retry-After: 30 to everything, noting when each request came."""

    seen: list[float] = []

    def do_POST(self):
        Unavailable.seen.append(time.monotonic())
        body = json.dumps({"title": "Unavailable", "message": "down"}).encode()
        self.send_response(503)
        self.send_header("Retry-After", "30")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def unavailable():
    Unavailable.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call_until(api, seconds: float, **options):
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    with pytest.raises(Stopping):
        api.call("POST", "/api/nodes/heartbeat", {}, authenticated=False, abort=stop, **options)


def test_a_call_capped_at_the_heartbeat_interval_retries_despite_a_long_retry_after(unavailable):
    api = Api(unavailable, "node@example.com", "x", threading.Event())

    call_until(api, 2.5, max_pause=0.5)

    # 0.5 s (x1.2 jitter at most) apart, not 30: five or six tries in 2.5 s.
    assert len(Unavailable.seen) >= 4


def test_other_calls_wait_out_retry_after(unavailable):
    api = Api(unavailable, "node@example.com", "x", threading.Event())

    call_until(api, 1.5)

    assert len(Unavailable.seen) == 1


def test_a_call_may_give_up_after_a_while_instead_of_raising(unavailable):
    api = Api(unavailable, "node@example.com", "x", threading.Event())

    assert api.call("PUT", "/x", {}, authenticated=False, give_up_after=1, max_pause=0.3) == (
        None,
        {},
    )
