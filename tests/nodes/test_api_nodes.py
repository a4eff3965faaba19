"""POST /api/nodes/heartbeat and GET /api/nodes: liveness by the server's clock."""

import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from nodes.models import Liveness, MaintenanceWindow, Node
from nodes.serializers import HEARTBEAT_MAX_TASK_IDS
from tasks.models import TaskHistory, TaskStatus
from tests.api import assert_json_error
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS, COMPLETED, FAILED = (
    TaskStatus.PENDING,
    TaskStatus.IN_PROGRESS,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
)


def beat(client, **body):
    return client.post("/api/nodes/heartbeat", body, format="json")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_heartbeat_stamps_last_seen_with_the_server_clock(node_client, node, settings):
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 7, 25
    before = timezone.now()

    response = beat(node_client)

    after = timezone.now()
    assert response.status_code == 200, response.content
    body = response.json()
    node.refresh_from_db()
    assert before <= node.last_seen <= after
    assert parse(body["serverTime"]) == node.last_seen
    assert parse(body["leaseExpiresAt"]) == node.last_seen + timedelta(seconds=25)
    assert body["heartbeatSeconds"] == 7
    assert Node.objects.get(pk=node.pk).liveness() == Liveness.ALIVE


def test_a_heartbeat_ignores_a_clock_the_node_sends(node_client, node):
    response = beat(node_client, serverTime="2000-01-01T00:00:00Z", lastSeen="2000-01-01T00:00Z")

    assert response.status_code == 200
    node.refresh_from_db()
    assert node.last_seen > timezone.now() - timedelta(minutes=1)


def test_a_heartbeat_counts_only_the_pending_tasks_the_node_can_still_claim(
    node_client, node, other_node
):
    soon = timezone.now() + timedelta(hours=1)
    TaskFactory.create_batch(3, assigned_node=node, locked_at=soon)
    TaskFactory(assigned_node=node, locked_at=timezone.now() - timedelta(minutes=1))  # too late
    TaskFactory(assigned_node=node, active=False)
    TaskFactory(assigned_node=node, status=IN_PROGRESS)
    TaskFactory(assigned_node=other_node)

    assert beat(node_client).json()["pendingCount"] == 3


def test_a_heartbeat_names_the_tasks_taken_away_from_the_node(node_client, node, other_node):
    kept = TaskFactory(assigned_node=node, status=IN_PROGRESS)
    reassigned = TaskFactory(assigned_node=other_node, status=PENDING)
    failed = TaskFactory(assigned_node=node, status=FAILED)
    deleted = TaskFactory(assigned_node=node, status=IN_PROGRESS, active=False)
    unknown = uuid.uuid4()
    held = [kept, reassigned, failed, deleted]

    response = beat(node_client, taskIds=[str(t.pk) for t in held] + [str(unknown)])

    assert response.status_code == 200
    revoked = set(response.json()["revokedTaskIds"])
    assert revoked == {str(reassigned.pk), str(failed.pk), str(deleted.pk), str(unknown)}


def test_a_heartbeat_writes_no_history_and_costs_four_queries(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS)
    history_before = TaskHistory.objects.count()

    # The user (JWT), the one UPDATE, the pending count, the held tasks' lookup.
    with CaptureQueriesContext(connection) as queries:
        response = beat(node_client, taskIds=[str(task.pk)])

    assert response.status_code == 200
    assert response.json()["revokedTaskIds"] == []
    assert len(queries) == 4, [q["sql"] for q in queries]
    writes = [q["sql"] for q in queries if not q["sql"].startswith("SELECT")]
    assert len(writes) == 1 and writes[0].startswith("UPDATE"), writes
    assert TaskHistory.objects.count() == history_before


def test_a_heartbeat_without_task_ids_costs_three_queries(
    node_client, node, django_assert_num_queries
):
    with django_assert_num_queries(3):
        assert beat(node_client).json()["revokedTaskIds"] == []


@pytest.mark.parametrize(
    "task_ids",
    [
        "not-a-list",
        ["not-a-uuid"],
        [123],
        [str(uuid.uuid4())] * (HEARTBEAT_MAX_TASK_IDS + 1),
    ],
)
def test_a_heartbeat_with_bad_task_ids_is_400_and_stamps_nothing(node_client, node, task_ids):
    body = assert_json_error(beat(node_client, taskIds=task_ids), 400)

    assert body["errors"][0]["field"].startswith("taskIds")
    node.refresh_from_db()
    assert node.last_seen is None


