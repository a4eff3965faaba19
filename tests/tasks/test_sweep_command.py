"""`manage.py collect_failed` for the operator: progress, log line, exit codes.

What it fails and leaves is in test_collect_failed.py and test_sweep.py.
"""

import json
import logging
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from nodes.models import Cordon
from nodes.services import node_cordon
from taskmgmt.logging import JsonFormatter
from tasks.models import FailureCause, SweepRun, Task, TaskStatus
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db


class TerminalOutput(StringIO):
    """Captures what the command writes, telling it that it writes to a terminal."""

    def isatty(self):
        return True


def make_expired(node, count):
    Task.objects.bulk_create(
        Task(
            name=f"task {i}",
            details="-",
            assigned_node=node,
            locked_at=timezone.now() - timedelta(hours=1),
        )
        for i in range(count)
    )


def collect_failed(*args, out=None):
    out = out or StringIO()
    call_command("collect_failed", *args, stdout=out)
    return out.getvalue()


def test_on_a_terminal_a_run_of_several_batches_shows_one_progress_line_then_the_count(node):
    make_expired(node, 7)

    output = collect_failed("--batch-size", "3", out=TerminalOutput())

    assert re.fullmatch(
        r"\rfailed 6 so far…\rfailed 7 so far…\nfailed 7 expired task\(s\) in \d+\.\d\ds\n",
        output,
    )


def test_a_run_of_one_batch_on_a_terminal_prints_only_the_count(node):
    make_expired(node, 3)

    output = collect_failed("--batch-size", "3", out=TerminalOutput())

    assert re.fullmatch(r"failed 3 expired task\(s\) in \d+\.\d\ds\n", output)


def test_without_a_terminal_there_is_no_progress_line(node):
    make_expired(node, 7)

    output = collect_failed("--batch-size", "3")

    assert re.fullmatch(r"failed 7 expired task\(s\) in \d+\.\d\ds\n", output)


def test_verbosity_2_prints_every_batch(node):
    make_expired(node, 7)

    output = collect_failed("--batch-size", "3", "-v", "2")

    assert output.splitlines()[:3] == [
        "batch: failed 3 (total 3)",
        "batch: failed 3 (total 6)",
        "batch: failed 1 (total 7)",
    ]
    assert output.splitlines()[3].startswith("failed 7 expired task(s) in ")


def test_verbosity_0_prints_nothing(node):
    make_expired(node, 7)

    assert collect_failed("--batch-size", "3", "-v", "0", out=TerminalOutput()) == ""
    assert Task.objects.filter(status="failed").count() == 7


@pytest.mark.parametrize("dry_run", [False, True])
def test_each_run_logs_one_structured_line(node, caplog, dry_run):
    make_expired(node, 4)
    caplog.set_level(logging.INFO, logger="taskmgmt.sweep")

    collect_failed("--batch-size", "3", *(["--dry-run"] if dry_run else []))

    (record,) = [record for record in caplog.records if record.name == "taskmgmt.sweep"]
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "sweep finished"
    assert (line["event"], line["failed_count"], line["dry_run"]) == ("sweep", 4, dry_run)
    assert line["batch_size"] == 3
    assert line["duration_ms"] >= 0


