#!/usr/bin/env python3
"""A taskmgmt worker node: claim a task, work on it, report, repeat (README, Running a worker).

Standard library only, so it runs wherever Python 3.11 does:

    python examples/worker.py --server http://127.0.0.1:8000 \\
        --email node1@example.com --password demo-node-pass

It logs in as a node, beats on a background thread as often as the server asks
(`heartbeatSeconds`), and loops: `POST /api/tasks/claim`, run the work function,
`PUT /api/tasks/shift-status` to `completed` (or `failed` with the exception as
the reason). A task the server takes away (its `revokedTaskIds` in a heartbeat
answer, or a 403 on shift-status) is dropped, never reported. Tokens are refreshed
before they expire; 429 and 5xx answers and lost connections are retried after
Retry-After (or a growing pause), a heartbeat at least every `heartbeatSeconds`.
SIGTERM or Ctrl-C: finish the task at hand, report it, then exit 0; a second one
exits at once.

Plug in real work with `--work package.module:function`: it is called as
`function(task, cancelled)` with the task's JSON object and a threading.Event set
when the task is taken away or the worker must stop now; returning means done,
raising means failed.
"""

import argparse
import base64
import importlib
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

# Answers that mean "not done, try the same request again later" (a 500 too: ours to fix,
# and every request this worker sends is safe to repeat).
RETRYABLE = {429, 500, 502, 503, 504}
MAX_PAUSE = 30.0  # seconds: the longest wait between retries without a Retry-After
REASON_LIMIT = 500  # characters the server keeps of a failure reason (FAILURE_REASON_MAX_LENGTH)


def log(event: str, **fields) -> None:
    """One JSON line per event on stdout, for a supervisor to collect (and tests to read)."""
    print(json.dumps({"time": time.time(), "event": event, **fields}), flush=True)


class Stopping(Exception):
    """The worker was told to stop while it waited to retry."""


class LoginRefused(Exception):
    pass


