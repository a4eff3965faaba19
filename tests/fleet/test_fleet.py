"""A real worker fleet on MariaDB: workers heartbeat, claim and complete; one dies
mid-task; with FAILOVER=reassign the sweep gives its tasks to the others, who finish
them. Nothing done twice, nothing lost, every history consistent.

The quick test runs in the normal MariaDB suite; the kill cycles are marked `fleet`,
left out of the normal run, and run by `.ci/run` as their own step
(`pytest -m fleet tests/fleet`).
"""

import json
import math
import signal
import time
from collections import Counter
from datetime import timedelta
from functools import partial

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts.models import User
from nodes.models import Node
from tasks.models import Task
from tests.factories import PASSWORD, NodeFactory, TaskFactory
from tests.fleet.harness import (
    COMPLETED,
    IDLE_SECONDS,
    IN_PROGRESS,
    Fleet,
    assert_every_history_consistent,
    fleet_settings_for,
    history_of,
    in_progress_of,
    open_task_ids_of,
    wait_for,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.mysql,
    pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="a live server with concurrent writers needs MariaDB: SQLite has one writer",
    ),
    pytest.mark.process,
]

HEARTBEAT_SECONDS, DOWN_AFTER = 1, 3
REDIS_DB = 8
SWEEP_EVERY = 0.5  # seconds between sweeps, as cron would run it (every minute in production)
# Scheduling on a busy 2-core machine: a late beat, a slow sweep.
SLACK = 2.0
WORK_SECONDS = 0.4


@pytest.fixture
def fleet_settings(settings):
    with fleet_settings_for(
        settings,
        redis_db=REDIS_DB,
        heartbeat_seconds=HEARTBEAT_SECONDS,
        down_after=DOWN_AFTER,
        FAILOVER="reassign",
        # Twenty kills in a row, each of a worker holding a task, can catch one task in
        # progress more than TASK_MAX_ATTEMPTS times: it then stays failed for a human,
        # by design (tests/tasks/test_failover.py). Here every task must end completed.
        TASK_MAX_ATTEMPTS=1000,
    ):
        yield settings


@pytest.fixture
def fleet(live_server, fleet_settings, tmp_path):
    fleet = Fleet(live_server.url, tmp_path, PASSWORD, WORK_SECONDS)
    yield fleet
    fleet.abort()


def tasks_for(nodes, per_node: int) -> list[Task]:
    deadline = timezone.now() + timedelta(hours=1)
    return [
        TaskFactory(assigned_node=node, locked_at=deadline)
        for node in nodes
        for _ in range(per_node)
    ]


def kill_mid_task(fleet, node) -> tuple[float, set]:
    """SIGKILLs `node`'s worker while it holds a task in progress: (when, its open tasks)."""
    wait_for(lambda: in_progress_of(node), 20, f"{node.email} never started a task")
    fleet.kill(node)
    return time.monotonic(), open_task_ids_of(node)


def sweep_until_moved(node, killed_at: float) -> float:
    """Sweeps every SWEEP_EVERY s until `node` holds no open task; seconds since the kill."""
    deadline = killed_at + DOWN_AFTER + SWEEP_EVERY + SLACK + 10
    while open_task_ids_of(node):
        assert time.monotonic() < deadline, f"{node.email}'s tasks never moved"
        call_command("collect_failed", verbosity=0)
        time.sleep(SWEEP_EVERY)
    return time.monotonic() - killed_at


def assert_moved_in_time(after: float) -> None:
    # Not before the node was down (its last beat was at most one interval before the
    # kill), and within NODE_DOWN_AFTER + one sweep.
    assert DOWN_AFTER - HEARTBEAT_SECONDS <= after <= DOWN_AFTER + SWEEP_EVERY + SLACK, after


def all_completed(tasks) -> bool:
    return Task.objects.filter(pk__in=[t.pk for t in tasks], status=COMPLETED).count() == len(tasks)


def unfinished(tasks) -> list:
    return list(
        Task.objects.filter(pk__in=[t.pk for t in tasks])
        .exclude(status=COMPLETED)
        .values_list("pk", "status", "attempts", "failure_cause", "assigned_node__email")
    )


def wait_until_all_completed(fleet, tasks) -> float:
    try:
        wait_for(lambda: all_completed(tasks), 60, "every task completed", poll=0.1)
    except AssertionError as error:
        raise AssertionError(f"{error}; unfinished: {unfinished(tasks)}\n{fleet.logs()}") from None
    return time.monotonic()


def assert_finished_by_the_others(fleet, tasks, lost: set, dead: set) -> None:
    """Every task completed once; `lost` (the dead nodes' open tasks at the kill) by
    someone alive."""
    for task in Task.objects.filter(pk__in=lost):
        assert task.assigned_node_id not in dead
    assert_every_history_consistent(Task.objects.filter(pk__in=[t.pk for t in tasks]))
    # The workers' side: no task reported done twice; one done but never reported is
    # only ever the one a killed worker was at, its report applied as it died.
    reported = fleet.completions_reported()
    assert max(reported.values()) == 1, reported.most_common(3)
    unreported = {str(task.pk) for task in tasks} - set(reported)
    assert unreported <= fleet.killed_while_working_on(), unreported


