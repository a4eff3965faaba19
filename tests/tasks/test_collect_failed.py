"""`manage.py collect_failed`: what it fails, what it leaves, what it says.

Basic correctness only; scale and concurrency are in test_sweep*.py.
"""

import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from nodes.models import Cordon
from tasks.models import HistoryAction, SweepRun, Task, TaskHistory, TaskStatus
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db


def collect_failed(*args):
    out = StringIO()
    call_command("collect_failed", *args, stdout=out)
    return out.getvalue()


def past(hours=1):
    return timezone.now() - timedelta(hours=hours)


def status_of(task):
    return Task.objects.get(pk=task.pk).status


@pytest.fixture
def expired():
    return [
        TaskFactory(status=TaskStatus.PENDING, locked_at=past()),
        TaskFactory(status=TaskStatus.IN_PROGRESS, locked_at=past(24 * 365)),
    ]


def test_expired_open_tasks_are_failed_with_one_system_history_row_each(expired):
    output = collect_failed()

    assert output.startswith("failed 2 expired task(s)")
    for task, old in zip(expired, ("pending", "in_progress"), strict=True):
        assert status_of(task) == TaskStatus.FAILED
        (row,) = TaskHistory.objects.filter(task=task, action=HistoryAction.STATUS_CHANGE)
        assert (row.from_value, row.to_value, row.performed_by) == (old, "failed", None)


@pytest.mark.parametrize(
    ("status", "locked_at", "active"),
    [
        (TaskStatus.PENDING, timedelta(hours=1), True),  # deadline still ahead
        (TaskStatus.IN_PROGRESS, timedelta(minutes=1), True),
        (TaskStatus.COMPLETED, -timedelta(hours=1), True),  # final states stay final
        (TaskStatus.FAILED, -timedelta(hours=1), True),
        (TaskStatus.PENDING, -timedelta(hours=1), False),  # soft-deleted
    ],
)
def test_other_tasks_are_left_alone(status, locked_at, active):
    task = TaskFactory(status=status, locked_at=timezone.now() + locked_at, active=active)

    assert collect_failed() == ""
    assert status_of(task) == status
    assert task.history.count() == 1


def test_a_dry_run_counts_and_changes_nothing(expired):
    output = collect_failed("--dry-run")

    assert output.startswith("would fail 2 expired task(s)")
    assert [status_of(task) for task in expired] == ["pending", "in_progress"]
    assert TaskHistory.objects.filter(action=HistoryAction.STATUS_CHANGE).count() == 0


def test_a_second_run_has_nothing_to_do_and_writes_nothing(expired):
    collect_failed()
    rows = TaskHistory.objects.count()

    assert collect_failed() == ""
    assert TaskHistory.objects.count() == rows


def test_small_batches_fail_everything_once(expired):
    more = TaskFactory.create_batch(3, locked_at=past())

    output = collect_failed("--batch-size", "2", "--verbosity", "2")

    assert "failed 5 expired task(s)" in output
    for task in [*expired, *more]:
        assert status_of(task) == TaskStatus.FAILED
        assert task.history.filter(action=HistoryAction.STATUS_CHANGE).count() == 1


def test_verbose_mode_reports_even_when_there_is_nothing_to_do():
    assert collect_failed("--verbosity", "2").startswith("failed 0 expired task(s)")


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        collect_failed("--batch-size", "0")


def test_a_dry_run_counts_the_drained_and_the_unanswered_cancels_a_run_then_does(settings):
    """The sweep also fails a drained node's running tasks and cancels the tasks whose
    cancel request went unanswered: its dry run said nothing of either, and a run that
    only cancelled printed nothing."""
    settings.CANCEL_GRACE_SECONDS = 60
    drained = NodeFactory()
    Cordon.objects.create(node=drained, reason="disk", drain_deadline=past())
    TaskFactory(assigned_node=drained, status=TaskStatus.IN_PROGRESS)
    unanswered = TaskFactory(
        status=TaskStatus.IN_PROGRESS, cancel_requested_at=past(), locked_at=past()
    )
    TaskFactory(status=TaskStatus.IN_PROGRESS, cancel_requested_at=timezone.now())  # in grace

    predicted = collect_failed("--dry-run")
    done = collect_failed()

    assert predicted.splitlines() == [
        predicted.splitlines()[0],
        "would cancel 1 task(s) whose cancel request went unanswered for CANCEL_GRACE_SECONDS=60",
    ]
    # The drained one, by its cause (it read "1 expired task(s)"); not the cancel.
    assert predicted.startswith("would fail 1 task(s) (drained: 1)")
    assert done.startswith("failed 1 task(s) (drained: 1)")
    assert done.splitlines()[1].startswith("cancelled 1 task(s) whose cancel request")
    assert status_of(unanswered) == TaskStatus.CANCELLED


