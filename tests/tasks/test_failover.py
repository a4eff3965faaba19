"""Failover (`services.tasks_fail_over`, FAILOVER=reassign): a down node's open tasks
move to the least-loaded alive node, with history by the system and cause node_lost.

Races with claims on MariaDB are in test_claim_concurrency.py.
"""

import logging
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import User
from nodes.models import Cordon
from tasks.models import (
    FailureCause,
    HistoryAction,
    SweepRun,
    Task,
    TaskHistory,
    TaskStatus,
    deadline_text,
)
from tasks.services import FailoverCounts, sweep_run, tasks_fail_over
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
COMPLETED, FAILED = TaskStatus.COMPLETED, TaskStatus.FAILED
NODE_LOST = FailureCause.NODE_LOST


@pytest.fixture(autouse=True)
def _failover(settings):
    settings.FAILOVER = "reassign"
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    settings.TASK_MAX_ATTEMPTS, settings.REASSIGN_DEADLINE_MINUTES = 3, 60


def seen(node, seconds_ago):
    User.objects.filter(pk=node.pk).update(
        last_seen=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return node


@pytest.fixture
def dead():
    return seen(NodeFactory(name="dead"), 300)


@pytest.fixture
def alive():
    return seen(NodeFactory(name="alive"), 1)


def in_hours(hours):
    return timezone.now() + timedelta(hours=hours)


def history(task):
    """(action, from, to, by, cause) of the task's rows after its creation, oldest first."""
    rows = task.history.exclude(action=HistoryAction.INITIAL_ASSIGN).order_by("created_at", "id")
    return [
        (row.action, row.from_value, row.to_value, row.performed_by_id, row.cause) for row in rows
    ]


def fail_over(batch_size=100):
    return tasks_fail_over(batch_size=batch_size)


def test_an_in_progress_task_of_a_down_node_fails_then_goes_pending_to_an_alive_node(dead, alive):
    deadline = in_hours(5)
    task = TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1, locked_at=deadline)

    assert fail_over() == FailoverCounts(failed=1, reassigned=1)

    task.refresh_from_db()
    assert (task.assigned_node_id, task.status, task.attempts) == (alive.pk, PENDING, 1)
    # Far enough away: the deadline stands, so no deadline_change row.
    assert (task.failure_cause, task.locked_at) == ("", deadline)
    assert history(task) == [
        (HistoryAction.STATUS_CHANGE, IN_PROGRESS, FAILED, None, NODE_LOST),
        (HistoryAction.ASSIGNEE_CHANGE, str(dead.pk), str(alive.pk), None, NODE_LOST),
        (HistoryAction.STATUS_CHANGE, FAILED, PENDING, None, NODE_LOST),
    ]


def test_a_pending_task_of_a_down_node_just_moves(dead, alive):
    task = TaskFactory(assigned_node=dead, locked_at=in_hours(5))

    assert fail_over() == FailoverCounts(reassigned=1)

    task.refresh_from_db()
    assert (task.assigned_node_id, task.status, task.attempts) == (alive.pk, PENDING, 0)
    assert history(task) == [
        (HistoryAction.ASSIGNEE_CHANGE, str(dead.pk), str(alive.pk), None, NODE_LOST),
    ]


def test_a_moved_task_whose_deadline_is_near_gets_a_fresh_one(dead, alive):
    near = in_hours(0.25)
    task = TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1, locked_at=near)
    before = timezone.now()

    fail_over()

    task.refresh_from_db()
    assert (
        before + timedelta(minutes=60) <= task.locked_at <= timezone.now() + timedelta(minutes=60)
    )
    (row,) = task.history.filter(action=HistoryAction.DEADLINE_CHANGE)
    assert (row.from_value, row.to_value, row.cause) == (
        deadline_text(near),
        deadline_text(task.locked_at),
        NODE_LOST,
    )


def test_a_moved_tasks_deadline_row_reads_as_every_other_deadline_row(dead, alive):
    # As the API writes lockedAt and as an edit's or an assign's row holds it: "Z", not
    # "+00:00" (the move wrote Python's isoformat, so one task's rows mixed both).
    near = in_hours(0.25)
    task = TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1, locked_at=near)

    fail_over()

    (row,) = task.history.filter(action=HistoryAction.DEADLINE_CHANGE)
    assert row.from_value.endswith("Z") and row.to_value.endswith("Z")
    assert datetime.fromisoformat(row.from_value) == near


