"""Attempts as fencing tokens, with real worker processes (the installed
`taskmgmt-worker`) on MariaDB: a worker frozen (SIGSTOP) past failover is woken
(SIGCONT) once its task has been given back to the same node and started again by
another process there. Its stale report is refused (409), nothing changes, it leaves
the new attempt alone, and the new attempt completes, once.

Marked `fleet`: `pytest -m fleet tests/fleet/test_fencing.py`.
"""

import logging
import signal
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from nodes.models import NodeLabels
from tasks.models import FailureCause, HistoryAction, Task
from tests.factories import PASSWORD, NodeFactory, TaskFactory
from tests.fleet.harness import (
    COMPLETED,
    FAILED,
    FLEET_MARKS,
    IN_PROGRESS,
    PENDING,
    Fleet,
    fleet_settings_for,
    history_of,
    wait_for,
)

pytestmark = FLEET_MARKS

HEARTBEAT_SECONDS, DOWN_AFTER = 1, 3
REDIS_DB = 8
SWEEP_EVERY = 0.5

# Each attempt runs until the test lets it end (a file `done-<attempt>` appears),
# reporting progress every `progressSeconds` if the payload names it.
JOBS = """
import os
import pathlib
import time

def run(task, context):
    done = pathlib.Path(task["payload"]["folder"], f"done-{context.attempt}")
    every = task["payload"]["progressSeconds"]
    last = time.monotonic()
    while not done.exists():
        if context.cancelled.wait(0.05):
            raise RuntimeError("stopped")
        if every and time.monotonic() - last >= every:
            context.progress(None, "still working")
            last = time.monotonic()
    return {"attempt": context.attempt, "pid": os.getpid()}
"""


@pytest.fixture
def fleet_settings(settings):
    with fleet_settings_for(
        settings,
        redis_db=REDIS_DB,
        heartbeat_seconds=HEARTBEAT_SECONDS,
        down_after=DOWN_AFTER,
        FAILOVER="reassign",
        # One node of two down is the point here, not a fleet-wide outage to hold for.
        FAILOVER_MAX_DOWN_SHARE=1,
    ):
        yield settings


