"""Heartbeats kept in Redis and written to last_seen in batches.

Every test runs against the machine's real Redis (a database of its own) and
the real database; the flush interval is set long (the `coalescing` fixture),
so which beat flushes is decided by the test, not by the clock.
"""

import logging
from datetime import datetime, timedelta
from io import StringIO

import pytest
import redis
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from nodes import heartbeats
from nodes.models import Liveness, Node
from tasks.models import FailureCause, HistoryAction, Task, TaskHistory, TaskStatus
from tasks.services import FailoverCounts, tasks_fail_over
from tests.factories import AdminFactory, NodeFactory, TaskFactory
from tests.nodes.beats import beat, stored_last_seen
from tests.redis_server import redis_cache, unreachable_redis_url

pytestmark = pytest.mark.django_db

METRICS_TOKEN = "scrape-heartbeats-0123456789"


def user_updates(queries) -> list[str]:
    table = User._meta.db_table
    return [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and table in q["sql"]]


def pending_in_redis(redis_url) -> int:
    server = redis.Redis.from_url(redis_url)
    return sum(server.hlen(key) for key in server.keys("*heartbeats:pending"))


def test_the_first_beat_flushes_and_the_next_ones_wait_in_redis(coalescing, redis_url, client_for):
    first, *others = NodeFactory.create_batch(4)

    first_seen = beat(client_for(first))
    with CaptureQueriesContext(connection) as queries:
        for node in others:
            beat(client_for(node))

    assert stored_last_seen(first) == first_seen
    assert user_updates(queries) == []
    assert [stored_last_seen(node) for node in others] == [None] * 3
    assert pending_in_redis(redis_url) == 3


def test_a_flush_writes_every_pending_beat_a_hundred_rows_per_update(coalescing, client_for):
    nodes = NodeFactory.create_batch(251)
    beat(client_for(nodes[0]))  # takes the flush lock for the rest
    answered = {node.pk: beat(client_for(node)) for node in nodes[1:]}

    with CaptureQueriesContext(connection) as queries:
        assert heartbeats.flush() == 250

    assert len(user_updates(queries)) == 3
    stored = dict(User.objects.filter(pk__in=answered).values_list("pk", "last_seen"))
    assert stored == answered
    assert heartbeats.flush() == 0


def test_a_beat_after_the_flush_interval_flushes_the_waiting_ones(
    coalescing, redis_url, client_for
):
    coalescing.NODE_HEARTBEAT_FLUSH_SECONDS = 0.2
    early, waiting, late = NodeFactory.create_batch(3)
    beat(client_for(early))
    waiting_seen = beat(client_for(waiting))
    assert stored_last_seen(waiting) is None

    redis.Redis.from_url(redis_url).delete(heartbeats._key("flush"))  # the interval is over
    beat(client_for(late))

    assert stored_last_seen(waiting) == waiting_seen
    assert pending_in_redis(redis_url) == 0


def test_a_stamp_never_moves_back(coalescing, node):
    now = timezone.now()
    User.objects.filter(pk=node.pk).update(last_seen=now)

    heartbeats.record(node_id=node.pk, now=now + timedelta(seconds=2))
    heartbeats.record(node_id=node.pk, now=now + timedelta(seconds=1))  # a slower request
    heartbeats.flush()
    assert stored_last_seen(node) == now + timedelta(seconds=2)

    heartbeats._merge(0, {str(node.pk): now - timedelta(seconds=5)})  # an older flush's
    heartbeats.flush()
    assert stored_last_seen(node) == now + timedelta(seconds=2)


def test_a_claim_is_a_beat_that_waits_in_redis_too(coalescing, redis_url, client_for):
    first, node = NodeFactory.create_batch(2)
    beat(client_for(first))
    TaskFactory(assigned_node=node)

    with CaptureQueriesContext(connection) as queries:
        response = client_for(node).post("/api/tasks/claim")

    assert response.status_code == 200
    assert user_updates(queries) == []
    assert pending_in_redis(redis_url) == 1
    assert heartbeats.flush() == 1
    assert stored_last_seen(node) is not None


def admin_reads(path: str):
    def read(client_for, node):
        return client_for(AdminFactory()).get(path)

    return read


def admin_page(name: str, node_arg=False):
    def read(client_for, node):
        client = Client()
        client.force_login(AdminFactory())
        return client.get(reverse(name, args=[node.pk] if node_arg else []))

    return read


def metrics(client_for, node):
    return Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")


@pytest.mark.parametrize(
    "read",
    [
        admin_reads("/api/nodes"),
        admin_page("admin:index"),  # the dashboard
        admin_page("admin:accounts_user_changelist"),
        admin_page("admin:accounts_user_change", node_arg=True),
        admin_page("admin:node", node_arg=True),
        metrics,
    ],
    ids=["api-nodes", "dashboard", "user-changelist", "user-change", "node-page", "metrics"],
)
def test_every_reader_of_liveness_sees_the_beats_still_in_redis(coalescing, client_for, read):
    coalescing.DASHBOARD_CACHE_SECONDS = 0
    coalescing.METRICS_TOKEN = METRICS_TOKEN
    first, node = NodeFactory.create_batch(2)
    beat(client_for(first))
    User.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(hours=1))
    seen = beat(client_for(node))

    response = read(client_for, node)

    assert response.status_code == 200
    assert stored_last_seen(node) == seen
    assert Node.objects.with_liveness().get(pk=node.pk).liveness == Liveness.ALIVE


