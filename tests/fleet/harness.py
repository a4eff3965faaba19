"""A fleet of real worker processes (the installed `taskmgmt-worker`, worker/) and the
checks on what they did.

The server is the test's live server; the workers reach it over HTTP like any node.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

from accounts.models import Role, User
from tasks.models import FailureCause, HistoryAction, Task, TaskHistory, TaskStatus
from tests.redis_server import redis_cache, redis_database

# Every fleet test: its own marker (left out unless `-m fleet`), real transactions, and
# MariaDB, since a live server with concurrent writers needs it.
FLEET_MARKS = [
    pytest.mark.fleet,
    pytest.mark.django_db(transaction=True),
    pytest.mark.mysql,
    pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="a live server with concurrent writers needs MariaDB: SQLite has one writer",
    ),
]

# The console script `pip install ./worker` (make setup) put beside this Python.
WORKER = Path(sys.executable).with_name("taskmgmt-worker")
PENDING, IN_PROGRESS = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
COMPLETED, FAILED = TaskStatus.COMPLETED, TaskStatus.FAILED
IDLE_SECONDS = 0.2  # a worker's pause when there is nothing to claim


@contextmanager
def fleet_settings_for(settings, *, redis_db: int, heartbeat_seconds, down_after, **overrides):
    """The settings every fleet test's live server runs on: beats in a Redis database of
    its own (as deployed: waiting there, flushed in batches), its liveness timing, and
    rate limits far above what workers polling every 0.2 s and logging in again after a
    restart send (the production ones would make them wait a minute). `overrides`:
    the test's own settings (FAILOVER, FAILOVER_MAX_DOWN_SHARE, ...)."""
    with redis_database(redis_db) as url:
        settings.CACHES = redis_cache(url)
        settings.NODE_HEARTBEAT_SECONDS = heartbeat_seconds
        settings.NODE_DOWN_AFTER = down_after
        settings.RATELIMIT_API = "100000/m"
        settings.RATELIMIT_LOGIN_USER = settings.RATELIMIT_LOGIN_IP = "10000/m"
        for name, value in overrides.items():
            setattr(settings, name, value)
        yield settings


