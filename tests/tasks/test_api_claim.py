"""POST /api/tasks/claim: a node starts its next pending task, atomically."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from tasks.models import HistoryAction, TaskHistory, TaskStatus
from tests.api import TASK_FIELDS, assert_json_error
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS, COMPLETED = TaskStatus.PENDING, TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED


def claim(client):
    return client.post("/api/tasks/claim")


def in_hours(hours: float):
    return timezone.now() + timedelta(hours=hours)


def test_a_claim_starts_the_task_with_the_earliest_deadline(node_client, node):
    TaskFactory(assigned_node=node, locked_at=in_hours(3))
    first = TaskFactory(assigned_node=node, locked_at=in_hours(1))
    TaskFactory(assigned_node=node, locked_at=in_hours(2))

    response = claim(node_client)

    assert response.status_code == 200, response.content
    task = response.json()["task"]
    assert set(task) == TASK_FIELDS
    assert (task["id"], task["status"], task["attempts"]) == (str(first.pk), IN_PROGRESS, 1)
    first.refresh_from_db()
    assert (first.status, first.attempts) == (IN_PROGRESS, 1)


def test_claims_take_tasks_with_equal_deadlines_oldest_first(node_client, node):
    deadline = in_hours(1)
    tasks = [
        TaskFactory(assigned_node=node, locked_at=deadline, created_at=in_hours(-h))
        for h in (1, 3, 2)
    ]

    claimed = [claim(node_client).json()["task"]["id"] for _ in tasks]

    assert claimed == [str(tasks[1].pk), str(tasks[2].pk), str(tasks[0].pk)]
    assert claim(node_client).status_code == 204


def test_a_claim_passes_over_what_the_node_cannot_start(node_client, node, other_node):
    TaskFactory(assigned_node=other_node)
    TaskFactory(assigned_node=node, active=False)
    TaskFactory(assigned_node=node, status=IN_PROGRESS)
    TaskFactory(assigned_node=node, status=COMPLETED)
    late = TaskFactory(assigned_node=node, locked_at=timezone.now() - timedelta(seconds=1))

    response = claim(node_client)

    assert response.status_code == 204
    assert response.content == b""
    late.refresh_from_db()
    assert late.status == PENDING


def test_a_claim_is_recorded_as_the_node_starting_the_task(node_client, node):
    task = TaskFactory(assigned_node=node)

    claim(node_client)

    rows = TaskHistory.objects.filter(task=task, action=HistoryAction.STATUS_CHANGE)
    assert list(rows.values_list("from_value", "to_value", "performed_by", "cause")) == [
        (PENDING, IN_PROGRESS, node.pk, "")
    ]


@pytest.mark.parametrize("has_task", [True, False])
def test_a_claim_counts_as_a_heartbeat(node_client, node, has_task):
    if has_task:
        TaskFactory(assigned_node=node)
    before = timezone.now()

    claim(node_client)

    node.refresh_from_db()
    assert node.last_seen >= before


def test_a_claim_costs_a_fixed_number_of_queries(node_client, node):
    TaskFactory(assigned_node=node)

    with CaptureQueriesContext(connection) as queries:
        assert claim(node_client).status_code == 200

    # Savepoints are the test's own transaction showing through the atomic block.
    statements = [q["sql"].split()[0] for q in queries if "SAVEPOINT" not in q["sql"]]
    # The user (JWT), the beat, the locked pick, the task's UPDATE, its history row.
    assert statements == ["SELECT", "UPDATE", "SELECT", "UPDATE", "INSERT"]


def test_a_node_stamped_under_two_seconds_ago_is_not_stamped_again_by_its_claim(node_client, node):
    TaskFactory.create_batch(2, assigned_node=node)
    just_now = timezone.now() - timedelta(seconds=0.2)
    User.objects.filter(pk=node.pk).update(last_seen=just_now)

    with CaptureQueriesContext(connection) as queries:
        assert claim(node_client).status_code == 200

    statements = [q["sql"].split()[0] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert statements == ["SELECT", "SELECT", "UPDATE", "INSERT"]  # no beat
    node.refresh_from_db()
    assert node.last_seen == just_now

    a_while_ago = timezone.now() - timedelta(seconds=5)
    User.objects.filter(pk=node.pk).update(last_seen=a_while_ago)
    assert claim(node_client).status_code == 200
    node.refresh_from_db()
    assert node.last_seen > a_while_ago + timedelta(seconds=4)


def test_an_admin_cannot_claim(admin_client, node):
    task = TaskFactory(assigned_node=node)

    assert_json_error(claim(admin_client), 403)
    task.refresh_from_db()
    assert task.status == PENDING


def test_a_deactivated_node_cannot_claim(node_client, node):
    task = TaskFactory(assigned_node=node)
    User.objects.filter(pk=node.pk).update(is_active=False)

    assert_json_error(claim(node_client), 401)
    task.refresh_from_db()
    assert task.status == PENDING


@pytest.mark.parametrize("header", [None, "Bearer not-a-jwt"])
def test_a_claim_without_a_valid_token_is_401(anon_client, node, header):
    TaskFactory(assigned_node=node)
    if header:
        anon_client.credentials(HTTP_AUTHORIZATION=header)

    assert_json_error(claim(anon_client), 401)
    assert not TaskHistory.objects.filter(action=HistoryAction.STATUS_CHANGE).exists()


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_a_claim_is_post_only(node_client, method):
    assert_json_error(getattr(node_client, method)("/api/tasks/claim"), 405)


def test_claim_is_not_read_as_a_task_id(admin_client):
    # `tasks/<taskId>` would take "claim" as an id: the route comes first.
    assert_json_error(admin_client.get("/api/tasks/claim"), 405)


def test_a_node_runs_its_whole_loop_through_claim_heartbeat_and_shift_status(
    node_client, node, admin_client
):
    tasks = TaskFactory.create_batch(2, assigned_node=node)
    done = []
    while (claimed := claim(node_client)).status_code == 200:
        task_id = claimed.json()["task"]["id"]
        beat = node_client.post("/api/nodes/heartbeat", {"taskIds": [task_id]}, format="json")
        assert beat.json()["revokedTaskIds"] == []
        finished = node_client.put(
            "/api/tasks/shift-status", {"taskId": task_id, "taskStatus": "completed"}
        )
        assert finished.status_code == 200
        done.append(task_id)

    assert claimed.status_code == 204
    assert sorted(done) == sorted(str(task.pk) for task in tasks)
    history = admin_client.get(f"/api/tasks/history/{done[0]}").json()["history"]
    assert [(row["action"], row["toValue"]) for row in history] == [
        ("status_change", COMPLETED),
        ("status_change", IN_PROGRESS),
        ("initial_assign", str(node.pk)),
    ]
    assert node_client.post("/api/nodes/heartbeat").json()["pendingCount"] == 0


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", '{"taskId":', 400),
        ("application/json", b"\xff\xfe{}", 400),
        ("text/plain", "claim please", 415),
        # JSON, but not the object every body of the API is (as the heartbeat's).
        ("application/json", "null", 400),
        ("application/json", "[]", 400),
        ("application/json", '"x"', 400),
        ("application/json", "1", 400),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused_and_nothing_is_claimed(
    node_client, node, content_type, body, status
):
    task = TaskFactory(assigned_node=node)

    response = node_client.generic("POST", "/api/tasks/claim", body, content_type=content_type)

    assert_json_error(response, status)
    task.refresh_from_db()
    assert (task.status, task.attempts) == (TaskStatus.PENDING, 0)
    # Without a body, or with any object (nothing in it is read), the claim goes ahead.
    assert node_client.post("/api/tasks/claim", {}).status_code == 200
