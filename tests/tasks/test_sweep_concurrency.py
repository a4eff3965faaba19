"""The sweep beside other writers on MariaDB: another sweep, a node changing its task.

Each side runs in its own thread with its own connection, in real transactions.
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from tasks.actor import acting_as
from tasks.models import HistoryAction, InvalidStatusTransition, Task, TaskHistory, TaskStatus
from tasks.services import task_change_status, tasks_expire
from tests.mariadb import ROW_LOCK_TESTS, WAIT, own_connection, wait_until_blocked

pytestmark = ROW_LOCK_TESTS

IN_PROGRESS, COMPLETED, FAILED = TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED, TaskStatus.FAILED


def make_tasks(node, count, *, deadline):
    return Task.objects.bulk_create(
        Task(
            name=f"task {i}",
            details="-",
            assigned_node=node,
            status=IN_PROGRESS,
            locked_at=deadline,
        )
        for i in range(count)
    )


def status_rows(task):
    return [
        (row.from_value, row.to_value, row.performed_by_id)
        for row in TaskHistory.objects.filter(task=task, action=HistoryAction.STATUS_CHANGE)
    ]


def test_two_sweeps_at_once_fail_each_task_once_with_one_row(node):
    tasks = make_tasks(node, 2000, deadline=timezone.now() - timedelta(hours=1))
    start = threading.Barrier(2)

    def sweep():
        start.wait(WAIT)
        return tasks_expire(batch_size=50)

    with ThreadPoolExecutor(2) as pool:
        sweeps = [pool.submit(own_connection(sweep)) for _ in range(2)]
        counts = [each.result(timeout=60) for each in sweeps]

    assert sum(counts) == len(tasks)
    assert Task.objects.filter(status=FAILED).count() == len(tasks)
    rows = TaskHistory.objects.filter(action=HistoryAction.STATUS_CHANGE)
    assert rows.count() == len(tasks)
    assert rows.values("task").distinct().count() == len(tasks)


def test_the_sweep_skips_a_task_a_node_is_completing_and_the_node_wins(node):
    deadline = timezone.now() + timedelta(hours=1)
    being_completed, *others = make_tasks(node, 5, deadline=deadline)
    completed, release = threading.Event(), threading.Event()

    def complete():
        with acting_as(node), transaction.atomic():
            task_change_status(task_id=being_completed.pk, node=node, status=COMPLETED)
            completed.set()
            release.wait(WAIT)

    with ThreadPoolExecutor(1) as pool:
        node_request = pool.submit(own_connection(complete))
        assert completed.wait(WAIT)
        after_deadline = deadline + timedelta(seconds=1)
        swept_while_locked = tasks_expire(batch_size=2, now=after_deadline)
        release.set()
        node_request.result(timeout=WAIT)

    assert swept_while_locked == len(others)
    assert tasks_expire(batch_size=2, now=after_deadline) == 0
    being_completed.refresh_from_db()
    assert being_completed.status == COMPLETED
    assert status_rows(being_completed) == [(IN_PROGRESS, COMPLETED, node.pk)]
    for task in others:
        assert status_rows(task) == [(IN_PROGRESS, FAILED, None)]


def test_a_node_completing_a_task_the_sweep_is_failing_is_refused_once_it_failed(node):
    deadline = timezone.now() + timedelta(hours=1)
    (task,) = make_tasks(node, 1, deadline=deadline)
    swept, release = threading.Event(), threading.Event()

    def sweep_and_hold_the_batch_open():
        with transaction.atomic():
            count = tasks_expire(batch_size=10, now=deadline + timedelta(seconds=1))
            swept.set()
            release.wait(WAIT)
        return count

    def complete():
        with acting_as(node):
            task_change_status(task_id=task.pk, node=node, status=COMPLETED)

    with ThreadPoolExecutor(2) as pool:
        sweeping = pool.submit(own_connection(sweep_and_hold_the_batch_open))
        assert swept.wait(WAIT)
        node_request = pool.submit(own_connection(complete))
        wait_until_blocked("%FOR UPDATE%")
        release.set()
        assert sweeping.result(timeout=WAIT) == 1
        with pytest.raises(InvalidStatusTransition):
            node_request.result(timeout=WAIT)

    task.refresh_from_db()
    assert task.status == FAILED
    assert status_rows(task) == [(IN_PROGRESS, FAILED, None)]


def test_a_sweep_racing_a_node_leaves_each_task_one_final_state_and_its_one_row(node):
    deadline = timezone.now() + timedelta(hours=1)
    tasks = make_tasks(node, 200, deadline=deadline)
    start = threading.Barrier(2)

    def complete_all():
        outcomes = {}
        start.wait(WAIT)
        with acting_as(node):
            for task in tasks:
                try:
                    task_change_status(task_id=task.pk, node=node, status=COMPLETED)
                    outcomes[task.pk] = COMPLETED
                except InvalidStatusTransition:
                    outcomes[task.pk] = FAILED
        return outcomes

    def sweep():
        start.wait(WAIT)
        return tasks_expire(batch_size=5, now=deadline + timedelta(seconds=1))

    with ThreadPoolExecutor(2) as pool:
        node_requests = pool.submit(own_connection(complete_all))
        sweeping = pool.submit(own_connection(sweep))
        outcomes, swept = node_requests.result(timeout=60), sweeping.result(timeout=60)

    assert swept == list(outcomes.values()).count(FAILED)
    for task in tasks:
        task.refresh_from_db()
        assert task.status == outcomes[task.pk]
        by = node.pk if task.status == COMPLETED else None
        assert status_rows(task) == [(IN_PROGRESS, task.status, by)]
