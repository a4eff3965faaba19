"""Work data end to end, with real worker processes (the installed `taskmgmt-worker`) on
MariaDB: a task created with a JSON payload is claimed, reports progress the admin sees
move, its worker is killed mid-way, failover gives it to another node whose worker
resumes from the checkpoint, and it completes with a JSON result the API shows.

Marked `fleet` (a kill and a failover take a while): `pytest -m fleet tests/fleet`.
"""

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from tasks.models import Task
from tests.factories import PASSWORD, NodeFactory
from tests.fleet.harness import (
    COMPLETED,
    FLEET_MARKS,
    IN_PROGRESS,
    PENDING,
    Fleet,
    assert_every_history_consistent,
    fleet_settings_for,
    wait_for,
)

pytestmark = FLEET_MARKS

HEARTBEAT_SECONDS, DOWN_AFTER = 1, 3
REDIS_DB = 9
SWEEP_EVERY = 0.5
STEPS, STEP_SECONDS = 12, 0.5

# The work: one step per STEP_SECONDS, each reported with a checkpoint; resumes from
# the last checkpoint; its result says where it started and who finished.
JOBS = """
import os

def run(task, context):
    steps, pause = task["payload"]["steps"], task["payload"]["stepSeconds"]
    start = (context.checkpoint or {}).get("step", 0)
    total = (context.checkpoint or {}).get("total", 0)
    for step in range(start, steps):
        if context.cancelled.wait(pause):
            raise RuntimeError("stopped")
        total += task["payload"]["values"][step]
        context.progress(100 * (step + 1) / steps, f"step {step + 1} of {steps}",
                         {"step": step + 1, "total": total})
    return {"total": total, "resumedFrom": start, "by": os.environ["WORKER_NAME"]}
"""


@pytest.fixture
def fleet_settings(settings):
    with fleet_settings_for(
        settings,
        redis_db=REDIS_DB,
        heartbeat_seconds=HEARTBEAT_SECONDS,
        down_after=DOWN_AFTER,
        FAILOVER="reassign",
    ):
        yield settings


def progress_of(task_id):
    return Task.objects.filter(pk=task_id).values_list("progress_percent", flat=True).first()


def test_a_killed_workers_task_resumes_from_its_checkpoint_on_another_node(
    live_server, fleet_settings, tmp_path, client_for, admin_user, admin_site_client
):
    first, second = NodeFactory(name="first"), NodeFactory(name="second")
    payload = {"steps": STEPS, "stepSeconds": STEP_SECONDS, "values": list(range(1, STEPS + 1))}
    admin = client_for(admin_user)
    created = admin.post(
        "/api/tasks",
        {
            "taskName": "Sum",
            "taskDetails": "Add the values up.",
            "assignedNode": str(first.pk),
            "lockedAt": (timezone.now() + timedelta(hours=1)).isoformat(),
            "payload": payload,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    task_id = created.json()["task"]["id"]
    (tmp_path / "jobs.py").write_text(JOBS)
    fleet = Fleet(live_server.url, tmp_path, PASSWORD, work_seconds=0)
    work = ("--work", "jobs:run")
    try:
        fleet.start(first, *work, PYTHONPATH=str(tmp_path), WORKER_NAME="first")
        fleet.start(second, *work, PYTHONPATH=str(tmp_path), WORKER_NAME="second")

        # Progress the admin sees move: two reports apart, on the task's page too.
        seen = wait_for(lambda: progress_of(task_id), 30, f"no progress\n{fleet.logs()}")
        wait_for(lambda: (progress_of(task_id) or 0) > seen, 10, "the progress did not move")
        page = admin_site_client.get(reverse("admin:tasks_task_change", args=[task_id]))
        assert '<progress max="100" value="' in page.content.decode()
        wait_for(lambda: (progress_of(task_id) or 0) >= 25, 20, "not a quarter done")

        fleet.kill(first)
        killed = Task.objects.get(pk=task_id)
        assert killed.status == IN_PROGRESS and killed.assigned_node_id == first.pk
        checkpoint = killed.checkpoint
        assert checkpoint["step"] < STEPS

        # The sweep, as cron runs it, until failover has moved the task.
        deadline = time.monotonic() + DOWN_AFTER + 20
        while Task.objects.get(pk=task_id).assigned_node_id == first.pk:
            assert time.monotonic() < deadline, f"the task never moved\n{fleet.logs()}"
            call_command("collect_failed", verbosity=0)
            time.sleep(SWEEP_EVERY)
        moved = Task.objects.get(pk=task_id)
        assert moved.assigned_node_id == second.pk
        assert moved.checkpoint is not None  # kept across the failover
        assert moved.status in (PENDING, IN_PROGRESS)  # the second may have claimed it already

        wait_for(
            lambda: Task.objects.filter(pk=task_id, status=COMPLETED).exists(),
            STEPS * STEP_SECONDS + 30,
            f"the task never completed\n{fleet.logs()}",
            poll=0.2,
        )
    finally:
        fleet.abort()

    shown = admin.get(f"/api/tasks/{task_id}").json()["task"]
    resumed_from = shown["result"]["resumedFrom"]
    assert shown["result"] == {
        "total": sum(range(1, STEPS + 1)),
        "resumedFrom": resumed_from,
        "by": "second",
    }
    # From the last checkpoint the first worker sent (or a later one it sent as it died).
    assert checkpoint["step"] <= resumed_from < STEPS
    assert shown["payload"] == payload
    assert (shown["status"], shown["assignedNode"], shown["attempt"]) == (
        COMPLETED,
        str(second.pk),
        2,
    )
    assert shown["checkpoint"] == {"step": STEPS, "total": sum(range(1, STEPS + 1))}
    assert shown["progress"]["percent"] == 100
    page = admin_site_client.get(reverse("admin:tasks_task_change", args=[task_id]))
    assert "&quot;resumedFrom&quot;:" in page.content.decode()  # the admin shows the result
    assert_every_history_consistent(Task.objects.filter(pk=task_id))
