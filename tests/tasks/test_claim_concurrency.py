"""Claims beside other writers on MariaDB: claims by the same node, failover, the
expiry sweep, an admin's reassignment. Each side runs in its own thread with its own
connection, in real transactions; every task ends in one state with matching history.
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.utils import timezone

from accounts.models import User
from tasks.actor import acting_as
from tasks.models import FailureCause, HistoryAction, Task, TaskHistory, TaskStatus
from tasks.services import task_assign, task_claim, tasks_expire, tasks_fail_over
from tests.factories import NodeFactory
from tests.mariadb import (
    ROW_LOCK_TESTS,
    WAIT,
    holding,
    own_connection,
    wait_until_blocked,
    while_held,
)

pytestmark = ROW_LOCK_TESTS

PENDING, IN_PROGRESS, FAILED = TaskStatus.PENDING, TaskStatus.IN_PROGRESS, TaskStatus.FAILED
# A claim that skips a locked row answers at once; one that waited would take the lock's time.
QUICK = 2.0


def make_tasks(node, count, *, hours=3):
    deadline = timezone.now() + timedelta(hours=hours)
    return Task.objects.bulk_create(
        Task(
            name=f"task {i}",
            details="-",
            assigned_node=node,
            locked_at=deadline + timedelta(seconds=i),  # claimed in this order
        )
        for i in range(count)
    )


def seen(node, seconds_ago):
    User.objects.filter(pk=node.pk).update(
        last_seen=timezone.now() - timedelta(seconds=seconds_ago)
    )


def claim_as(node):
    with acting_as(node):
        return task_claim(node=node)


def rows(task):
    return list(
        TaskHistory.objects.filter(task=task)
        .exclude(action=HistoryAction.INITIAL_ASSIGN)
        .order_by("created_at", "id")
        .values_list("action", "from_value", "to_value", "performed_by", "cause")
    )


def test_a_claim_passes_over_a_task_another_claim_holds_without_waiting(node):
    first, second = make_tasks(node, 2)

    def lock_first():
        return Task.objects.select_for_update().get(pk=first.pk)

    claimed, took, _ = while_held(lock_first, lambda: claim_as(node))

    assert claimed.pk == second.pk
    assert took < QUICK
    first.refresh_from_db()
    assert first.status == PENDING


def test_concurrent_claims_by_one_node_never_return_the_same_task(node):
    tasks = make_tasks(node, 40)
    start = threading.Barrier(4)

    def claim_until_none():
        start.wait(WAIT)
        claimed = []
        while (task := claim_as(node)) is not None:
            claimed.append(task.pk)
        return claimed

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(own_connection(claim_until_none)) for _ in range(4)]
        claimed = [pk for worker in workers for pk in worker.result(timeout=60)]

    assert sorted(claimed) == sorted(task.pk for task in tasks)
    assert Task.objects.filter(status=IN_PROGRESS, attempts=1).count() == 40
    history = TaskHistory.objects.filter(action=HistoryAction.STATUS_CHANGE)
    assert history.count() == 40
    assert history.values("task").distinct().count() == 40


def test_a_claim_during_failover_skips_the_locked_tasks_and_its_beat_does_not_wait(node):
    taker = NodeFactory()
    seen(node, 600)
    seen(taker, 1)
    tasks = make_tasks(node, 3)

    claimed, took, counts = while_held(
        lambda: tasks_fail_over(batch_size=10), lambda: claim_as(node)
    )

    assert claimed is None
    assert took < QUICK
    assert counts.reassigned == 3
    for task in tasks:
        task.refresh_from_db()
        assert (task.assigned_node_id, task.status) == (taker.pk, PENDING)
        assert rows(task) == [
            (HistoryAction.ASSIGNEE_CHANGE, str(node.pk), str(taker.pk), None, "node_lost")
        ]


def test_failover_leaves_a_task_a_claim_holds_and_the_claimer_is_alive_after(node):
    taker = NodeFactory()
    seen(node, 600)
    seen(taker, 1)
    (task,) = make_tasks(node, 1)
    started = timezone.now()

    def claim():
        return claim_as(node)

    during, took, claimed = while_held(claim, lambda: tasks_fail_over(batch_size=10, now=started))

    assert claimed.pk == task.pk
    assert took < QUICK
    assert during.reassigned == during.failed == 0
    # Its beat is committed now: the node is no longer down, so it keeps the task.
    after = tasks_fail_over(batch_size=10, now=started)
    assert after.reassigned == after.failed == 0
    task.refresh_from_db()
    assert (task.assigned_node_id, task.status, task.attempts) == (node.pk, IN_PROGRESS, 1)
    assert rows(task) == [(HistoryAction.STATUS_CHANGE, PENDING, IN_PROGRESS, node.pk, "")]


def test_claims_racing_failover_leave_each_task_one_state_with_its_history(node):
    taker = NodeFactory()
    seen(node, 600)
    seen(taker, 1)
    tasks = make_tasks(node, 60)
    started = timezone.now()
    start = threading.Barrier(2)

    def claim_all():
        start.wait(WAIT)
        while claim_as(node) is not None:
            pass

    def fail_over():
        start.wait(WAIT)
        return tasks_fail_over(batch_size=1, now=started)

    with ThreadPoolExecutor(2) as pool:
        claims = pool.submit(own_connection(claim_all))
        failover = pool.submit(own_connection(fail_over))
        claims.result(timeout=60)
        counts = failover.result(timeout=60)

    moved = 0
    for task in tasks:
        task.refresh_from_db()
        if task.assigned_node_id == taker.pk:
            moved += 1
            assert task.status == PENDING
            assert rows(task) == [
                (HistoryAction.ASSIGNEE_CHANGE, str(node.pk), str(taker.pk), None, "node_lost")
            ]
        elif task.status == IN_PROGRESS:
            assert (task.assigned_node_id, task.attempts) == (node.pk, 1)
            assert rows(task) == [(HistoryAction.STATUS_CHANGE, PENDING, IN_PROGRESS, node.pk, "")]
        else:
            # Held by failover when the last claim passed it over, then kept: the
            # claim's beat had made the node alive again.
            assert (task.assigned_node_id, task.status, task.attempts) == (node.pk, PENDING, 0)
            assert rows(task) == []
    assert moved == counts.reassigned
    assert counts.failed == 0


def test_a_claim_during_an_expiry_batch_finds_its_tasks_failed(node):
    tasks = make_tasks(node, 3)
    after_deadline = timezone.now() + timedelta(hours=4)

    run, held, release = holding(lambda: tasks_expire(batch_size=10, now=after_deadline))
    with ThreadPoolExecutor(2) as pool:
        sweep = pool.submit(own_connection(run))
        assert held.wait(WAIT)
        # On InnoDB a task's status UPDATE share-locks its node's row (the foreign key's
        # index holds the status), so this claim's beat waits for the batch to commit.
        claiming = pool.submit(own_connection(lambda: claim_as(node)))
        wait_until_blocked("UPDATE `accounts_user`%")
        release.set()
        assert sweep.result(timeout=WAIT) == 3
        claimed = claiming.result(timeout=WAIT)

    assert claimed is None
    for task in tasks:
        task.refresh_from_db()
        assert (task.status, task.failure_cause) == (FAILED, FailureCause.DEADLINE)
        assert rows(task) == [(HistoryAction.STATUS_CHANGE, PENDING, FAILED, None, "deadline")]


def test_a_claim_skips_a_task_an_admin_is_reassigning(node, admin_user):
    other = NodeFactory()
    (task,) = make_tasks(node, 1)

    def reassign():
        with acting_as(admin_user):
            return task_assign(task_id=task.pk, node=other)

    claimed, took, _ = while_held(reassign, lambda: claim_as(node))

    assert claimed is None
    assert took < QUICK
    task.refresh_from_db()
    assert (task.assigned_node_id, task.status, task.attempts) == (other.pk, PENDING, 0)
    assert claim_as(node) is None
    assert claim_as(other).pk == task.pk


def test_two_failovers_at_once_move_each_task_once_with_one_history(node):
    takers = NodeFactory.create_batch(3)
    seen(node, 600)
    for taker in takers:
        seen(taker, 1)
    tasks = make_tasks(node, 300)
    Task.objects.filter(pk__in=[t.pk for t in tasks[::2]]).update(status=IN_PROGRESS, attempts=1)
    started = timezone.now()
    start = threading.Barrier(2)

    def fail_over():
        start.wait(WAIT)
        return tasks_fail_over(batch_size=20, now=started)

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(own_connection(fail_over)) for _ in range(2)]
        counts = [run.result(timeout=60) for run in runs]
    # A row one run skipped (the other held it) behind its own batch is left to the
    # next run, as for the sweep: a third, after both, takes whatever they left.
    counts.append(tasks_fail_over(batch_size=20, now=started))

    assert sum(c.reassigned for c in counts) == 300
    assert sum(c.failed for c in counts) == 150
    assert not Task.objects.filter(assigned_node=node).exists()
    assert Task.objects.filter(status=PENDING).count() == 300
    moves = TaskHistory.objects.filter(action=HistoryAction.ASSIGNEE_CHANGE, cause="node_lost")
    assert moves.count() == moves.values("task").distinct().count() == 300
    failures = TaskHistory.objects.filter(action=HistoryAction.STATUS_CHANGE, to_value=FAILED)
    assert failures.count() == failures.values("task").distinct().count() == 150
    loads = sorted(Task.objects.filter(assigned_node=t).count() for t in takers)
    assert loads[-1] - loads[0] <= 20  # each run balances its own batches