def wait_for(condition, timeout: float, what: str, poll: float = 0.05):
    """`condition()`'s first truthy value, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(poll)


class WorkerProcess:
    """One `taskmgmt-worker` logged in as `node`, its JSON lines kept in a file."""

    def __init__(
        self, node, password: str, server: str, log_path: Path, work_seconds: float, *args, **env
    ):
        self.node, self.log_path = node, log_path
        self.log = log_path.open("a")
        self.process = subprocess.Popen(
            [
                str(WORKER), "--server", server, "--email", node.email,
                "--work-seconds", str(work_seconds), "--idle-seconds", str(IDLE_SECONDS), *args,
            ],
            env={**os.environ, "TASKMGMT_PASSWORD": password, **env},
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def events(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self.log.close()

    def exit_status(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.log.close()


class Fleet:
    def __init__(self, server: str, log_dir: Path, password: str, work_seconds: float):
        self.server, self.log_dir = server, log_dir
        self.password, self.work_seconds = password, work_seconds
        self.workers: dict = {}  # node id -> its live WorkerProcess
        self.replaced: list[WorkerProcess] = []  # a node's earlier process, when it has two
        self.killed: list[WorkerProcess] = []
        self.started = 0

    def start(self, node, *args, **env) -> WorkerProcess:
        """A worker for `node`; `args` go to its command line, `env` to its environment."""
        self.started += 1
        log_path = self.log_dir / f"worker-{self.started}-{node.email}.log"
        worker = WorkerProcess(
            node, self.password, self.server, log_path, self.work_seconds, *args, **env
        )
        if node.pk in self.workers:  # a second process for the node: still ours to end
            self.replaced.append(self.workers[node.pk])
        self.workers[node.pk] = worker
        return worker

    def kill(self, node) -> None:
        worker = self.workers.pop(node.pk)
        worker.kill()
        self.killed.append(worker)

    def stop(self, timeout: float = 20) -> dict:
        """SIGTERM to every worker at once: {email: exit status}."""
        workers, self.workers = list(self.workers.values()), {}
        for worker in workers:
            worker.signal(signal.SIGTERM)
        return {worker.node.email: worker.exit_status(timeout) for worker in workers}

    def abort(self) -> None:
        """SIGKILL to every worker still running (a stopped one too: SIGKILL ends it)."""
        for worker in [*self.workers.values(), *self.replaced]:
            worker.kill()
        self.workers, self.replaced = {}, []

    def killed_while_working_on(self) -> set[str]:
        """The task each killed worker was last working on: its report may have reached
        the server, and been applied, as it died."""
        last = [worker.events()[-1] for worker in self.killed if worker.events()]
        return {event["task"] for event in last if event["event"] == "working"}

    def completions_reported(self) -> Counter:
        """How many times the workers, killed ones included, logged each task completed."""
        return Counter(
            json.loads(line)["task"]
            for path in self.log_dir.glob("worker-*.log")
            for line in path.read_text().splitlines()
            if line.startswith('{"') and '"event": "completed"' in line
        )

    def logs(self) -> str:
        """Every worker's log, for a failing assertion's message."""
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-4000:]}"
            for path in sorted(self.log_dir.glob("worker-*.log"))
        )


def in_progress_of(node) -> list:
    return list(
        Task.objects.filter(assigned_node=node, status=IN_PROGRESS).values_list("pk", flat=True)
    )


def open_task_ids_of(node) -> set:
    return set(
        Task.objects.filter(assigned_node=node, status__in=(PENDING, IN_PROGRESS)).values_list(
            "pk", flat=True
        )
    )


def history_of(task, action) -> list[tuple]:
    rows = TaskHistory.objects.filter(task=task, action=action).order_by("id")
    return list(rows.values_list("from_value", "to_value", "performed_by", "cause"))


# The only status changes a fleet makes: nodes start and complete tasks; failover fails a
# lost node's task in progress (the system, cause node_lost) and gives it out again.
FLEET_STEPS = {
    (PENDING, IN_PROGRESS): "node",
    (IN_PROGRESS, COMPLETED): "node",
    (IN_PROGRESS, FAILED): "system",
    (FAILED, PENDING): "system",
}


def assert_every_history_consistent(tasks) -> None:
    """Each task's status changes chain from `pending` to its status through fleet steps,
    with exactly one `in_progress -> completed`, by the node it ended with; its
    assignee changes chain from its first node to that node, each by the system
    (failover) or, for a drain's moves (cause drained), by the admin who drained."""
    admins = set(User.objects.filter(role=Role.ADMIN).values_list("pk", flat=True))
    for task in tasks:
        changes = history_of(task, HistoryAction.STATUS_CHANGE)
        state = PENDING
        for from_value, to_value, performed_by, cause in changes:
            step = (from_value, to_value)
            assert from_value == state, f"task {task.pk}: {changes} breaks the chain at {state}"
            assert step in FLEET_STEPS, f"task {task.pk}: {changes}"
            assert (performed_by is None) == (FLEET_STEPS[step] == "system"), changes
            if to_value == FAILED:
                assert cause == FailureCause.NODE_LOST, f"task {task.pk}: {changes}"
            state = to_value
        assert state == task.status, f"task {task.pk} is {task.status} but history says {state}"
        completions = [row for row in changes if row[:2] == (IN_PROGRESS, COMPLETED)]
        if task.status == COMPLETED:
            assert len(completions) == 1, f"task {task.pk} completed twice: {changes}"
            assert completions[0][2] == task.assigned_node_id, f"task {task.pk}: {changes}"
        else:
            assert completions == [], f"task {task.pk}: {changes}"

        (initial,) = history_of(task, HistoryAction.INITIAL_ASSIGN)
        node = initial[1]
        for from_value, to_value, performed_by, cause in history_of(
            task, HistoryAction.ASSIGNEE_CHANGE
        ):
            assert from_value == node, f"task {task.pk} moved oddly"
            by_drain = cause == FailureCause.DRAINED and performed_by in admins
            assert performed_by is None or by_drain, f"task {task.pk} moved by {performed_by}"
            node = to_value
        assert node == str(task.assigned_node_id), f"task {task.pk}: assignee history"