def test_a_killed_workers_tasks_are_finished_by_the_others(fleet):
    nodes = NodeFactory.create_batch(3)
    tasks = tasks_for(nodes, per_node=4)
    victim = nodes[0]
    # Its tasks take long enough that the kill lands mid-task, not mid-report.
    fleet.start(victim, "--work-seconds", "5")
    for node in nodes[1:]:
        fleet.start(node)

    killed_at, lost = kill_mid_task(fleet, victim)
    (in_flight,) = in_progress_of(victim)
    assert_moved_in_time(sweep_until_moved(victim, killed_at))

    finished_after = wait_until_all_completed(fleet, tasks) - killed_at
    # Once moved, the two others share the lost tasks: their work and idle polls.
    work = math.ceil(len(lost) / 2) * (WORK_SECONDS + IDLE_SECONDS)
    assert finished_after <= DOWN_AFTER + SWEEP_EVERY + work + 2 * SLACK, finished_after

    assert_finished_by_the_others(fleet, tasks, lost, {victim.pk})
    task = Task.objects.get(pk=in_flight)
    assert task.attempts >= 2
    lost_rows = [
        row for row in history_of(task, "status_change") if row[:2] == (IN_PROGRESS, "failed")
    ]
    assert len(lost_rows) == 1
    assert set(fleet.stop().values()) == {0}, fleet.logs()
    assert Node.objects.get(pk=victim.pk).liveness() == "down"


def test_a_frozen_worker_that_comes_back_finds_its_task_taken_and_reports_nothing(
    live_server, fleet_settings, tmp_path
):
    fleet = Fleet(live_server.url, tmp_path, PASSWORD, work_seconds=DOWN_AFTER + 2)
    try:
        frozen, other = NodeFactory.create_batch(2)
        (task,) = tasks_for([frozen], per_node=1)
        sleeper = fleet.start(frozen)
        wait_for(lambda: in_progress_of(frozen), 20, "the task never started")
        sleeper.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        fleet.start(other)
        wait_for(lambda: User.objects.get(pk=other.pk).last_seen, 20, "the other never beat")
        sweep_until_moved(frozen, stopped_at)
        wait_for(lambda: all_completed([task]), 30, f"the task completed\n{fleet.logs()}")

        sleeper.signal(signal.SIGCONT)
        wait_for(
            lambda: {"dropped", "report_refused"} & {e["event"] for e in sleeper.events()},
            20,
            f"the woken worker never learned its task was gone\n{fleet.logs()}",
        )
        assert set(fleet.stop().values()) == {0}, fleet.logs()
    finally:
        fleet.abort()

    task.refresh_from_db()
    assert task.assigned_node_id == other.pk
    assert_every_history_consistent([task])


@pytest.mark.fleet
def test_twenty_kill_cycles_lose_nothing_and_do_nothing_twice(fleet):
    nodes = NodeFactory.create_batch(3)
    for node in nodes:
        fleet.start(node)
    tasks, lost = [], set()
    for cycle in range(20):
        victim = nodes[cycle % len(nodes)]
        tasks += tasks_for(nodes, per_node=2)
        killed_at, lost_now = kill_mid_task(fleet, victim)
        lost |= lost_now
        assert_moved_in_time(sweep_until_moved(victim, killed_at))
        fleet.start(victim)  # the node comes back; its old tasks are gone

    wait_until_all_completed(fleet, tasks)
    assert_finished_by_the_others(fleet, tasks, lost, set())
    for task in Task.objects.filter(pk__in=lost):
        assert history_of(task, "assignee_change"), f"task {task.pk} was lost and never moved"
    assert set(fleet.stop().values()) == {0}, fleet.logs()


def one_holding_a_task(processes):
    """The first of `processes` whose last event is `working` (it holds a task), or None."""
    for process in processes:
        events = process.events()
        if events and events[-1]["event"] == "working":
            return process
    return None


@pytest.mark.fleet
def test_two_processes_per_node_killed_in_turn_run_each_task_once_but_the_killed_ones(fleet):
    # Each node runs two tasks at once, one per process (taskmgmt_worker.locks). A process
    # killed mid-task leaves its node alive (its sibling beats), so nothing fails over:
    # the sibling takes the task up once nothing is pending, and no task is worked on by
    # two processes at once or run again after it completed.
    nodes = NodeFactory.create_batch(3)
    # Six seconds of work a node at least: the last node still has some when its turn
    # comes on a slow machine.
    tasks = tasks_for(nodes, per_node=12)
    processes = {
        node.pk: [fleet.start(node, "--work-seconds", "1") for _ in range(2)] for node in nodes
    }
    for cycle in range(3):
        node = nodes[cycle]
        victim = wait_for(
            partial(one_holding_a_task, processes[node.pk]),
            20,
            f"no process of {node.email} held a task\n{fleet.logs()}",
        )
        processes[node.pk].remove(victim)
        victim.kill()
        fleet.killed.append(victim)
        processes[node.pk].append(fleet.start(node, "--work-seconds", "1"))

    wait_until_all_completed(fleet, tasks)
    assert_every_history_consistent(Task.objects.filter(pk__in=[t.pk for t in tasks]))
    reported = fleet.completions_reported()
    assert max(reported.values()) == 1, reported.most_common(3)
    killed_at = fleet.killed_while_working_on()
    runs = Counter(
        event["task"]
        for path in fleet.log_dir.glob("worker-*.log")
        for event in map(json.loads, path.read_text().splitlines())
        if event["event"] == "working"
    )
    assert {task for task, count in runs.items() if count > 1} <= killed_at, runs.most_common(4)
    assert all(count <= 2 for count in runs.values()), runs.most_common(4)
    assert sum(task.attempts for task in Task.objects.filter(pk__in=[t.pk for t in tasks])) == len(
        tasks
    )  # no failover, no second claim: one start each