@pytest.mark.parametrize("raw", ["null", "[]", "0", "false", '""', '["taskIds"]'])
def test_a_heartbeat_whose_body_is_not_an_object_is_400_and_stamps_nothing(node_client, node, raw):
    response = node_client.post("/api/nodes/heartbeat", raw, content_type="application/json")

    assert_json_error(response, 400)
    node.refresh_from_db()
    assert node.last_seen is None


def test_an_admin_cannot_beat(admin_client, admin_user):
    assert_json_error(beat(admin_client), 403)

    admin_user.refresh_from_db()
    assert admin_user.last_seen is None


def test_a_deactivated_node_cannot_beat(node_client, node):
    User.objects.filter(pk=node.pk).update(is_active=False)

    assert_json_error(beat(node_client), 401)
    node.refresh_from_db()
    assert node.last_seen is None


@pytest.mark.parametrize("header", [None, "Bearer not-a-jwt", "Basic bm9kZTpwYXNz"])
def test_a_heartbeat_without_a_valid_token_is_401(anon_client, header):
    if header:
        anon_client.credentials(HTTP_AUTHORIZATION=header)

    assert_json_error(beat(anon_client), 401)
    assert not User.objects.filter(last_seen__isnull=False).exists()


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_a_heartbeat_is_post_only(node_client, method):
    assert_json_error(getattr(node_client, method)("/api/nodes/heartbeat"), 405)


# --- GET /api/nodes -------------------------------------------------------------------------


def seen(user, seconds_ago: float | None):
    last_seen = None if seconds_ago is None else timezone.now() - timedelta(seconds=seconds_ago)
    User.objects.filter(pk=user.pk).update(last_seen=last_seen)
    return last_seen


def test_admins_see_every_active_node_with_liveness_and_open_work(admin_client, settings):
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    alive, stale, down, _never_seen = (NodeFactory(name=n) for n in ("a", "b", "c", "d"))
    NodeFactory(name="e", is_active=False)
    alive_seen = seen(alive, 2)
    seen(stale, 20)
    seen(down, 120)
    TaskFactory.create_batch(2, assigned_node=alive)
    TaskFactory(assigned_node=alive, status=IN_PROGRESS)
    TaskFactory(assigned_node=alive, status=COMPLETED)
    TaskFactory(assigned_node=alive, status=PENDING, active=False)
    TaskFactory(assigned_node=down, status=IN_PROGRESS)

    response = admin_client.get("/api/nodes")

    assert response.status_code == 200
    nodes = response.json()["nodes"]
    assert [(n["name"], n["liveness"], n["openCount"], n["inProgressCount"]) for n in nodes] == [
        ("a", Liveness.ALIVE, 3, 1),
        ("b", Liveness.STALE, 0, 0),
        ("c", Liveness.DOWN, 1, 1),
        ("d", Liveness.NEVER_SEEN, 0, 0),
    ]
    first = nodes[0]
    assert set(first) == {
        "nodeId",
        "name",
        "email",
        "liveness",
        "lastSeen",
        "openCount",
        "inProgressCount",
        "labels",
        # Cordon and drain (docs/cordon-drain-maintenance.md).
        "schedulable",
        "state",
        "cordonReason",
        "cordonedBy",
        "cordonedSince",
        "drainDeadline",
        # Its window under way, else its next (null: none).
        "maintenanceWindow",
    }
    assert (first["nodeId"], first["email"]) == (str(alive.pk), alive.email)
    assert parse(first["lastSeen"]) == alive_seen
    assert nodes[3]["lastSeen"] is None


def test_the_node_list_costs_four_queries_however_many_nodes(
    admin_client, django_assert_num_queries
):
    now = timezone.now()
    for node in NodeFactory.create_batch(5):
        seen(node, 1)
        TaskFactory.create_batch(2, assigned_node=node)
        for hours in (-1, 2):  # one under way, one coming: read in the nodes' query
            MaintenanceWindow.objects.create(
                node=node,
                starts_at=now + timedelta(hours=hours),
                ends_at=now + timedelta(hours=hours + 2),
                reason="r",
            )

    # The admin (JWT), the serving record, the nodes with their liveness, the grouped counts.
    with django_assert_num_queries(4):
        response = admin_client.get("/api/nodes")

    assert [n["openCount"] for n in response.json()["nodes"]] == [2] * 5
    assert [n["maintenanceWindow"]["underWay"] for n in response.json()["nodes"]] == [True] * 5


def test_a_node_cannot_list_nodes(node_client):
    assert_json_error(node_client.get("/api/nodes"), 403)


def test_listing_nodes_needs_a_token(anon_client):
    assert_json_error(anon_client.get("/api/nodes"), 401)