def test_the_sweep_keeps_the_tasks_of_a_node_whose_beat_waits_in_redis(coalescing, client_for):
    coalescing.FAILOVER = "reassign"
    heir, node, dead = NodeFactory.create_batch(3)
    beat(client_for(heir))  # flushed at once: alive, and the least loaded
    an_hour_ago = timezone.now() - timedelta(hours=1)
    User.objects.filter(pk__in=[node.pk, dead.pk]).update(last_seen=an_hour_ago)
    beat(client_for(node))  # back just now: only Redis knows
    kept = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)
    lost = TaskFactory(assigned_node=dead, status=TaskStatus.IN_PROGRESS)

    call_command("collect_failed", verbosity=0)  # as cron runs it

    kept.refresh_from_db()
    lost.refresh_from_db()
    assert (kept.status, kept.assigned_node_id) == (TaskStatus.IN_PROGRESS, node.pk)
    assert not TaskHistory.objects.filter(task=kept).exclude(action=HistoryAction.INITIAL_ASSIGN)
    assert (lost.status, lost.assigned_node_id) == (TaskStatus.PENDING, heir.pk)
    assert TaskHistory.objects.filter(task=lost, cause=FailureCause.NODE_LOST).count() == 3


def test_a_dry_run_counts_no_task_of_a_node_whose_beat_waits_in_redis(coalescing, client_for):
    coalescing.FAILOVER = "reassign"
    first, node, dead = NodeFactory.create_batch(3)
    beat(client_for(first))
    an_hour_ago = timezone.now() - timedelta(hours=1)
    User.objects.filter(pk__in=[node.pk, dead.pk]).update(last_seen=an_hour_ago)
    beat(client_for(node))
    for owner in (node, dead):
        TaskFactory(assigned_node=owner, status=TaskStatus.IN_PROGRESS)
    out = StringIO()

    call_command("collect_failed", "--dry-run", stdout=out)

    assert out.getvalue().endswith("; 1 open task(s) of down nodes to fail over\n")


def test_a_beat_during_a_failover_run_keeps_the_rest_of_that_nodes_tasks(coalescing, client_for):
    heir, node = NodeFactory.create_batch(2)
    beat(client_for(heir))
    User.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(hours=1))
    tasks = TaskFactory.create_batch(2, assigned_node=node)

    counts = tasks_fail_over(batch_size=1, on_batch=lambda failed: beat(client_for(node)))

    assert counts.reassigned == 1
    owners = Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("assigned_node")
    assert sorted(owners) == sorted([(heir.pk,), (node.pk,)])


def test_a_beat_answered_between_the_sweeps_flush_and_its_locks_keeps_the_nodes_tasks(
    coalescing, client_for, monkeypatch
):
    heir, node = NodeFactory.create_batch(2)
    beat(client_for(heir))  # takes the flush lock: the next beats wait in Redis
    User.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(hours=1))
    task = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)
    flush, flushes = heartbeats.flush, []

    def flush_then_the_node_beats():
        flushed = flush()
        flushes.append(flushed)
        if len(flushes) == 2:  # the flush before the batch: the beat lands just after it
            beat(client_for(node))
        return flushed

    monkeypatch.setattr(heartbeats, "flush", flush_then_the_node_beats)
    counts = tasks_fail_over(batch_size=100)

    assert len(flushes) >= 2
    assert counts == FailoverCounts()
    task.refresh_from_db()
    assert (task.status, task.assigned_node_id) == (TaskStatus.IN_PROGRESS, node.pk)


def test_a_redis_that_lost_its_data_leaves_the_last_flushed_beat(
    coalescing, redis_url, client_for, admin_client
):
    node = NodeFactory()
    flushed = beat(client_for(node))
    beat(client_for(node))  # waits in Redis

    redis.Redis.from_url(redis_url).flushdb()  # a Redis restart keeps nothing

    listed = admin_client.get("/api/nodes").json()["nodes"]
    assert [(datetime.fromisoformat(n["lastSeen"]), n["liveness"]) for n in listed] == [
        (flushed, Liveness.ALIVE)
    ]


def test_without_redis_a_beat_is_written_straight_to_the_database(settings, client_for, caplog):
    settings.CACHES = redis_cache(unreachable_redis_url())
    settings.RATELIMIT_ENABLE = False
    node = NodeFactory()

    with caplog.at_level(logging.WARNING, logger="taskmgmt.heartbeats"):
        seen = beat(client_for(node))

    assert stored_last_seen(node) == seen
    assert [r.event for r in caplog.records] == ["heartbeat_cache_unavailable"]
    assert heartbeats.flush() == 0  # and a reader goes on with the database's


def test_the_per_process_cache_writes_every_beat_at_once(node_client, node):
    assert not heartbeats.coalesced()

    with CaptureQueriesContext(connection) as queries:
        seen = beat(node_client)

    assert len(user_updates(queries)) == 1
    assert stored_last_seen(node) == seen
