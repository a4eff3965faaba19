"""A cancel racing a claim, a completion and the sweep on MariaDB: each task ends in
exactly one state with the matching history (SPEC, Control of the work, Bad input)."""

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.utils import timezone

from tasks.actor import acting_as
from tasks.models import (
    HistoryAction,
    InvalidStatusTransition,
    Task,
    TaskConflict,
    TaskHistory,
    TaskStatus,
)
from tasks.services import (
    task_cancel,
    task_change_status,
    task_claim,
    tasks_cancel_unanswered,
)
from tests.mariadb import ROW_LOCK_TESTS, WAIT, own_connection

pytestmark = ROW_LOCK_TESTS

PENDING, IN_PROGRESS = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
COMPLETED, CANCELLED = TaskStatus.COMPLETED, TaskStatus.CANCELLED


def make_tasks(node, count, *, status=PENDING, **fields):
    return Task.objects.bulk_create(
        Task(
            name=f"task {i}",
            details="-",
            assigned_node=node,
            status=status,
            attempts=0 if status == PENDING else 1,
            locked_at=timezone.now() + timedelta(hours=1),
            **fields,
        )
        for i in range(count)
    )


def status_rows(task):
    return list(
        TaskHistory.objects.filter(task=task, action=HistoryAction.STATUS_CHANGE)
        .order_by("created_at", "id")
        .values_list("from_value", "to_value")
    )


def race(*works):
    start = threading.Barrier(len(works))

    def started(work):
        def run():
            start.wait(WAIT)
            return work()

        return own_connection(run)

    with ThreadPoolExecutor(len(works)) as pool:
        futures = [pool.submit(started(work)) for work in works]
        return [future.result(timeout=60) for future in futures]


def cancel_all(tasks, admin):
    def work():
        with acting_as(admin):
            for task in tasks:
                with contextlib.suppress(TaskConflict):
                    task_cancel(task_id=task.pk)

    return work


def test_a_cancel_racing_claims_cancels_or_asks_each_task_and_no_task_is_both(node, admin_user):
    tasks = make_tasks(node, 60)

    def claim_all():
        claimed = []
        while (task := task_claim(node=node)) is not None:
            claimed.append(task.pk)
        return claimed

    claimed, _ = race(claim_all, cancel_all(tasks, admin_user))

    for task in tasks:
        task.refresh_from_db()
        if task.pk in claimed:  # claimed first: then a cancel request stands on it
            assert task.status == IN_PROGRESS and task.cancel_requested_at is not None
            assert status_rows(task) == [(PENDING, IN_PROGRESS)]
        else:
            assert task.status == CANCELLED
            assert status_rows(task) == [(PENDING, CANCELLED)]
        requests = TaskHistory.objects.filter(task=task, action=HistoryAction.CANCEL_REQUEST)
        assert requests.count() == 1


def test_a_completion_racing_the_cancel_sweep_leaves_one_final_state(node):
    long_ago = timezone.now() - timedelta(hours=1)
    tasks = make_tasks(node, 100, status=IN_PROGRESS, cancel_requested_at=long_ago)

    def complete_all():
        outcomes = {}
        with acting_as(node):
            for task in tasks:
                try:
                    task_change_status(task_id=task.pk, node=node, status=COMPLETED)
                    outcomes[task.pk] = COMPLETED
                except InvalidStatusTransition:
                    outcomes[task.pk] = CANCELLED
        return outcomes

    outcomes, swept = race(complete_all, lambda: tasks_cancel_unanswered(batch_size=5))

    assert swept == list(outcomes.values()).count(CANCELLED)
    for task in tasks:
        task.refresh_from_db()
        assert task.status == outcomes[task.pk]
        assert status_rows(task) == [(IN_PROGRESS, task.status)]