def test_tasks_go_to_the_least_loaded_alive_node_never_to_a_stale_or_down_one(dead):
    busy = seen(NodeFactory(name="busy"), 1)
    seen(NodeFactory(name="idle"), 1)
    stale = seen(NodeFactory(name="stale"), 20)
    seen(NodeFactory(name="inactive", is_active=False), 1)
    TaskFactory.create_batch(3, assigned_node=busy)
    lost = TaskFactory.create_batch(5, assigned_node=dead, locked_at=in_hours(5))

    assert fail_over(batch_size=2).reassigned == 5

    owners = [Task.objects.get(pk=task.pk).assigned_node for task in lost]
    # idle takes three until it is as loaded as busy, then they alternate.
    assert sorted(owner.name for owner in owners) == ["busy", "idle", "idle", "idle", "idle"]
    assert not Task.objects.filter(assigned_node__in=[dead, stale]).exists()


def test_past_the_attempt_limit_a_task_stays_failed_for_a_human(dead, alive):
    started = TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=3)
    waiting = TaskFactory(assigned_node=dead, status=PENDING, attempts=3)

    assert fail_over() == FailoverCounts(failed=2)

    for task, was in ((started, IN_PROGRESS), (waiting, PENDING)):
        task.refresh_from_db()
        assert (task.status, task.assigned_node_id, task.failure_cause) == (
            FAILED,
            dead.pk,
            NODE_LOST,
        )
        assert history(task) == [(HistoryAction.STATUS_CHANGE, was, FAILED, None, NODE_LOST)]


def test_with_no_alive_node_started_tasks_fail_and_pending_ones_wait(dead):
    seen(NodeFactory(), 20)  # stale: not a taker
    started = TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1)
    waiting = TaskFactory(assigned_node=dead)

    # The started one is failed for a human (no later run retries a failed task), not
    # left in place: only the waiting one is stranded.
    assert fail_over() == FailoverCounts(failed=1, stranded=1, unplaced=1)

    started.refresh_from_db()
    waiting.refresh_from_db()
    assert (started.status, started.failure_cause) == (FAILED, NODE_LOST)
    assert started.failure_reason == "failover: no alive schedulable node to take it"
    assert (waiting.status, waiting.assigned_node_id) == (PENDING, dead.pk)
    assert history(waiting) == []


def test_with_no_alive_node_the_warning_does_not_blame_a_selector(dead, caplog):
    # No selector, not pinned: the task fails for a human because no node is alive.
    TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1)

    with caplog.at_level(logging.WARNING, logger="taskmgmt.sweep"):
        fail_over()

    [summary] = [r for r in caplog.records if getattr(r, "unplaced_count", None)]
    assert "no alive node may take them (none is" in summary.getMessage()


@pytest.mark.parametrize("seconds_ago", [None, 1, 20])
def test_tasks_of_nodes_that_are_not_down_stay(alive, seconds_ago):
    node = NodeFactory()
    if seconds_ago is not None:
        seen(node, seconds_ago)
    tasks = [TaskFactory(assigned_node=node, status=s) for s in (PENDING, IN_PROGRESS)]

    assert fail_over() == FailoverCounts()

    assert [Task.objects.get(pk=t.pk).assigned_node_id for t in tasks] == [node.pk, node.pk]


def test_final_and_deleted_tasks_of_a_down_node_stay(dead, alive):
    kept = [
        TaskFactory(assigned_node=dead, status=COMPLETED),
        TaskFactory(assigned_node=dead, status=FAILED, failure_cause="deadline"),
        TaskFactory(assigned_node=dead, active=False),
    ]

    assert fail_over() == FailoverCounts()

    for task in kept:
        assert Task.objects.get(pk=task.pk).assigned_node_id == dead.pk
        assert history(task) == []


def test_a_second_run_finds_nothing(dead, alive):
    TaskFactory.create_batch(3, assigned_node=dead, status=IN_PROGRESS, attempts=1)
    fail_over()
    rows = TaskHistory.objects.count()

    assert fail_over() == FailoverCounts()
    assert TaskHistory.objects.count() == rows


