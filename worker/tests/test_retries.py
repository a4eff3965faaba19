"""Retries against a real HTTP server that misbehaves on purpose (http.server, a thread):
heartbeats are tried again within heartbeatSeconds whatever Retry-After says, and
whatever another thread's token refresh is waiting for."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from taskmgmt_worker.client import Api, Stopping


class Unavailable(BaseHTTPRequestHandler):
    """503 with Retry-After: 30 to everything, noting when each request came."""

    seen: list[float] = []
    status, retry_after = 503, "30"

    def do_POST(self):
        Unavailable.seen.append(time.monotonic())
        body = json.dumps({"title": "Unavailable", "message": "down"}).encode()
        self.send_response(self.status)
        self.send_header("Retry-After", self.retry_after)
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


class Waits(threading.Event):
    """An abort event that notes every wait asked of it, without waiting, and ends the
    call (as a stop would) at the `last`-th."""

    def __init__(self, last: int):
        super().__init__()
        self.last, self.asked = last, []

    def wait(self, timeout=None):
        self.asked.append(timeout)
        return len(self.asked) >= self.last


def test_a_capped_wait_stays_within_the_cap_jitter_included(unavailable):
    api = Api(unavailable, "node@example.com", "x", threading.Event())
    waits = Waits(last=20)

    with pytest.raises(Stopping):
        api.call(
            "POST", "/api/nodes/heartbeat", {}, authenticated=False, abort=waits, max_pause=0.5
        )

    assert len(waits.asked) == 20
    assert max(waits.asked) <= 0.5  # Retry-After 30 and the jitter, capped at 0.5


def test_a_heartbeat_is_not_held_up_by_another_threads_token_refresh(unavailable):
    """The server is down; the main thread's call needs a token and waits out a
    Retry-After of 30 s. A heartbeat that needs one too tries for it itself, on its own
    schedule, instead of queueing behind that wait."""
    api = Api(unavailable, "node@example.com", "x", threading.Event())
    claim = threading.Thread(target=calling, args=(api, "/api/tasks/claim", {}), daemon=True)
    claim.start()
    wait_until(lambda: len(Unavailable.seen) >= 1)  # its login try: refused, 503

    waits = Waits(last=3)
    outcome = {}
    beat = threading.Thread(
        target=calling,
        args=(api, "/api/nodes/heartbeat", outcome),
        kwargs={"abort": waits, "max_pause": 0.5},
        daemon=True,
    )
    beat.start()
    beat.join(10)  # unblocked, it ends at its third wait
    stuck = beat.is_alive()
    api.halt.set()  # ends the main thread's wait, and a stuck heartbeat's with it
    claim.join(10)
    beat.join(10)

    assert not stuck, "the heartbeat waited behind the other thread's token refresh"
    assert isinstance(outcome["error"], Stopping)
    assert waits.asked and max(waits.asked) <= 0.5
    # The heartbeat asked for a token itself before each of its waits.
    assert len(Unavailable.seen) >= 1 + len(waits.asked)


def calling(api, path, outcome, **options):
    try:
        api.call("POST", path, {}, **options)
    except Exception as error:
        outcome["error"] = error


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


class RateLimited(Unavailable):
    """429 with Retry-After: 45 (a minute's window, most of it left)."""

    status, retry_after = 429, "45"


def test_a_retry_after_longer_than_the_backoff_cap_is_waited_out():
    """The worker waited at most 30 s whatever the server asked: a rate limit's
    Retry-After of 45 s cost a request refused again."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Api(
            f"http://127.0.0.1:{server.server_address[1]}", "n@example.com", "x", threading.Event()
        )
        waits = Waits(last=1)
        with pytest.raises(Stopping):
            api.call("PUT", "/api/tasks/shift-status", {}, authenticated=False, abort=waits)
    finally:
        server.shutdown()
        server.server_close()

    assert 45 <= waits.asked[0] <= 45 * 1.2


def test_a_login_refused_by_a_rate_limit_is_not_sent_again_before_its_retry_after():
    """A fleet's restarted processes spent the login limit: each heartbeat thread asked
    again every heartbeatSeconds (under the 45 s the 429 named), 393 refused logins in
    a minute from 12 processes. The window does not open early; the heartbeat still
    never waits: it is told at once, without a request, that no token is to be had."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Unavailable.seen = []  # where every handler notes its requests
    try:
        api = Api(
            f"http://127.0.0.1:{server.server_address[1]}", "n@example.com", "x", threading.Event()
        )
        waits = Waits(last=5)
        with pytest.raises(Stopping):
            api.call("POST", "/api/nodes/heartbeat", {}, abort=waits, max_pause=0.5)
    finally:
        server.shutdown()
        server.server_close()

    assert len(waits.asked) == 5 and max(waits.asked) <= 0.5  # the beat kept its schedule
    assert len(Unavailable.seen) == 1  # one login sent, not one per try


def test_a_retry_after_a_lost_connection_logs_why(capsys):
    # Nothing listens on port 9: the log says so, not only `"status": null`.
    api = Api("http://127.0.0.1:9", "node@example.com", "x", threading.Event())
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(Stopping):
        api.call("POST", "/api/nodes/heartbeat", {}, authenticated=False, abort=stop)

    retry = json.loads(capsys.readouterr().out.splitlines()[0])
    assert retry["event"] == "retry" and retry["status"] is None
    assert "refused" in retry["error"].lower()


class CutShort(BaseHTTPRequestHandler):
    """The first answer promises a body and the connection closes before it (a host killed
    mid-answer: http.client's IncompleteRead); every later one is whole."""

    answers = 0
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        CutShort.answers += 1
        body = json.dumps({"task": {"id": "t1"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if CutShort.answers == 1:
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_answer_cut_short_is_retried_as_a_lost_connection(capsys):
    # A claim's answer cut off by a host killed mid-answer raised IncompleteRead out of
    # the worker: the process died with a traceback and its node's work stopped.
    CutShort.answers = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Api(f"http://127.0.0.1:{server.server_address[1]}", "n@example.com", "x", None)
        status, payload = api.call(
            "POST", "/api/tasks/claim", authenticated=False, abort=threading.Event(), max_pause=0.1
        )
    finally:
        server.shutdown()
        server.server_close()

    assert (status, payload, CutShort.answers) == (200, {"task": {"id": "t1"}}, 2)
    (retry,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert retry["event"] == "retry" and "IncompleteRead" in retry["error"]
