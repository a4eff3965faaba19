"""Every route answers the same with or without one trailing slash, as the original on Express.

The route list comes from the URL resolver, so a route added later must get a row
in CALLS (the coverage test names it) and is then checked in both spellings.
"""

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve, reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from taskmgmt import views
from tasks.models import TaskStatus
from tests.api import assert_json_error
from tests.factories import PASSWORD, AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

# Values the server makes anew on every call: two correct answers differ only in these.
FRESH_EVERY_CALL = {
    "token",
    "refresh",
    "updatedAt",
    "serverTime",
    "leaseExpiresAt",
    "lastSeen",
    # A cordon's or a cancel request's moment, and a drain's default deadline (now + …).
    "since",
    "drainDeadline",
    "cancelRequestedAt",
}
FRESH_PER_CREATE = {"id", "createdAt"}
# Django's masked CSRF token, which the Swagger UI page embeds, changes on every render.
CSRF_TOKEN = re.compile(rb'"[A-Za-z0-9]{64}"')


@dataclass(frozen=True)
class Call:
    """One request per route and method; `{names}` are filled from the `world` fixture."""

    name: str
    method: str
    path: str
    who: str  # anon, admin or node
    status: int
    body: dict = field(default_factory=dict)
    creates: bool = False


def later(days=1) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


CALLS = [
    Call("auth-login", "POST", "/api/auth/login", "anon", 200,
         {"username": "{node_email}", "password": PASSWORD}),
    Call("auth-refresh", "POST", "/api/auth/refresh", "anon", 200, {"refresh": "{refresh}"}),
    Call("account-signup", "POST", "/api/auth/signup", "admin", 201,
         {"name": "New Node", "email": "new.node@example.com", "password": "a-long-passphrase-9"},
         creates=True),
    Call("account-profile", "GET", "/api/auth/profile", "node", 200),
    Call("account-edit-profile", "PUT", "/api/auth/edit-profile", "node", 200,
         {"name": "Renamed", "email": "renamed@example.com"}),
    Call("account-update-password", "PUT", "/api/auth/update-password", "node", 200,
         {"oldPassword": PASSWORD, "newPassword": "another-long-passphrase-7"}),
    Call("account-users", "GET", "/api/auth/users", "admin", 200),
    Call("task-list", "GET", "/api/tasks?limit=1", "node", 200),
    Call("task-list", "POST", "/api/tasks", "admin", 201,
         {"taskName": "Reindex", "taskDetails": "Rebuild.", "assignedNode": "{node}",
          "lockedAt": "{later}"}, creates=True),
    Call("task-list", "PUT", "/api/tasks", "admin", 200,
         {"taskId": "{task}", "taskName": "Reindex", "taskDetails": "Rebuild.",
          "assignedNode": "{other_node}", "lockedAt": "{later}"}),
    Call("task-bulk", "POST", "/api/tasks/bulk", "admin", 201,
         {"tasks": [{"taskName": "Reindex", "taskDetails": "Rebuild.", "assignedNode": "{node}",
                     "lockedAt": "{later}"}]}, creates=True),
    Call("task-broadcast", "POST", "/api/tasks/broadcast", "admin", 201,
         {"taskName": "Upgrade", "taskDetails": "apt.", "lockedAt": "{later}"}, creates=True),
    Call("task-all", "GET", "/api/tasks/all?limit=1", "admin", 200),
    Call("task-node", "GET", "/api/tasks/node", "node", 200),
    Call("task-filter", "GET", "/api/tasks/filter/pending", "node", 200),
    Call("task-assign", "PUT", "/api/tasks/assign", "admin", 200,
         {"taskId": "{task}", "nodeId": "{other_node}"}),
    Call("task-shift-status", "PUT", "/api/tasks/shift-status", "node", 200,
         {"taskId": "{task}", "taskStatus": "in_progress"}),
    # The world's task is pending: progress on it is a 409, the same for both spellings.
    Call("task-progress", "PUT", "/api/tasks/progress", "node", 409,
         {"taskId": "{task}", "percent": 5}),
    Call("task-history", "GET", "/api/tasks/history/{task}", "admin", 200),
    Call("task-detail", "GET", "/api/tasks/{task}", "node", 200),
    Call("task-claim", "POST", "/api/tasks/claim", "node", 200),
    Call("node-list", "GET", "/api/nodes", "admin", 200),
    Call("node-heartbeat", "POST", "/api/nodes/heartbeat", "node", 200),
    Call("node-detail", "PUT", "/api/nodes/{node}", "admin", 200, {"labels": {"gpu": "true"}}),
    Call("task-cancel", "POST", "/api/tasks/{task}/cancel", "admin", 200, {"reason": "no"}),
    Call("node-cordon", "POST", "/api/nodes/{node}/cordon", "admin", 200, {"reason": "fan"}),
    Call("node-drain", "POST", "/api/nodes/{node}/drain", "admin", 200, {"reason": "kernel"}),
    Call("node-uncordon", "POST", "/api/nodes/{node}/uncordon", "admin", 409, {"reason": "ok"}),
    Call("node-events", "GET", "/api/nodes/{node}/events", "admin", 200),
    Call("node-maintenance", "GET", "/api/nodes/{node}/maintenance", "admin", 200),
    Call("node-maintenance", "POST", "/api/nodes/{node}/maintenance", "admin", 201,
         {"startsAt": "{later}", "endsAt": "{much_later}", "reason": "rack"}, creates=True),
    Call("node-maintenance-window", "DELETE", "/api/nodes/{node}/maintenance/1", "admin", 404),
    Call("task-detail", "DELETE", "/api/tasks/{task}", "admin", 200),
    Call("collect-failed", "GET", "/cron/collect-failed", "admin", 200),
    Call("collect-failed", "POST", "/cron/collect-failed", "admin", 200),
    Call("schema", "GET", "/api/schema/", "anon", 200),
    Call("docs", "GET", "/api/docs/", "anon", 200),
    Call("redoc", "GET", "/api/redoc/", "anon", 200),
    Call("healthz", "GET", "/healthz", "anon", 200),
    Call("api-root", "GET", "/api", "anon", 200),
    # Closed (404) while neither METRICS_TOKEN nor METRICS_ALLOWED_NETWORKS is set.
    Call("metrics", "GET", "/metrics", "anon", 404),
    Call("favicon", "GET", "/favicon.ico", "anon", 204),
]  # fmt: skip


