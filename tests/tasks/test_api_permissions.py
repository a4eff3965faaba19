"""Who may call each tasks endpoint: every caller by every endpoint, from one table.

The task is pending, assigned to `node`, with a future deadline, so every
call that is allowed succeeds and every refusal is the permission's doing.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tasks.models import TaskStatus
from tests.factories import AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

CALLERS = ("anonymous", "inactive admin", "inactive node", "admin", "assignee", "other node")


def task_fields(task) -> dict:
    return {
        "taskName": "Renamed",
        "taskDetails": "Details.",
        "assignedNode": str(task.assigned_node_id),
        "lockedAt": (timezone.now() + timedelta(days=1)).isoformat(),
    }


# (method, path, body) builders, and the status each caller gets, in CALLERS order.
ENDPOINTS = {
    "create": (
        lambda task: ("post", "/api/tasks", task_fields(task)),
        (401, 401, 401, 201, 403, 403),
    ),
    "edit": (
        lambda task: ("put", "/api/tasks", {"taskId": str(task.pk), **task_fields(task)}),
        (401, 401, 401, 200, 403, 403),
    ),
    "assign": (
        lambda task: (
            "put",
            "/api/tasks/assign",
            {"taskId": str(task.pk), "nodeId": str(task.assigned_node_id)},
        ),
        (401, 401, 401, 200, 403, 403),
    ),
    "delete": (
        lambda task: ("delete", f"/api/tasks/{task.pk}", None),
        (401, 401, 401, 200, 403, 403),
    ),
    "list all": (
        lambda task: ("get", "/api/tasks/all", None),
        (401, 401, 401, 200, 403, 403),
    ),
    "list node": (
        lambda task: ("get", "/api/tasks/node", None),
        (401, 401, 401, 403, 200, 200),
    ),
    "list own": (
        lambda task: ("get", "/api/tasks", None),
        (401, 401, 401, 403, 200, 200),
    ),
    "filter": (
        lambda task: ("get", "/api/tasks/filter/pending", None),
        (401, 401, 401, 200, 200, 200),
    ),
    "shift status": (
        lambda task: (
            "put",
            "/api/tasks/shift-status",
            {"taskId": str(task.pk), "taskStatus": TaskStatus.IN_PROGRESS},
        ),
        (401, 401, 401, 403, 200, 403),
    ),
    "detail": (
        lambda task: ("get", f"/api/tasks/{task.pk}", None),
        (401, 401, 401, 200, 200, 403),
    ),
    "history": (
        lambda task: ("get", f"/api/tasks/history/{task.pk}", None),
        (401, 401, 401, 200, 403, 403),
    ),
    "cron get": (
        lambda task: ("get", "/cron/collect-failed", None),
        (401, 401, 401, 200, 403, 403),
    ),
    "cron post": (
        lambda task: ("post", "/cron/collect-failed", None),
        (401, 401, 401, 200, 403, 403),
    ),
}

MATRIX = [
    pytest.param(endpoint, caller, expected, id=f"{endpoint} by {caller}")
    for endpoint, (_, statuses) in ENDPOINTS.items()
    for caller, expected in zip(CALLERS, statuses, strict=True)
]


@pytest.fixture
def caller_client(client_for, node, other_node):
    """The client for a caller, its token issued before any deactivation."""

    def make(caller):
        if caller == "anonymous":
            return APIClient()
        user = {
            "inactive admin": AdminFactory,
            "inactive node": NodeFactory,
            "admin": AdminFactory,
            "assignee": lambda: node,
            "other node": lambda: other_node,
        }[caller]()
        client = client_for(user)
        if caller.startswith("inactive"):
            user.is_active = False
            user.save()
        return client

    return make


@pytest.mark.parametrize(("endpoint", "caller", "expected"), MATRIX)
def test_permission_matrix(caller_client, node, endpoint, caller, expected):
    task = TaskFactory(assigned_node=node)
    method, path, body = ENDPOINTS[endpoint][0](task)
    before = (task.name, task.status, task.active, task.history.count())

    response = getattr(caller_client(caller), method)(path, body)

    assert response.status_code == expected, response.content
    if expected >= 400:
        assert set(response.json()) == {"title", "message"}
        task.refresh_from_db()
        assert (task.name, task.status, task.active, task.history.count()) == before


@pytest.mark.parametrize(
    "path",
    ["/api/tasks", "/api/tasks/node", "/api/tasks/filter/all", "/api/tasks/filter/pending"],
)
def test_another_nodes_lists_never_show_the_task(client_for, node, other_node, path):
    TaskFactory(assigned_node=node)
    own = TaskFactory(assigned_node=other_node)

    response = client_for(other_node).get(path)

    assert [task["id"] for task in response.json()["tasks"]] == [str(own.pk)]


def test_a_token_stops_working_when_its_node_is_deactivated(client_for, node):
    task = TaskFactory(assigned_node=node)
    client = client_for(node)
    assert client.get(f"/api/tasks/{task.pk}").status_code == 200

    node.is_active = False
    node.save()

    assert client.get(f"/api/tasks/{task.pk}").status_code == 401


def test_a_bad_token_is_401(node):
    task = TaskFactory(assigned_node=node)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")

    response = client.get(f"/api/tasks/{task.pk}")

    assert response.status_code == 401
    assert set(response.json()) == {"title", "message"}
