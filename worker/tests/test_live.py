"""The installed `taskmgmt-worker` as a real process against a live taskmgmt server:
the work function gets the payload and the last checkpoint, reports progress, and its
return value (or its exception) is what the API shows."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.services import user_deactivate
from tasks.models import FailureCause, Task, TaskStatus
from tasks.services import task_cancel
from tests.factories import PASSWORD, NodeFactory, TaskFactory

# `process`: they run the worker's console script as a process of its own.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

WORKER = Path(sys.executable).with_name("taskmgmt-worker")  # the console script pip installed

JOBS = """
import json
import os
import time

def count(task, context):
    rows = task["payload"]["rows"]
    start = (task["checkpoint"] or {}).get("row", 0)
    for row in range(start, rows):
        context.progress(100 * (row + 1) / rows, f"row {row + 1}", {"row": row + 1})
    return {"rows": rows, "from": start, "attempt": context.attempt, "echo": task["payload"]}

def huge(task, context):
    return {"blob": "x" * 1_100_000}  # over the server's 1 MiB body limit, as JSON

def broken(task, context):
    context.progress(10, "starting")
    raise KeyError("column " + task["payload"]["column"])

# The long-running works: each says it started (a file), then waits as its name says.

def away(task, context):  # until told to stop, then returns all the same
    open("started", "w").close()
    context.cancelled.wait(30)
    return {"late": True}

def slow(task, context):  # until told to stop, then stops
    open("started", "w").close()
    if context.cancelled.wait(30):
        raise RuntimeError("cancelled")  # stopped: the worker acknowledges
    return {"finished": True}

def gated(task, context):  # for the file `go`, deaf to a stop
    open("started", "w").close()
    while not os.path.exists("go"):
        time.sleep(0.05)
    return {"done": task["id"]}

def watching(task, context):  # for the file `go`, or until told to stop
    open("started", "w").close()
    while not os.path.exists("go"):
        if context.cancelled.wait(0.05):
            raise RuntimeError("stopped")
    return {"done": task["id"]}