def endpoints(patterns=None):
    """Every URL pattern outside the admin site, except the JSON 404 catch-all and `/`
    (a redirect to the admin site, tested on its own)."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            if entry.app_name != "admin":
                yield from endpoints(entry.url_patterns)
        elif entry.callback is not views.api_not_found and entry.name != "home":
            yield entry


def methods_of(callback) -> set[str]:
    """The HTTP methods a view answers: a viewset's actions, an APIView's handlers.

    HEAD and OPTIONS follow from the others (DRF even adds `head` to a viewset's
    actions once it has served a GET).
    """
    if actions := getattr(callback, "actions", None):
        methods = set(actions)
    elif view_class := getattr(callback, "view_class", None):
        methods = {name for name in view_class.http_method_names if hasattr(view_class, name)}
    else:
        methods = {"get"}  # a plain function view: healthz
    return {method.upper() for method in methods - {"head", "options"}}


def test_every_route_and_method_has_a_row_in_the_table():
    unnamed = [str(entry.pattern) for entry in endpoints() if not entry.name]
    assert not unnamed, f"give these routes a name= so the table can list them: {unnamed}"
    routes = {
        (entry.name, method) for entry in endpoints() for method in methods_of(entry.callback)
    }

    assert routes == {(call.name, call.method) for call in CALLS}


@pytest.fixture
def world():
    node = NodeFactory()
    other_node = NodeFactory()
    return {
        "admin": AdminFactory(),
        "node": node,
        "values": {
            "node": str(node.pk),
            "node_email": node.email,
            "other_node": str(other_node.pk),
            "task": str(TaskFactory(assigned_node=node, status=TaskStatus.PENDING).pk),
            "refresh": str(RefreshToken.for_user(node)),
            "later": later(),
            "much_later": later(2),
        },
    }


def spellings(path: str) -> tuple[str, str]:
    """The path without and with one trailing slash, its query string kept."""
    route, mark, query = path.partition("?")
    bare = route.rstrip("/")
    return f"{bare}{mark}{query}", f"{bare}/{mark}{query}"


def filled(value, values: dict):
    if isinstance(value, dict):
        return {key: filled(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [filled(item, values) for item in value]
    return value.format(**values) if isinstance(value, str) else value


def masked(data, keys: set[str]):
    if isinstance(data, dict):
        return {k: "<fresh>" if k in keys else masked(v, keys) for k, v in data.items()}
    if isinstance(data, list):
        return [masked(item, keys) for item in data]
    return data


def comparable(response, call: Call):
    if response["Content-Type"].startswith("application/json"):
        keys = FRESH_EVERY_CALL | (FRESH_PER_CREATE if call.creates else set())
        return masked(response.json(), keys)
    return CSRF_TOKEN.sub(b'"<csrf>"', response.content)


def send(call: Call, path: str, world: dict):
    """The call on `path`, its effects rolled back so the other spelling meets the same data."""
    client = APIClient()
    if call.who != "anon":
        token = RefreshToken.for_user(world[call.who]).access_token
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    body = filled(call.body, world["values"]) if call.body else None
    with transaction.atomic():
        response = client.generic(
            call.method, path, "" if body is None else json.dumps(body),
            content_type="application/json",
        )  # fmt: skip
        transaction.set_rollback(True)
    return response


@pytest.mark.parametrize("call", CALLS, ids=lambda call: f"{call.method} {call.path}")
def test_a_route_answers_the_same_with_and_without_a_trailing_slash(call, world):
    path = filled(call.path, world["values"])
    bare, slashed = spellings(path)

    answers = [send(call, spelling, world) for spelling in (bare, slashed)]

    for spelling, response in zip((bare, slashed), answers, strict=True):
        assert resolve(spelling.partition("?")[0]).url_name == call.name
        assert response.status_code == call.status, (spelling, response.content)
    first, second = answers
    assert first["Content-Type"] == second["Content-Type"]
    assert comparable(first, call) == comparable(second, call)


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    "path", ["/api/no-such-thing", "/api/no-such-thing/", "/api/tasks/all//", "/api/auth//"]
)
@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
def test_an_unknown_api_path_is_a_json_404_in_either_spelling(settings, debug, path, method):
    settings.DEBUG = debug

    response = getattr(APIClient(), method)(path, {"a": 1})

    assert_json_error(response, 404)


@pytest.mark.parametrize("debug", [False, True])
def test_a_post_with_a_trailing_slash_is_served_not_redirected(settings, debug):
    """A redirect (a 500 under DEBUG for a POST) would lose the body."""
    settings.DEBUG = debug
    NodeFactory(email="worker@example.com")

    response = APIClient().post(
        "/api/auth/login/", {"username": "worker@example.com", "password": PASSWORD}
    )

    assert response.status_code == 200
    assert set(response.json()) == {"token", "refresh", "userDetails"}


def test_the_admin_site_keeps_djangos_own_spelling():
    response = Client().get("/admin")

    assert response.status_code == 301
    assert response["Location"] == "/admin/"


def test_urls_are_still_reversed_in_their_own_spelling():
    assert reverse("task-all") == "/api/tasks/all"
    assert reverse("docs") == "/api/docs/"


def test_the_front_door_opens_the_admins_dashboard():
    response = Client().get("/")

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")


@pytest.mark.parametrize("path", ["/api", "/api/"])
@pytest.mark.parametrize("method", ["get", "head"])
def test_the_api_root_answers_200_json_like_the_originals(path, method):
    """The original greeted any request to /api with 200 {message}: clients and container
    health checks (`curl -f …/api`) use it to wait for the server."""
    response = getattr(Client(), method)(path)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    if method == "get":
        assert set(response.json()) == {"message"}


def test_the_api_root_refuses_a_write_as_json():
    response = APIClient().post("/api", {"a": 1})

    assert_json_error(response, 405)
    assert response["Allow"] == "GET, HEAD, OPTIONS"


def test_the_browsers_icon_request_is_no_404():
    # Browsers ask for it on every page: a 404 is an error in the console of each.
    response = Client().get("/favicon.ico")

    assert response.status_code == 204
    assert response.content == b""
