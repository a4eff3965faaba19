"""A flush of heartbeats beside transactions that hold nodes' rows, on MariaDB: it
never waits for a lock (so it is never part of a deadlock) and loses no beat."""

from datetime import timedelta

from django.utils import timezone

from nodes import heartbeats
from tasks.services import tasks_expire
from tests.factories import NodeFactory, TaskFactory
from tests.mariadb import ROW_LOCK_TESTS, timed, while_held
from tests.nodes.beats import beat, stored_last_seen

pytestmark = ROW_LOCK_TESTS


def test_a_flush_during_a_sweep_batch_skips_the_nodes_it_holds_and_writes_them_after(
    coalescing, client_for
):
    first, busy, free = NodeFactory.create_batch(3)
    beat(client_for(first))  # takes the flush lock: the next beats wait in Redis
    # An expiry batch share-locks the node row of every task it fails (the foreign
    # key's index holds the status) until it commits.
    TaskFactory(assigned_node=busy, locked_at=timezone.now() + timedelta(minutes=1))

    def expire():
        return tasks_expire(batch_size=10, now=timezone.now() + timedelta(hours=1))

    def beat_and_flush():
        seen = beat(client_for(busy)), beat(client_for(free))
        written, took = timed(heartbeats.flush)
        return seen, written, took, (stored_last_seen(busy), stored_last_seen(free))

    ((busy_seen, free_seen), written, took, during), _, expired = while_held(expire, beat_and_flush)

    assert during == (None, free_seen)
    assert expired == 1
    assert written == 1
    assert took < 1.0  # skipped, not waited for (the lock wait is 50 s)
    assert heartbeats.flush() == 1
    assert stored_last_seen(busy) == busy_seen
