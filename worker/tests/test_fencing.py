"""The worker and attempts as fencing tokens, against a live taskmgmt server: a worker
whose attempt went stale (the task was started again meanwhile, on the same node, by
another process) drops its work and leaves the new attempt alone."""

import threading

import pytest
from taskmgmt_worker.client import Api
from taskmgmt_worker.worker import Worker

from tasks.models import Task, TaskStatus
from tasks.services import task_assign, task_claim
from tests.factories import PASSWORD, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _server(settings):
    settings.NODE_HEARTBEAT_SECONDS = 1
    settings.RATELIMIT_API = "100000/m"
    settings.RATELIMIT_LOGIN_USER = settings.RATELIMIT_LOGIN_IP = "10000/m"


class Watched(Worker):
    """A worker that says when it has looked for its node's tasks in progress."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.looked = threading.Event()

    def resume(self) -> None:
        super().resume()
        self.looked.set()


def test_a_worker_whose_attempt_went_stale_does_not_take_up_the_new_one(live_server):
    node = NodeFactory()
    task = TaskFactory(assigned_node=node)
    started, moved = threading.Event(), threading.Event()
    attempts = []

    def work(task, context):
        attempts.append(context.attempt)
        if context.attempt != 1:
            return {"attempt": context.attempt}  # the new attempt, taken up: the bug
        started.set()
        assert moved.wait(30)
        context.progress(50, "half way")  # refused: the task is on attempt 2 now
        if context.cancelled.wait(30):
            raise RuntimeError("stopped")

    worker = Watched(
        Api(live_server.url, node.email, PASSWORD, threading.Event()),
        work,
        idle_seconds=0.1,
        max_tasks=None,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the first attempt never started"
        # Failed (as failover would), given back to the node, and started again by
        # another of its processes: attempt 2.
        Task.objects.filter(pk=task.pk).update(status=TaskStatus.FAILED)
        task_assign(task_id=task.pk, node=node)
        assert task_claim(node=node).attempts == 2
        moved.set()
        # It drops attempt 1, finds nothing to claim, and looks at the node's tasks in
        # progress, where attempt 2 is.
        assert worker.looked.wait(30), "the worker never looked for work again"
    finally:
        worker.stop.set()
        thread.join(30)

    assert attempts == [1]
    task.refresh_from_db()
    assert (task.status, task.attempts, task.result) == (TaskStatus.IN_PROGRESS, 2, None)
