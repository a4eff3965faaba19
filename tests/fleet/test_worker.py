"""The worker (the installed `taskmgmt-worker`) on its own, as a real process against a
live server: a clean stop, a failing work function, token refresh, rate limits."""

import logging
import signal
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import AccessToken

from tasks.models import FailureCause, Task, TaskStatus
from tests.factories import PASSWORD, NodeFactory, TaskFactory
from tests.fleet.harness import Fleet, assert_every_history_consistent, in_progress_of, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.mysql,
    pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="a live server beside the test's writes needs MariaDB: SQLite has one writer",
    ),
    pytest.mark.process,
]


@pytest.fixture
def server_settings(settings):
    settings.NODE_HEARTBEAT_SECONDS = 1
    settings.RATELIMIT_API = "100000/m"
    settings.RATELIMIT_LOGIN_USER = settings.RATELIMIT_LOGIN_IP = "10000/m"
    return settings


def fleet_of(live_server, tmp_path, work_seconds: float) -> Fleet:
    return Fleet(live_server.url, tmp_path, PASSWORD, work_seconds)


def tasks_of(node, count: int) -> list[Task]:
    deadline = timezone.now() + timedelta(hours=1)
    return TaskFactory.create_batch(count, assigned_node=node, locked_at=deadline)


def events(worker) -> list[str]:
    return [event["event"] for event in worker.events()]


def test_sigterm_mid_task_finishes_and_reports_it_claims_no_more_and_exits_0(
    live_server, server_settings, tmp_path
):
    node = NodeFactory()
    tasks_of(node, 2)
    fleet = fleet_of(live_server, tmp_path, work_seconds=1.5)
    worker = fleet.start(node)
    try:
        (started,) = wait_for(lambda: in_progress_of(node), 20, "no task started")
        worker.signal(signal.SIGTERM)
        assert worker.exit_status(timeout=15) == 0, fleet.logs()
    finally:
        fleet.abort()

    statuses = dict(Task.objects.values_list("pk", "status"))
    assert statuses.pop(started) == TaskStatus.COMPLETED
    assert list(statuses.values()) == [TaskStatus.PENDING]
    seen = events(worker)
    assert seen.index("stopping") < seen.index("completed") < seen.index("stopped")


def test_a_raising_work_function_reports_failed_with_its_reason(
    live_server, server_settings, tmp_path
):
    node = NodeFactory()
    (task,) = tasks_of(node, 1)
    (tmp_path / "flaky.py").write_text(
        "def run(task, cancelled):\n    raise RuntimeError('disk full on ' + task['taskName'])\n"
    )
    fleet = fleet_of(live_server, tmp_path, work_seconds=0)
    worker = fleet.start(node, "--work", "flaky:run", PYTHONPATH=str(tmp_path))
    try:
        wait_for(lambda: "failed" in events(worker), 20, f"no failure reported\n{fleet.logs()}")
    finally:
        fleet.abort()

    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.failure_cause == FailureCause.NODE_REPORTED
    assert task.failure_reason == f"RuntimeError: disk full on {task.name}"


def test_the_token_is_refreshed_before_it_expires_so_no_request_gets_a_401(
    live_server, server_settings, tmp_path, monkeypatch, caplog
):
    # simplejwt reads ACCESS_TOKEN_LIFETIME once, into this class attribute: 5 s
    # tokens here stand for JWT_ACCESS_MINUTES in a test that lasts seconds.
    monkeypatch.setattr(AccessToken, "lifetime", timedelta(seconds=5))
    node = NodeFactory()
    tasks_of(node, 40)
    fleet = fleet_of(live_server, tmp_path, work_seconds=0.25)
    worker = fleet.start(node)
    with caplog.at_level(logging.INFO, logger="taskmgmt.request"):
        try:
            wait_for(
                lambda: events(worker).count("refreshed") >= 2,
                30,
                f"the worker never refreshed twice\n{fleet.logs()}",
                poll=0.2,
            )
            assert set(fleet.stop().values()) == {0}
        finally:
            fleet.abort()

    answers = [record.status for record in caplog.records if record.name == "taskmgmt.request"]
    assert 401 not in answers
    assert answers.count(200) > 10
    assert BlacklistedToken.objects.count() >= 2  # each refresh spent its refresh token
    assert_every_history_consistent(Task.objects.all())


