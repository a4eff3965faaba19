"""Operators in control of the work, with real worker processes (the installed
`taskmgmt-worker`) on MariaDB: a drain of a working node while the others run, and a
cancel of a running task that its worker acknowledges within a heartbeat.

Marked `fleet`: `pytest -m fleet tests/fleet/test_control.py`.
"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import PASSWORD, NodeFactory, TaskFactory
from tests.fleet.harness import (
    COMPLETED,
    FLEET_MARKS,
    IN_PROGRESS,
    Fleet,
    assert_every_history_consistent,
    fleet_settings_for,
    in_progress_of,
    wait_for,
)

pytestmark = FLEET_MARKS

HEARTBEAT_SECONDS = 1
REDIS_DB = 10
WORK_SECONDS = 2  # the default work: sleeps this long, stops at once when cancelled


@pytest.fixture
def fleet_settings(settings):
    with fleet_settings_for(
        settings, redis_db=REDIS_DB, heartbeat_seconds=HEARTBEAT_SECONDS, down_after=30
    ):
        yield settings


def test_draining_a_working_node_moves_its_pending_work_and_lets_it_finish_its_task(
    live_server, fleet_settings, tmp_path, client_for, admin_user
):
    drained, *others = [NodeFactory(name=f"node-{i}") for i in range(3)]
    deadline = timezone.now() + timedelta(hours=1)
    tasks = [
        TaskFactory(assigned_node=node, locked_at=deadline + timedelta(seconds=i))
        for i in range(4)
        for node in (drained, *others)
    ]
    fleet = Fleet(live_server.url, tmp_path, PASSWORD, work_seconds=WORK_SECONDS)
    try:
        workers = {node.pk: fleet.start(node) for node in (drained, *others)}
        (working_on,) = wait_for(lambda: in_progress_of(drained), 30, "no task in progress")

        answer = client_for(admin_user).post(
            f"/api/nodes/{drained.pk}/drain", {"reason": "kernel upgrade"}
        )
        assert answer.status_code == 200, answer.content
        assert answer.json()["movedCount"] == 3  # its other pending tasks, at once

        # Its worker finishes the task at hand, reports it, and exits cleanly.
        assert workers[drained.pk].exit_status(timeout=WORK_SECONDS + 20) == 0
        wait_for(
            lambda: not Task.objects.exclude(status=COMPLETED).exists(),
            len(tasks) * WORK_SECONDS + 30,
            f"not every task completed\n{fleet.logs()}",
            poll=0.2,
        )
        fleet.workers.pop(drained.pk)
        fleet.stop()
    finally:
        fleet.abort()

    finished = Task.objects.get(pk=working_on)
    assert finished.assigned_node_id == drained.pk  # finished where it was running
    assert Task.objects.filter(assigned_node=drained).count() == 1
    assert max(fleet.completions_reported().values()) == 1  # none done twice
    assert_every_history_consistent(Task.objects.all())


def test_a_running_task_cancelled_is_acknowledged_within_a_heartbeat(
    live_server, fleet_settings, tmp_path, client_for, admin_user
):
    node = NodeFactory()
    task = TaskFactory(assigned_node=node)
    fleet = Fleet(live_server.url, tmp_path, PASSWORD, work_seconds=60)
    try:
        fleet.start(node)
        wait_for(lambda: in_progress_of(node), 30, "the task never started")

        asked = client_for(admin_user).post(f"/api/tasks/{task.pk}/cancel", {"reason": "stop"})
        assert asked.json()["task"]["status"] == IN_PROGRESS
        started = time.monotonic()
        wait_for(
            lambda: Task.objects.filter(pk=task.pk, status=TaskStatus.CANCELLED).exists(),
            2 * HEARTBEAT_SECONDS + 2,  # a beat, its answer, and the report's round trip
            f"the cancel was not acknowledged\n{fleet.logs()}",
        )
        print(f"acknowledged after {time.monotonic() - started:.2f} s")
        fleet.stop()
    finally:
        fleet.abort()

    task.refresh_from_db()
    assert task.failure_cause == ""  # the node's acknowledgement, not the sweep's timeout
    acknowledged = TaskHistory.objects.get(
        task=task, action=HistoryAction.STATUS_CHANGE, to_value=TaskStatus.CANCELLED
    )
    assert acknowledged.performed_by_id == node.pk