class Api:
    """The node's session with the server: tokens, retries, one lock for the token refresh."""

    def __init__(self, server: str, email: str, password: str, halt: threading.Event):
        self.server = server.rstrip("/")
        self.email, self.password = email, password
        self.halt = halt  # ends every retry
        self.token_lock = threading.Lock()
        self.access = self.refresh_token = None
        self.access_expires = 0.0

    # --- HTTP ------------------------------------------------------------------

    def send(self, method: str, path: str, body=None, token=None):
        """(status, headers, JSON body or None) of one request; network errors raise OSError."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.server + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, answer_headers, content = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer_headers, content = error.code, error.headers, error.read()
        try:
            payload = json.loads(content) if content else None
        except ValueError:
            payload = None
        return status, answer_headers, payload

    def call(
        self, method: str, path: str, body=None, *, authenticated=True, abort=None, max_pause=None
    ):
        """The answer to a request, retried through rate limits, outages and lost connections
        until `abort` (default: the halt) is set, at most `max_pause` seconds apart if given.

        Every request this worker repeats is safe to repeat: a claim taken but whose
        answer was lost is found again by `Worker.resume()`, and shift-status to the
        status a task already has is a no-op.
        """
        abort = abort or self.halt
        attempt = 0
        while True:
            try:
                token = self.token() if authenticated else None
                status, headers, payload = self.send(method, path, body, token)
            except OSError as error:
                status, headers, payload = None, {}, {"message": str(error)}
            attempt += 1
            if status == 401 and authenticated and attempt == 1:
                self.access_expires = 0.0  # revoked or expired early: get a new one, once
                continue
            if status is not None and status not in RETRYABLE:
                return status, payload or {}
            pause = retry_after(headers) or min(MAX_PAUSE, 0.5 * 2 ** min(attempt, 6))
            pause *= random.uniform(1.0, 1.2)
            if max_pause is not None:
                pause = min(pause, max_pause)
            log("retry", method=method, path=path, status=status, pause=round(pause, 2))
            if abort.wait(pause):
                raise Stopping()

    # --- Tokens ----------------------------------------------------------------

    def token(self) -> str:
        """A valid access token: refreshed once a fifth of its life is left, or logged in anew."""
        with self.token_lock:
            if time.time() < self.access_expires:
                return self.access
            status = None
            if self.refresh_token:
                status, payload = self.call(
                    "POST", "/api/auth/refresh", {"refresh": self.refresh_token},
                    authenticated=False,
                )  # fmt: skip
            if status != 200:
                status, payload = self.call(
                    "POST", "/api/auth/login",
                    {"username": self.email, "password": self.password}, authenticated=False,
                )  # fmt: skip
                if status != 200:
                    raise LoginRefused(f"login as {self.email}: {status} {payload.get('message')}")
                log("logged_in", email=self.email, node=payload["userDetails"]["id"])
            else:
                log("refreshed")
            self.access, self.refresh_token = payload["token"], payload["refresh"]
            claims = jwt_claims(self.access)
            lifetime = claims["exp"] - claims["iat"]
            # By our clock; the fifth left covers a skew of that much with the server's.
            self.access_expires = claims["exp"] - lifetime / 5
            return self.access


def retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers else None
    return float(value) if value and value.isdigit() else None


def jwt_claims(token: str) -> dict:
    """The token's payload, read (not verified: the server does that) for its expiry."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Heartbeat(threading.Thread):
    """Beats every `heartbeatSeconds` the server names, and says which task it works on."""

    def __init__(self, api: Api, finished: threading.Event):
        super().__init__(name="heartbeat", daemon=True)
        self.api, self.finished = api, finished
        self.interval = 1.0  # until the first answer names the server's
        self.lock = threading.Lock()
        self.current: tuple[str, threading.Event] | None = None

    def working_on(self, task_id: str | None, cancelled: threading.Event | None = None):
        with self.lock:
            self.current = (task_id, cancelled) if task_id else None

    def cancel_current(self) -> None:
        with self.lock:
            if self.current:
                self.current[1].set()

    def beat(self) -> None:
        with self.lock:
            current = self.current
        body = {"taskIds": [current[0]]} if current else {}
        # Retried every interval whatever the backoff: after a server outage the first
        # beat must land before the server counts this node's silence as death.
        status, payload = self.api.call(
            "POST", "/api/nodes/heartbeat", body, abort=self.finished, max_pause=self.interval
        )
        if status != 200:
            log("heartbeat_refused", status=status, message=payload.get("message"))
            return
        self.interval = max(0.2, float(payload.get("heartbeatSeconds", self.interval)))
        if current and current[0] in payload.get("revokedTaskIds", []):
            log("revoked", task=current[0])
            current[1].set()

    def run(self) -> None:
        # Beats go on while a stopping worker finishes its task: it must not look dead.
        while not self.finished.is_set():
            try:
                self.beat()
            except Stopping:
                return
            except Exception as error:  # a beat lost is not a reason to stop beating
                log("heartbeat_error", error=repr(error))
            self.finished.wait(self.interval)


def sleep_work(seconds: float):
    """The default work: wait `seconds`, or less if the task is taken away."""

    def work(task: dict, cancelled: threading.Event) -> None:
        cancelled.wait(seconds)

    return work