def test_rate_limited_requests_wait_retry_after_and_each_task_is_done_once(
    live_server, server_settings, tmp_path
):
    server_settings.RATELIMIT_API = "4/s"
    node = NodeFactory()
    tasks = tasks_of(node, 6)
    fleet = fleet_of(live_server, tmp_path, work_seconds=0)
    worker = fleet.start(node)
    try:
        wait_for(
            lambda: Task.objects.filter(status=TaskStatus.COMPLETED).count() == len(tasks),
            40,
            f"the tasks were not all completed\n{fleet.logs()}",
            poll=0.2,
        )
        assert set(fleet.stop().values()) == {0}
    finally:
        fleet.abort()

    retries = [event for event in worker.events() if event["event"] == "retry"]
    assert retries, "the worker was never rate limited"
    assert {event["status"] for event in retries} == {429}
    assert all(event["pause"] >= 1 for event in retries)  # Retry-After, whole seconds
    assert_every_history_consistent(Task.objects.all())
    assert fleet.completions_reported() == {str(task.pk): 1 for task in tasks}


def test_an_orphaned_task_is_resumed_once_and_not_again_after_its_report_is_refused(
    live_server, server_settings, tmp_path
):
    node = NodeFactory()
    resumable, expired = TaskFactory.create_batch(2, assigned_node=node)
    Task.objects.filter(pk=resumable.pk).update(status=TaskStatus.IN_PROGRESS)
    Task.objects.filter(pk=expired.pk).update(
        status=TaskStatus.IN_PROGRESS, locked_at=timezone.now() - timedelta(minutes=1)
    )
    fleet = fleet_of(live_server, tmp_path, work_seconds=0)
    worker = fleet.start(node)
    try:
        wait_for(lambda: "report_refused" in events(worker), 20, f"no refusal\n{fleet.logs()}")
        time.sleep(2)  # ten idle polls, each of which would have resumed it again
    finally:
        fleet.abort()

    resumed = [e["task"] for e in worker.events() if e["event"] == "resumed"]
    assert sorted(resumed) == sorted([str(resumable.pk), str(expired.pk)])
    assert Task.objects.get(pk=resumable.pk).status == TaskStatus.COMPLETED
    assert Task.objects.get(pk=expired.pk).status == TaskStatus.IN_PROGRESS  # the sweep's now


def test_two_processes_of_one_node_never_work_on_the_same_task(
    live_server, server_settings, tmp_path
):
    # Three tasks of 1.5 s for two processes: whichever finishes its first task second
    # finds nothing pending while the other works on the third, and looks for tasks in
    # progress that no one works on (resume): the other's must not be among them.
    node = NodeFactory()
    tasks = tasks_of(node, 3)
    fleet = fleet_of(live_server, tmp_path, work_seconds=1.5)
    first, second = fleet.start(node), fleet.start(node)
    try:
        wait_for(
            lambda: Task.objects.filter(status=TaskStatus.COMPLETED).count() == len(tasks),
            40,
            f"the tasks were not all completed\n{fleet.logs()}",
            poll=0.2,
        )
        time.sleep(1)  # idle polls, each of which would resume a task still in progress
    finally:
        fleet.abort()

    runs = Counter(
        event["task"]
        for worker in (first, second)
        for event in worker.events()
        if event["event"] == "working"
    )
    assert runs == {str(task.pk): 1 for task in tasks}, fleet.logs()
    assert fleet.completions_reported() == {str(task.pk): 1 for task in tasks}
    assert_every_history_consistent(Task.objects.all())


def test_the_task_of_a_killed_process_is_taken_up_by_another_process_of_its_node(
    live_server, server_settings, tmp_path
):
    node = NodeFactory()
    tasks = tasks_of(node, 2)
    fleet = fleet_of(live_server, tmp_path, work_seconds=2)
    first, second = fleet.start(node), fleet.start(node)
    try:
        wait_for(lambda: len(in_progress_of(node)) == 2, 20, f"both not started\n{fleet.logs()}")
        (orphan,) = [e["task"] for e in first.events() if e["event"] == "working"]
        first.kill()  # SIGKILL mid-task: its lock goes with it
        wait_for(
            lambda: Task.objects.filter(status=TaskStatus.COMPLETED).count() == len(tasks),
            30,
            f"the killed process's task was not taken up\n{fleet.logs()}",
            poll=0.2,
        )
    finally:
        fleet.abort()

    assert [e["task"] for e in second.events() if e["event"] == "resumed"] == [orphan]
    assert_every_history_consistent(Task.objects.all())