class AccessLog(logging.Handler):
    """The live server's request lines (`taskmgmt.request`): (method, path, status, user)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.requests: list[tuple] = []

    def emit(self, record):
        self.requests.append((record.method, record.path, record.status, record.user_id))


@pytest.fixture
def access_log():
    handler, logger = AccessLog(), logging.getLogger("taskmgmt.request")
    logger.addHandler(handler)
    yield handler.requests
    logger.removeHandler(handler)


def events_of(worker, name: str) -> list[dict]:
    return [event for event in worker.events() if event["event"] == name]


@pytest.mark.parametrize(
    ("woken", "report", "progress_seconds", "seen_as"),
    [
        # Its work over while it was frozen: its first report is its outcome.
        ("after its work", "/api/tasks/shift-status", None, "report_refused"),
        # Still at it: its next progress report is refused and it drops the work.
        ("mid-work", "/api/tasks/progress", 0.2, "revoked"),
    ],
)
def test_a_frozen_workers_stale_report_is_refused_while_the_new_attempt_completes(
    live_server,
    fleet_settings,
    tmp_path,
    client_for,
    admin_user,
    access_log,
    woken,
    report,
    progress_seconds,
    seen_as,
):
    # Only `gpu` matches the task's selector, so failover has nowhere to move it: it
    # fails for a human, who gives it back to the same node. `other` keeps the fleet
    # alive (with no node alive, failover leaves the work where it is).
    gpu, other = NodeFactory(name="gpu"), NodeFactory(name="other")
    NodeLabels.objects.create(node=gpu, labels={"gpu": "true"})
    task = TaskFactory(
        assigned_node=gpu,
        node_selector={"gpu": "true"},
        payload={"folder": str(tmp_path), "progressSeconds": progress_seconds},
        locked_at=timezone.now() + timedelta(hours=1),
    )
    (tmp_path / "jobs.py").write_text(JOBS)
    fleet = Fleet(live_server.url, tmp_path, PASSWORD, work_seconds=0)
    work = ("--work", "jobs:run")
    env = {"PYTHONPATH": str(tmp_path)}
    node_id = str(gpu.pk)
    try:
        fleet.start(other, *work, **env)
        old = fleet.start(gpu, *work, **env)
        wait_for(
            lambda: [e for e in events_of(old, "working") if e["attempt"] == 1],
            30,
            f"the first attempt never started\n{fleet.logs()}",
        )
        old.signal(signal.SIGSTOP)
        if woken == "after its work":
            (tmp_path / "done-1").touch()  # over, but it cannot say so

        # The sweep, as cron runs it, until failover has failed the frozen node's task.
        deadline = time.monotonic() + DOWN_AFTER + 30
        while not Task.objects.filter(pk=task.pk, status=FAILED).exists():
            assert time.monotonic() < deadline, f"the task never failed over\n{fleet.logs()}"
            call_command("collect_failed", verbosity=0)
            time.sleep(SWEEP_EVERY)
        failed = Task.objects.get(pk=task.pk)
        assert (failed.failure_cause, failed.assigned_node_id) == (FailureCause.NODE_LOST, gpu.pk)

        # Back to the same node, where a new process (same account) starts attempt 2.
        assigned = client_for(admin_user).put(
            "/api/tasks/assign", {"taskId": str(task.pk), "nodeId": node_id}
        )
        assert assigned.status_code == 200, assigned.content
        new = fleet.start(gpu, *work, **env)
        wait_for(
            lambda: [e for e in events_of(new, "working") if e["attempt"] == 2],
            30,
            f"the second attempt never started\n{fleet.logs()}",
        )

        # Woken, the old worker reports on attempt 1: refused, and nothing changes.
        seen_before = len(access_log)
        old.signal(signal.SIGCONT)
        (refused,) = wait_for(
            lambda: events_of(old, seen_as),
            30,
            f"the woken worker reported nothing\n{fleet.logs()}",
        )
        assert (refused["task"], refused["status"]) == (str(task.pk), 409), refused
        assert refused["message"].startswith("stale attempt"), refused
        running = Task.objects.get(pk=task.pk)
        assert (running.status, running.attempts, running.result) == (IN_PROGRESS, 2, None)
        # Then, with nothing to claim, it looks for work of its node in progress (only
        # it does: the new process is busy) and finds only the new attempt: not its own.
        wait_for(
            lambda: (
                ("GET", "/api/tasks/filter/in_progress", 200, node_id) in access_log[seen_before:]
            ),
            30,
            f"the woken worker never looked for work again\n{fleet.logs()}",
        )

        (tmp_path / "done-2").touch()
        wait_for(
            lambda: Task.objects.filter(pk=task.pk, status=COMPLETED).exists(),
            30,
            f"the second attempt never completed\n{fleet.logs()}",
            poll=0.2,
        )
        old.signal(signal.SIGTERM)  # `new` took its place in the fleet's map of workers
        assert old.exit_status(timeout=20) == 0, fleet.logs()
        assert set(fleet.stop().values()) == {0}, fleet.logs()
    finally:
        fleet.abort()

    # The server refused exactly one report, the old worker's, as stale.
    assert [r for r in access_log if r[2] == 409] == [("PUT", report, 409, node_id)]
    done = Task.objects.get(pk=task.pk)
    assert (done.status, done.assigned_node_id, done.attempts) == (COMPLETED, gpu.pk, 2)
    assert done.result == {"attempt": 2, "pid": new.process.pid}
    # Done once, by the new attempt; the old worker never took up the new attempt.
    assert [e["task"] for e in events_of(new, "completed")] == [str(task.pk)]
    assert [e["attempt"] for e in events_of(old, "working")] == [1], fleet.logs()
    assert events_of(old, "completed") == []
    # One chain of allowed steps: each start and the completion by the node, the
    # failure by the system (node_lost), the reassignment by the admin.
    changes = history_of(done, HistoryAction.STATUS_CHANGE)
    assert [row[:3] for row in changes] == [
        (PENDING, IN_PROGRESS, gpu.pk),
        (IN_PROGRESS, FAILED, None),
        (FAILED, PENDING, admin_user.pk),
        (PENDING, IN_PROGRESS, gpu.pk),
        (IN_PROGRESS, COMPLETED, gpu.pk),
    ], changes
    assert changes[1][3] == FailureCause.NODE_LOST