"""


@pytest.fixture(autouse=True)
def _server(settings):
    settings.NODE_HEARTBEAT_SECONDS = 1
    settings.RATELIMIT_API = "100000/m"
    settings.RATELIMIT_LOGIN_USER = settings.RATELIMIT_LOGIN_IP = "10000/m"


def run_worker(live_server, node, tmp_path, work: str) -> list[dict]:
    """One task's worth of the worker (`--max-tasks 1`), its JSON lines."""
    (tmp_path / "jobs.py").write_text(JOBS)
    done = subprocess.run(
        [
            str(WORKER), "--server", live_server.url, "--email", node.email,
            "--work", f"jobs:{work}", "--max-tasks", "1", "--idle-seconds", "0.2",
        ],
        env={**os.environ, "TASKMGMT_PASSWORD": PASSWORD},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_the_worker_resumes_from_the_checkpoint_and_its_return_value_is_the_result(
    live_server, tmp_path
):
    node = NodeFactory()
    payload = {"rows": 5, "note": "ünïcode"}
    task = TaskFactory(
        assigned_node=node,
        payload=payload,
        checkpoint={"row": 2},  # left by an earlier attempt, on another node perhaps
        attempts=1,
        locked_at=timezone.now() + timedelta(hours=1),
    )

    events = run_worker(live_server, node, tmp_path, "count")

    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED, events
    assert task.result == {"rows": 5, "from": 2, "attempt": 2, "echo": payload}
    assert (task.progress_percent, task.progress_message) == (100.0, "row 5")
    assert task.checkpoint == {"row": 5}
    assert [event["event"] for event in events][-2:] == ["completed", "stopped"]


def test_a_raising_work_function_fails_the_task_with_reason_and_traceback(live_server, tmp_path):
    node = NodeFactory()
    task = TaskFactory(assigned_node=node, payload={"column": "price"})

    run_worker(live_server, node, tmp_path, "broken")

    task.refresh_from_db()
    assert (task.status, task.failure_cause) == (TaskStatus.FAILED, FailureCause.NODE_REPORTED)
    assert task.failure_reason == "KeyError: 'column price'"
    assert task.result["error"] == "KeyError"
    assert "in broken" in task.result["traceback"]
    assert task.progress_message == "starting"


def test_a_result_over_the_servers_body_limit_fails_the_task_with_why(live_server, tmp_path):
    # The server refuses the report's body (413) before it reads its result: the task
    # must still end, not stay in progress, its work done, until its deadline.
    node = NodeFactory()
    task = TaskFactory(assigned_node=node)

    events = run_worker(live_server, node, tmp_path, "huge")

    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED, events
    assert task.failure_cause == FailureCause.NODE_REPORTED
    assert task.failure_reason.startswith("result refused: The request body is larger than")
    assert task.result is None
    assert [event["event"] for event in events].count("failed") == 1


def test_a_report_for_a_task_taken_away_is_dropped_not_sent(live_server, tmp_path):
    node, other = NodeFactory(), NodeFactory()
    task = TaskFactory(assigned_node=node, payload={"rows": 3})
    # The work waits to be told to stop; meanwhile the task is moved away (as an
    # admin or failover would), which the next heartbeat answer says.
    log_path = tmp_path / "worker.log"
    process = start_worker(live_server, node, tmp_path, "jobs:away")
    try:
        wait_started(tmp_path)
        Task.objects.filter(pk=task.pk).update(assigned_node=other, status=TaskStatus.PENDING)
        wait_logged(tmp_path, "dropped", 30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()

    events = [json.loads(line)["event"] for line in log_path.read_text().splitlines()]
    assert "revoked" in events and "completed" not in events, events
    task.refresh_from_db()
    assert (task.status, task.result) == (TaskStatus.PENDING, None)


def start_worker(live_server, node, tmp_path, work: str, *args: str) -> subprocess.Popen:
    """`taskmgmt-worker` for `node` running `work` in `tmp_path`, logging to worker.log."""
    (tmp_path / "jobs.py").write_text(JOBS)
    with (tmp_path / "worker.log").open("w") as log:
        return subprocess.Popen(
            [
                str(WORKER), "--server", live_server.url, "--email", node.email,
                "--work", work, *args, "--idle-seconds", "0.2",
            ],
            env={**os.environ, "TASKMGMT_PASSWORD": PASSWORD},
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_started(tmp_path) -> None:
    """Until the work says it started (the jobs' long-running works make a file)."""
    wait_for(lambda: (tmp_path / "started").exists(), 30, "the work never started")


def wait_logged(tmp_path, event: str, timeout: float) -> None:
    """Until `start_worker`'s log has a line of `event`."""
    log = tmp_path / "worker.log"
    wait_for(lambda: f'"{event}"' in log.read_text(), timeout, f"no {event} line")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)


def test_the_example_worker_sums_the_payload_with_progress(live_server, tmp_path):
    node = NodeFactory()
    task = TaskFactory(assigned_node=node, payload={"numbers": [4, 5]})
    example = Path(__file__).resolve().parents[2] / "examples" / "worker.py"

    done = subprocess.run(
        [
            sys.executable, str(example), "--server", live_server.url, "--email", node.email,
            "--max-tasks", "1",
        ],
        env={**os.environ, "TASKMGMT_PASSWORD": PASSWORD},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    task.refresh_from_db()
    assert (task.status, task.result) == (TaskStatus.COMPLETED, {"sum": 9, "count": 2})
    assert (task.progress_percent, task.checkpoint) == (100.0, {"index": 2, "total": 9})


def test_a_cancel_request_is_acknowledged_within_a_heartbeat(live_server, tmp_path):
    node = NodeFactory()
    task = TaskFactory(assigned_node=node, payload={"rows": 3})
    log_path = tmp_path / "worker.log"
    process = start_worker(live_server, node, tmp_path, "jobs:slow", "--max-tasks", "1")
    try:
        wait_started(tmp_path)
        task_cancel(task_id=task.pk, reason="wrong input")
        # NODE_HEARTBEAT_SECONDS is 1: one beat, plus the report's round trip.
        wait_for(
            lambda: Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED,
            5,
            "the cancel was not acknowledged",
        )
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()

    events = [json.loads(line)["event"] for line in log_path.read_text().splitlines()]
    assert "cancel_requested" in events and "completed" not in events, events
    task.refresh_from_db()
    assert task.failure_cause == ""  # the node's acknowledgement, not the sweep's timeout


def test_a_drained_worker_finishes_its_task_and_exits_cleanly(live_server, tmp_path):
    node, other = NodeFactory(), NodeFactory()
    # Claims take the earliest deadline first: `task`, then `waiting` (which the drain moves).
    task = TaskFactory(assigned_node=node, locked_at=timezone.now() + timedelta(hours=1))
    waiting = TaskFactory(assigned_node=node, locked_at=timezone.now() + timedelta(hours=2))
    other.last_seen = timezone.now() + timedelta(hours=1)  # alive throughout the test
    other.save(update_fields=["last_seen"])
    process = start_worker(live_server, node, tmp_path, "jobs:gated")
    try:
        wait_started(tmp_path)
        moved, stayed = drain(node)
        assert (moved, stayed) == (1, 0)
        wait_logged(tmp_path, "drained", 10)
        (tmp_path / "go").touch()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()

    task.refresh_from_db()
    waiting.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    assert (waiting.assigned_node_id, waiting.status) == (other.pk, TaskStatus.PENDING)


def test_a_draining_worker_told_to_stop_still_finishes_and_reports_its_task(live_server, tmp_path):
    # The drain stops the claims; the operator's first SIGTERM (the machine going down
    # for the maintenance) must still let the task at hand finish: only a second drops it.
    node = NodeFactory()
    task = TaskFactory(assigned_node=node, locked_at=timezone.now() + timedelta(hours=1))
    log_path = tmp_path / "worker.log"
    process = start_worker(live_server, node, tmp_path, "jobs:gated")
    try:
        wait_started(tmp_path)
        drain(node)
        wait_logged(tmp_path, "drained", 10)
        process.send_signal(signal.SIGTERM)
        wait_logged(tmp_path, "stopping", 10)
        (tmp_path / "go").touch()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()

    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    (stopping,) = [event for event in events if event["event"] == "stopping"]
    assert stopping["now"] is False  # a first signal, though the drain came before it
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED, log_path.read_text()
    assert task.result == {"done": str(task.pk)}


def test_a_node_deactivated_mid_task_stops_its_work_and_exits(live_server, tmp_path):
    # Its beats are refused from then on, so the node goes down and its task is failed
    # over to another: the work must stop at once, not run on to its end beside the
    # new attempt, with nothing said until then.
    node = NodeFactory()
    task = TaskFactory(assigned_node=node, locked_at=timezone.now() + timedelta(hours=1))
    log_path = tmp_path / "worker.log"
    process = start_worker(live_server, node, tmp_path, "jobs:watching")
    try:
        wait_started(tmp_path)
        user_deactivate(user=node)
        try:
            status = process.wait(timeout=10)  # a few heartbeats
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still working\n{log_path.read_text()}") from None
    finally:
        (tmp_path / "go").touch()
        process.kill()

    assert status == 2  # a refused login
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    names = [event["event"] for event in events]
    assert names.index("revoked") < names.index("dropped") < names.index("login_refused")
    (revoked,) = [event for event in events if event["event"] == "revoked"]
    assert "deactivated" in revoked["reason"]
    task.refresh_from_db()
    assert task.status == TaskStatus.IN_PROGRESS  # for failover, or an admin, to move


def drain(node):
    from nodes.services import node_cordon
    from tasks.services import tasks_drain_pending

    node_cordon(
        node_id=node.pk,
        reason="test",
        actor=None,
        drain_deadline=timezone.now() + timedelta(hours=1),
    )
    return tasks_drain_pending(node_id=node.pk)