def test_a_node_back_from_the_dead_cannot_finish_what_was_taken_away(dead, alive, client_for):
    task = TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1)
    fail_over()
    seen(dead, 0)

    response = client_for(dead).put(
        "/api/tasks/shift-status", {"taskId": str(task.pk), "taskStatus": COMPLETED}
    )

    assert response.status_code == 403
    task.refresh_from_db()
    assert (task.status, task.assigned_node_id) == (PENDING, alive.pk)
    beat = client_for(dead).post("/api/nodes/heartbeat", {"taskIds": [str(task.pk)]}, format="json")
    assert beat.json()["revokedTaskIds"] == [str(task.pk)]


def test_the_new_node_claims_a_moved_task_as_its_second_attempt(dead, alive, client_for):
    task = TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1, locked_at=in_hours(5))
    fail_over()

    claimed = client_for(alive).post("/api/tasks/claim").json()["task"]

    assert (claimed["id"], claimed["attempts"], claimed["failureCause"]) == (str(task.pk), 2, None)


def test_a_down_node_past_its_drain_deadline_is_left_to_the_drain(dead, alive):
    """Off for its maintenance, a drained node is not lost (SPEC): its pending task that
    no alive node matches waits for it, as the drain leaves it, instead of being failed
    for a human (node_lost); one that may move still moves, by the drain's rule."""
    Cordon.objects.create(node=dead, reason="disk", drain_deadline=in_hours(-1))
    waits = TaskFactory(assigned_node=dead, node_selector={"gpu": "true"})
    moves = TaskFactory(assigned_node=dead)

    _, counts = sweep_run(batch_size=10)

    assert counts == FailoverCounts(reassigned=1)
    waits.refresh_from_db()
    assert (waits.status, waits.assigned_node_id, waits.failure_cause) == (PENDING, dead.pk, "")
    assert history(waits) == []
    moves.refresh_from_db()
    assert (moves.status, moves.assigned_node_id) == (PENDING, alive.pk)
    assert {cause for *_, cause in history(moves)} == {FailureCause.DRAINED}


# --- The sweep run: the command and the cron endpoint ---------------------------------------


def test_a_sweep_run_expires_then_fails_over_and_records_itself(dead, alive):
    TaskFactory(assigned_node=alive, locked_at=timezone.now() - timedelta(minutes=1))
    TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1)
    TaskFactory(assigned_node=dead)

    run, counts = sweep_run(batch_size=10)

    assert (run.failed_count, run.reassigned_count) == (2, 2)
    assert counts == FailoverCounts(failed=1, reassigned=2)
    assert SweepRun.objects.get() == run
    assert run.started_at <= run.finished_at


def test_with_failover_off_a_sweep_run_leaves_down_nodes_alone(dead, alive, settings):
    settings.FAILOVER = "off"
    task = TaskFactory(assigned_node=dead, status=IN_PROGRESS)

    run, _ = sweep_run(batch_size=10)

    assert (run.failed_count, run.reassigned_count) == (0, 0)
    task.refresh_from_db()
    assert (task.status, task.assigned_node_id) == (IN_PROGRESS, dead.pk)


def test_collect_failed_prints_the_reassigned_count(dead, alive):
    TaskFactory.create_batch(2, assigned_node=dead, status=IN_PROGRESS, attempts=1)
    out = StringIO()

    call_command("collect_failed", stdout=out)

    assert out.getvalue().startswith("failed 2 task(s) (node lost: 2), reassigned 2 in ")
    assert SweepRun.objects.get().reassigned_count == 2


def test_collect_failed_says_when_no_node_can_take_the_work(dead):
    TaskFactory(assigned_node=dead)
    out, err = StringIO(), StringIO()

    call_command("collect_failed", stdout=out, stderr=err)

    assert "no alive schedulable node to take 1 task(s)" in err.getvalue()


def test_left_in_place_is_said_once_per_count_by_runs_of_their_own_as_cron_starts(dead, caplog):
    """Each cron run is a new process: every minute's mail said the same warning (and
    logged it). The count is recorded with the run; a run says it again when it differs."""
    TaskFactory.create_batch(2, assigned_node=dead)
    caplog.set_level(logging.WARNING, logger="taskmgmt.sweep")

    def run():
        err = StringIO()
        call_command("collect_failed", stdout=StringIO(), stderr=err)
        logged = [r for r in caplog.records if getattr(r, "event", "") == "failover_stranded"]
        caplog.clear()
        return err.getvalue(), len(logged)

    said = "no alive schedulable node to take {} task(s) of down nodes: left in place\n"
    assert run() == (said.format(2), 1)
    assert run() == ("", 0)
    assert SweepRun.objects.order_by("-started_at").first().stranded_count == 2
    TaskFactory(assigned_node=dead)
    assert run() == (said.format(3), 1)
    Task.objects.filter(assigned_node=dead).update(status=COMPLETED)
    assert run() == ("", 0)  # none left: nothing to say, and 0 recorded
    TaskFactory(assigned_node=dead)
    assert run() == (said.format(1), 1)