def test_a_batch_size_too_large_for_one_statement_is_refused():
    with pytest.raises(CommandError, match="at most 20000"):
        collect_failed("--batch-size", "20001")


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.process
def test_an_unreachable_database_exits_1_with_a_clear_message_and_a_log_line():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "taskmgmt.settings",
        "SECRET_KEY": "tests-only",
        "DATABASE_URL": f"mysql://root@127.0.0.1:{closed_port()}/taskmgmt",
    }

    result = subprocess.run(
        [sys.executable, settings.BASE_DIR / "manage.py", "collect_failed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert (
        "CommandError: The sweep stopped on a database error after failing 0 task(s):"
        in result.stderr
    )
    assert "Can't connect" in result.stderr
    logged = [
        json.loads(line)
        for line in result.stdout.splitlines() + result.stderr.splitlines()
        if line.startswith("{")
    ]
    assert [(line["message"], line["event"]) for line in logged] == [("sweep failed", "sweep")]


def test_a_run_with_nothing_to_do_prints_nothing_and_logs_below_info(node, caplog):
    caplog.set_level(logging.DEBUG, logger="taskmgmt.sweep")

    assert collect_failed() == ""

    (record,) = [record for record in caplog.records if record.name == "taskmgmt.sweep"]
    assert record.levelno == logging.DEBUG


def drained_past_its_deadline(node, *tasks):
    """`node` drained, `tasks` made on it after the drain, its deadline now passed."""
    other = NodeFactory()
    User.objects.filter(pk__in=[node.pk, other.pk]).update(last_seen=timezone.now())
    node_cordon(
        node_id=node.pk, reason="r", actor=None, drain_deadline=timezone.now() + timedelta(1)
    )
    for status in tasks:
        TaskFactory(assigned_node=node, status=status, attempts=int(status != "pending"))
    Cordon.objects.filter(node=node).update(drain_deadline=timezone.now() - timedelta(seconds=1))


def test_a_run_that_moves_a_drained_nodes_work_prints_and_logs_how_many(node, caplog, settings):
    """The moves at a drain's deadline are the run's too (SweepRun counts them): the
    line printed and the log line must not say "reassigned 0"."""
    settings.FAILOVER = "reassign"
    drained_past_its_deadline(node, TaskStatus.IN_PROGRESS, TaskStatus.PENDING)
    caplog.set_level(logging.INFO, logger="taskmgmt.sweep")

    out = collect_failed()

    assert "failed 1 task(s)" in out and "reassigned 2 " in out
    (record,) = [r for r in caplog.records if r.getMessage() == "sweep finished"]
    assert (record.failed_count, record.reassigned_count) == (1, 2)


def test_a_run_that_only_moves_a_drained_nodes_pending_work_is_not_idle(node, caplog):
    # FAILOVER=off (the tests' default): a drain's moves happen all the same.
    drained_past_its_deadline(node, TaskStatus.PENDING)
    caplog.set_level(logging.DEBUG, logger="taskmgmt.sweep")

    out = collect_failed()

    assert Task.objects.exclude(assigned_node=node).count() == 1
    assert "moved 1 task(s) off drained node(s)" in out
    (record,) = [r for r in caplog.records if r.getMessage() == "sweep finished"]
    assert (record.levelno, record.reassigned_count) == (logging.INFO, 1)


def test_a_drained_task_no_node_may_take_is_reported_failed_for_a_human_not_left(node):
    """A drained node's running task that no other node matches is failed for a human
    (cause drained): the run said nothing of it, whatever FAILOVER is."""
    drained_past_its_deadline(node)
    TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS, node_selector={"gpu": "a"})
    out, err = StringIO(), StringIO()

    call_command("collect_failed", stdout=out, stderr=err)

    # A drain failed it, not its deadline (the line said "1 expired task(s)").
    assert out.getvalue().startswith("failed 1 task(s) (drained: 1) in ")
    assert err.getvalue().startswith("1 task(s) failed for a human, counted among the failed: ")
    assert "left in place" not in out.getvalue() + err.getvalue()
    task = Task.objects.get(assigned_node=node)
    assert (task.status, task.failure_cause) == (TaskStatus.FAILED, FailureCause.DRAINED)
    # Its reason says which step failed it, as its cause does (it read "failover: …").
    assert task.failure_reason == "drain: no alive schedulable node matches its nodeSelector"


@pytest.mark.parametrize("failover", ["off", "reassign"])
def test_a_drained_nodes_stuck_tasks_are_retried_quietly_and_move_once_they_may(
    node, caplog, settings, failover
):
    """After a drain's deadline every run tries again to move the pending tasks that had
    nowhere to go (a node may have become free), but a run that moves none did no work:
    nothing printed, a DEBUG line, nothing counted. With FAILOVER=reassign and the node
    down (off for its maintenance), every run reported them "left in place" again."""
    settings.FAILOVER, settings.NODE_DOWN_AFTER = failover, 30
    other = NodeFactory()
    Cordon.objects.create(node=other, reason="full")  # nowhere to go, for now
    Cordon.objects.create(node=node, reason="disk", drain_deadline=timezone.now())
    stuck = TaskFactory.create_batch(2, assigned_node=node)
    User.objects.filter(pk=other.pk).update(last_seen=timezone.now())
    User.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(minutes=10))
    caplog.set_level(logging.DEBUG, logger="taskmgmt.sweep")

    for _ in range(3):
        out, err = StringIO(), StringIO()
        call_command("collect_failed", stdout=out, stderr=err)
        assert (out.getvalue(), err.getvalue()) == ("", "")

    assert {r.levelno for r in caplog.records if r.name == "taskmgmt.sweep"} == {logging.DEBUG}
    assert not SweepRun.objects.filter(Q(failed_count__gt=0) | Q(reassigned_count__gt=0))
    assert Task.objects.filter(assigned_node=node, status=TaskStatus.PENDING).count() == 2
    # A node free again: the next run moves them, and says so.
    Cordon.objects.filter(node=other).delete()
    out = collect_failed()
    assert ("moved 2 task(s)" if failover == "off" else "reassigned 2 ") in out
    assert {Task.objects.get(pk=task.pk).assigned_node_id for task in stuck} == {other.pk}


def test_every_must_be_a_positive_number_of_seconds():
    with pytest.raises(CommandError, match="--every"):
        collect_failed("--every", "0")