def test_a_run_that_only_cancels_says_so_and_logs_it(settings, caplog):
    TaskFactory(status=TaskStatus.IN_PROGRESS, cancel_requested_at=past())

    with caplog.at_level("INFO", logger="taskmgmt.sweep"):
        output = collect_failed()

    assert output.startswith("cancelled 1 task(s) whose cancel request went unanswered")
    (record,) = [r for r in caplog.records if r.getMessage() == "sweep finished"]
    assert (record.levelname, record.cancelled_count, record.failed_count) == ("INFO", 1, 0)


@pytest.mark.parametrize("failover", ["off", "reassign"])
def test_a_dry_run_counts_the_moves_a_drains_deadline_would_make(settings, caplog, failover):
    """At a drain's deadline a run fails the node's running tasks (cause drained) and
    moves them, and moves its pending ones, where some node may take them: the dry run
    counted none of those moves. It asks the same placement, and changes nothing."""
    settings.FAILOVER = failover
    drained, other = NodeFactory(), NodeFactory()
    User.objects.filter(pk__in=[drained.pk, other.pk]).update(last_seen=timezone.now())
    Cordon.objects.create(node=drained, reason="disk", drain_deadline=past())
    gpu = {"gpu": "true"}  # no other node has it
    for status, selector in [("in_progress", None), ("pending", None), ("in_progress", gpu)]:
        TaskFactory(assigned_node=drained, status=status, attempts=1, node_selector=selector)
    TaskFactory(assigned_node=drained, node_selector=gpu)  # stays, as at the drain
    TaskFactory(assigned_node=drained, locked_at=past())  # expires first: failed, not moved
    caplog.set_level(logging.INFO, logger="taskmgmt.sweep")

    predicted = collect_failed("--dry-run").splitlines()
    assert TaskHistory.objects.exclude(action=HistoryAction.INITIAL_ASSIGN).count() == 0
    assert not SweepRun.objects.exists()
    done = collect_failed().splitlines()

    if failover == "off":
        # Two of the three a drain's (they read "3 expired task(s)").
        assert predicted[0].startswith("would fail 3 task(s) (deadline: 1, drained: 2) in ")
        assert done[0].startswith("failed 3 task(s) (deadline: 1, drained: 2) in ")
        assert done[1:] == ["moved 2 task(s) off drained node(s)"]
    else:
        assert predicted[0] == (
            "would fail 3 task(s) (deadline: 1, drained: 2); 0 open task(s) of down nodes to"
            " fail over"
        )
        # It read "(deadline or node lost)": no node was lost.
        assert done[0].startswith("failed 3 task(s) (deadline: 1, drained: 2), reassigned 2 in ")
    assert predicted[1:] == ["would move 2 task(s) off drained node(s)"]
    (dry, _) = [r for r in caplog.records if r.getMessage() == "sweep finished"]
    assert (dry.dry_run, dry.failed_count, dry.reassigned_count) == (True, 3, 2)
    run = SweepRun.objects.get()
    assert (run.failed_count, run.reassigned_count) == (3, 2)


def test_a_dry_runs_drain_count_costs_the_same_queries_for_few_tasks_or_many(settings):
    settings.FAILOVER = "reassign"
    drained, other = NodeFactory(), NodeFactory()
    User.objects.filter(pk__in=[drained.pk, other.pk]).update(last_seen=timezone.now())
    Cordon.objects.create(node=drained, reason="disk", drain_deadline=past())
    TaskFactory.create_batch(2, assigned_node=drained)
    with CaptureQueriesContext(connection) as few:
        assert collect_failed("--dry-run").endswith("would move 2 task(s) off drained node(s)\n")
    TaskFactory.create_batch(30, assigned_node=drained, status=TaskStatus.IN_PROGRESS)
    with CaptureQueriesContext(connection) as many:
        assert collect_failed("--dry-run").endswith("would move 32 task(s) off drained node(s)\n")

    assert len(many) == len(few)