def test_left_in_place_says_schedulable_when_the_alive_nodes_are_cordoned(dead, alive):
    # An alive node that is cordoned takes nothing: the line said "no alive node".
    Cordon.objects.create(node=alive, reason="disk")
    task = TaskFactory(assigned_node=dead)
    err = StringIO()

    call_command("collect_failed", stdout=StringIO(), stderr=err)

    assert err.getvalue() == (
        "no alive schedulable node to take 1 task(s) of down nodes: left in place\n"
    )
    task.refresh_from_db()
    assert (task.status, task.assigned_node_id) == (PENDING, dead.pk)


def test_left_in_place_counts_only_the_tasks_still_open_not_those_the_run_failed(dead):
    """With no node alive, a started task fails (node_lost) and the pending ones stay:
    "left in place" is those, for a later run to retry; the run counted the failed one
    there too, and the failed one is never retried."""
    seen(NodeFactory(), 20)  # stale: not a taker
    TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1)
    TaskFactory.create_batch(2, assigned_node=dead)
    out, err = StringIO(), StringIO()

    call_command("collect_failed", stdout=out, stderr=err)

    assert out.getvalue().startswith("failed 1 task(s) (node lost: 1), reassigned 0 in ")
    assert err.getvalue().splitlines() == [
        "no alive schedulable node to take 2 task(s) of down nodes: left in place",
        "1 task(s) failed for a human, counted among the failed: no alive node may take"
        " them (none is, or none matches their nodeSelector), or they are pinned to their"
        " node (a broadcast's)",
    ]
    assert Task.objects.filter(assigned_node=dead, status=PENDING).count() == 2


def test_a_dry_run_counts_what_would_move_and_changes_nothing(dead, alive):
    task = TaskFactory(assigned_node=dead, status=IN_PROGRESS)
    out = StringIO()

    call_command("collect_failed", "--dry-run", stdout=out)

    assert out.getvalue() == (
        "would fail 0 expired task(s); 1 open task(s) of down nodes to fail over\n"
    )
    task.refresh_from_db()
    assert (task.status, task.assigned_node_id) == (IN_PROGRESS, dead.pk)
    assert not SweepRun.objects.exists()


def test_a_dry_run_counts_an_expired_task_of_a_down_node_once(dead, alive):
    """A run fails it as expired before failover looks: it is not one to fail over too."""
    TaskFactory(assigned_node=dead, locked_at=in_hours(-1))
    out = StringIO()

    call_command("collect_failed", "--dry-run", stdout=out)

    assert out.getvalue() == (
        "would fail 1 expired task(s); 0 open task(s) of down nodes to fail over\n"
    )


def test_the_cron_endpoint_reports_reassigned_tasks_and_records_the_run(dead, alive, admin_client):
    TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1)

    response = admin_client.post("/cron/collect-failed")

    assert response.json() == {"failedCount": 1, "reassignedCount": 1}
    run = SweepRun.objects.get()
    assert (run.failed_count, run.reassigned_count) == (1, 1)


def test_with_failover_off_the_cron_endpoint_answers_as_before(dead, admin_client, settings):
    settings.FAILOVER = "off"

    assert admin_client.post("/cron/collect-failed").json() == {"failedCount": 0}
    assert SweepRun.objects.count() == 1


def test_the_sweep_log_line_carries_the_reassigned_count(dead, alive, caplog):
    TaskFactory(assigned_node=dead, status=IN_PROGRESS, attempts=1)
    caplog.set_level(logging.INFO, logger="taskmgmt.sweep")

    call_command("collect_failed", stdout=StringIO())

    (record,) = [r for r in caplog.records if r.getMessage() == "sweep finished"]
    assert (record.failed_count, record.reassigned_count) == (1, 1)