class Worker:
    """One worker per node account: it resumes whatever is in progress for its node."""

    def __init__(self, api: Api, work, *, idle_seconds: float, max_tasks: int | None):
        self.api, self.work = api, work
        self.idle_seconds, self.max_tasks = idle_seconds, max_tasks
        self.stop = threading.Event()  # the first signal: no new task
        self.halt = api.halt  # the second: drop the task at hand too
        self.finished = threading.Event()
        self.heartbeat = Heartbeat(api, self.finished)
        self.done = 0
        self.refused: set[str] = set()  # reports the server refused: not to be resumed

    def signalled(self) -> None:
        if self.stop.is_set():
            self.halt.set()
            self.heartbeat.cancel_current()
        self.stop.set()

    def run(self) -> None:
        self.heartbeat.start()
        try:
            while not self.stop.is_set() and self.done != self.max_tasks:
                status, payload = self.api.call("POST", "/api/tasks/claim", abort=self.stop)
                if status == 200:
                    self.perform(payload["task"])
                    continue
                if status == 204:
                    # Nothing pending: anything of ours still in progress is orphaned.
                    self.resume()
                else:
                    log("claim_refused", status=status, message=payload.get("message"))
                self.stop.wait(self.idle_seconds)
        except Stopping:
            pass
        finally:
            self.finished.set()
        log("stopped", done=self.done)

    def resume(self) -> None:
        """Tasks in progress for this node that no one here works on (a claim whose answer
        was lost, a previous run killed mid-task): claim only offers pending ones."""
        status, payload = self.api.call("GET", "/api/tasks/filter/in_progress", abort=self.stop)
        for task in payload["tasks"] if status == 200 else []:
            if self.stop.is_set() or self.done == self.max_tasks:
                return
            if task["id"] in self.refused:
                continue  # past its deadline: the sweep will fail it
            log("resumed", task=task["id"])
            self.perform(task)

    def perform(self, task: dict) -> None:
        cancelled = threading.Event()
        self.heartbeat.working_on(task["id"], cancelled)
        log("working", task=task["id"])
        try:
            self.work(task, cancelled)
            outcome = {"taskStatus": "completed"}
        except Exception as error:
            outcome = {"taskStatus": "failed", "reason": f"{type(error).__name__}: {error}"}
            outcome["reason"] = outcome["reason"][:REASON_LIMIT]
        finally:
            self.heartbeat.working_on(None)
        if cancelled.is_set():
            log("dropped", task=task["id"])  # taken away, or the worker halts: say nothing
            return
        status, payload = self.api.call(
            "PUT", "/api/tasks/shift-status", {"taskId": task["id"], **outcome}
        )
        if status == 200:
            self.done += 1
            log(outcome["taskStatus"], task=task["id"])
        else:  # 403: taken away meanwhile; 400/409: failed by the sweep or past its deadline
            self.refused.add(task["id"])
            log("report_refused", task=task["id"], status=status, message=payload.get("message"))


def load_work(spec: str | None, work_seconds: float):
    if not spec:
        return sleep_work(work_seconds)
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    env = os.environ.get
    parser.add_argument("--server", default=env("TASKMGMT_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--email", default=env("TASKMGMT_EMAIL"), help="or TASKMGMT_EMAIL")
    parser.add_argument(
        "--password", default=env("TASKMGMT_PASSWORD"), help="or TASKMGMT_PASSWORD (safer)"
    )
    parser.add_argument(
        "--work", default=env("TASKMGMT_WORK"), help="module:function doing a task's work"
    )
    parser.add_argument(
        "--work-seconds", type=float, default=float(env("TASKMGMT_WORK_SECONDS", "2")),
        help="how long the default work sleeps per task (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--idle-seconds", type=float, default=float(env("TASKMGMT_IDLE_SECONDS", "2")),
        help="pause before claiming again when there is nothing to claim (default 2)",
    )  # fmt: skip
    parser.add_argument("--max-tasks", type=int, default=None, help="exit after this many")
    args = parser.parse_args(argv)
    if not args.email or not args.password:
        parser.error("--email and --password (or TASKMGMT_EMAIL, TASKMGMT_PASSWORD) are needed")

    api = Api(args.server, args.email, args.password, threading.Event())
    worker = Worker(
        api,
        load_work(args.work, args.work_seconds),
        idle_seconds=args.idle_seconds,
        max_tasks=args.max_tasks,
    )

    def on_signal(number, frame):
        log("stopping", signal=signal.Signals(number).name, now=worker.stop.is_set())
        worker.signalled()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("started", server=api.server, email=args.email)
    try:
        worker.run()
    except LoginRefused as error:
        log("login_refused", error=str(error))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
