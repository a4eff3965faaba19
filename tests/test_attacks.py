"""Attacks from the OWASP API Security Top 10 (2023), through the real endpoints.

Each attack gets the 4xx JSON it deserves and changes nothing. Checklist:
- API1 object level authorization: another node's task on every task endpoint.
- API2 authentication: every bad token shape on every endpoint that needs one.
- API3 object property level authorization: server-owned fields in bodies are
  ignored, and answers carry no property beyond the documented ones.
- API4 resource consumption: oversized bodies and query strings, deep JSON,
  `limit` and `cursor` abuse, rate limits that hold without a client address.
- API5 function level authorization: the role-by-endpoint matrices in
  tests/accounts/test_api_permissions.py and tests/tasks/test_api_permissions.py.
- API8 misconfiguration: wrong content type 415, wrong method 405, no HTML
  under /api/ (check --deploy and security headers: tests/test_checks.py,
  tests/test_security.py).
- API9 inventory: tests/test_schema_fuzz.py (every route is in the schema).
API6, API7 and API10 (business flows, SSRF, third-party APIs) have no surface here.
"""

import base64
import json
import re
import uuid
from datetime import timedelta

import jwt
import pytest
from django.conf import settings as django_settings
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import Role, User
from taskmgmt.pagination import encode_cursor
from taskmgmt.views import api_not_found
from tasks.models import Task, TaskHistory, TaskStatus
from tests.api import TASK_FIELDS, USER_FIELDS, assert_json_error
from tests.factories import PASSWORD, AdminFactory, NodeFactory, TaskFactory

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

LIST_PATHS = ["/api/tasks", "/api/tasks/node", "/api/tasks/all", "/api/tasks/filter/all"]
# A well-formed id that no task or user has.
NO_SUCH_ID = uuid.UUID("6d0f3c1e-8a2b-4c5d-9e7f-0123456789ab")


def error_status(response):
    """The status of a well-formed JSON error; the raw answer for anything else."""
    try:
        assert_json_error(response, response.status_code)
    except (AssertionError, KeyError, TypeError, ValueError):
        return response.status_code, response.get("Content-Type"), response.content[:200]
    return response.status_code


def bearer(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def future(days=1) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


def snapshot() -> tuple:
    """Everything a request could change, to show that a refused one changed nothing."""
    tasks = Task.objects.order_by("pk").values_list(
        "pk", "name", "status", "assigned_node_id", "active", "locked_at"
    )
    users = User.objects.order_by("pk").values_list("pk", "email", "name", "role", "is_active")
    return list(tasks), list(users), TaskHistory.objects.count()


# --- Every endpoint that needs a token, as (method, path, body) ------------------


def authenticated_endpoints(task, node) -> dict:
    task_body = {
        "taskName": "Forged",
        "taskDetails": "Details.",
        "assignedNode": str(node.pk),
        "lockedAt": future(),
    }
    return {
        "create": ("post", "/api/tasks", task_body),
        "edit": ("put", "/api/tasks", {"taskId": str(task.pk), **task_body}),
        "assign": ("put", "/api/tasks/assign", {"taskId": str(task.pk), "nodeId": str(node.pk)}),
        "shift status": (
            "put",
            "/api/tasks/shift-status",
            {"taskId": str(task.pk), "taskStatus": TaskStatus.IN_PROGRESS},
        ),
        "delete": ("delete", f"/api/tasks/{task.pk}", None),
        "detail": ("get", f"/api/tasks/{task.pk}", None),
        "history": ("get", f"/api/tasks/history/{task.pk}", None),
        "list own": ("get", "/api/tasks", None),
        "list node": ("get", "/api/tasks/node", None),
        "list all": ("get", "/api/tasks/all", None),
        "filter": ("get", "/api/tasks/filter/pending", None),
        "cron get": ("get", "/cron/collect-failed", None),
        "cron post": ("post", "/cron/collect-failed", None),
        "profile": ("get", "/api/auth/profile", None),
        "edit profile": ("put", "/api/auth/edit-profile", {"name": "Forged", "email": node.email}),
        "update password": (
            "put",
            "/api/auth/update-password",
            {"oldPassword": PASSWORD, "newPassword": "a-forged-long-passphrase"},
        ),
        "users": ("get", "/api/auth/users", None),
        "signup": (
            "post",
            "/api/auth/signup",
            {"name": "Forged", "email": "forged@example.com", "password": "a-forged-passphrase"},
        ),
    }


WRITE_ENDPOINTS = [
    "create",
    "edit",
    "assign",
    "shift status",
    "edit profile",
    "update password",
    "signup",
]


def api_routes() -> dict:
    """Every route under /api/ and /cron/ and its view, the route spelled as an OpenAPI
    path ("/api/tasks/{taskId}"); the catch-all answering unknown paths is not one."""

    def walk(patterns, prefix):
        for pattern in patterns:
            route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif pattern.callback is not api_not_found:
                yield "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route), pattern.callback

    routes = walk(get_resolver().url_patterns, "")
    return {route: view for route, view in routes if route.startswith(("/api/", "/cron/"))}


def call(client, endpoint, body=None):
    method, path, default_body = endpoint
    return getattr(client, method)(path, default_body if body is None else body)


# --- API1: another node's task -------------------------------------------------------


@pytest.fixture
def others_task(node, other_node):
    """A task of `other_node`'s; `node` (the attacker) has tasks of its own."""
    TaskFactory(assigned_node=node)
    return TaskFactory(assigned_node=other_node)


# What the attacking node gets for another node's task, endpoint by endpoint.
BOLA_ANSWERS = {
    "detail": 403,
    "shift status": 403,
    "history": 403,
    "delete": 403,
    "edit": 403,
    "assign": 403,
}


@pytest.mark.parametrize(("endpoint", "expected"), BOLA_ANSWERS.items())
def test_a_node_gets_nothing_from_another_nodes_task(
    node, node_client, others_task, endpoint, expected
):
    before = snapshot()

    response = call(node_client, authenticated_endpoints(others_task, node)[endpoint])

    body = assert_json_error(response, expected)
    assert str(others_task.pk) not in json.dumps(body)
    assert snapshot() == before


@pytest.mark.parametrize("status", TaskStatus.values)
@pytest.mark.parametrize("target", TaskStatus.values)
def test_shift_status_on_another_nodes_task_is_403_whatever_its_state(
    node_client, other_node, status, target
):
    """403 before any status rule, so the answer says nothing about the task's state."""
    task = TaskFactory(assigned_node=other_node, status=status)

    response = node_client.put(
        "/api/tasks/shift-status", {"taskId": str(task.pk), "taskStatus": target}
    )

    assert_json_error(response, 403)
    task.refresh_from_db()
    assert task.status == status


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/tasks", None),
        ("/api/tasks/node", None),
        ("/api/tasks/filter/all", None),
        *((f"/api/tasks/filter/{status}", status) for status in TaskStatus.values),
    ],
)
def test_every_page_of_a_nodes_lists_holds_its_own_tasks_and_no_others(
    node, node_client, other_node, path, status
):
    for each in TaskStatus.values * 2:
        TaskFactory(assigned_node=node, status=each)
        TaskFactory(assigned_node=other_node, status=each)
    own = Task.objects.filter(assigned_node=node)
    expected = {
        str(pk)
        for pk in (own.filter(status=status) if status else own).values_list("pk", flat=True)
    }

    seen, cursor = [], None
    while True:
        response = node_client.get(path, {"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200
        seen += [task["id"] for task in response.json()["tasks"]]
        if not (cursor := response.json()["nextCursor"]):
            break

    assert sorted(seen) == sorted(expected)


def test_a_cursor_made_from_another_nodes_task_still_shows_only_own_tasks(
    node, node_client, other_node
):
    own = TaskFactory(assigned_node=node)
    theirs = TaskFactory(assigned_node=other_node)
    cursor = encode_cursor(theirs.created_at + timedelta(seconds=1), theirs.pk)

    response = node_client.get("/api/tasks", {"limit": 10, "cursor": cursor})

    assert [task["id"] for task in response.json()["tasks"]] == [str(own.pk)]


@pytest.mark.parametrize("endpoint", ["detail", "shift status", "delete", "history", "edit"])
def test_a_soft_deleted_task_is_404_even_to_those_who_could_see_it(
    node, node_client, admin_client, endpoint
):
    task = TaskFactory(assigned_node=node, active=False)
    client = node_client if endpoint in {"detail", "shift status"} else admin_client

    assert_json_error(call(client, authenticated_endpoints(task, node)[endpoint]), 404)


# --- API2: tokens that must not authenticate ----------------------------------------

FOREIGN_KEY = "a-signing-key-that-is-not-ours-but-long-enough"


def _flip_payload_character(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    flipped = "A" if payload[middle] != "A" else "B"
    return f"{header}.{payload[:middle]}{flipped}{payload[middle + 1 :]}.{signature}"


def _elevated_payload(token: AccessToken, **claims) -> str:
    """The original header and signature around a payload with `claims` added."""
    header, _, signature = str(token).split(".")
    payload = json.dumps({**token.payload, **claims}).encode()
    return f"{header}.{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}.{signature}"


def _unsigned(token: AccessToken) -> str:
    return jwt.encode(dict(token.payload), key=None, algorithm="none")


def _expired(user) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    return str(token)


def _deleted_users_token(user) -> str:
    victim = NodeFactory()
    token = str(AccessToken.for_user(victim))
    victim.delete()
    return token


def _deactivated_users_token(user) -> str:
    token = str(AccessToken.for_user(user))
    User.objects.filter(pk=user.pk).update(is_active=False)
    return token


def _after_password_change_token(user) -> str:
    token = str(AccessToken.for_user(user))
    user.set_password("a-changed-long-passphrase")
    user.save(update_fields=["password"])
    return token


BAD_TOKENS = {
    "payload character flipped": lambda user: _flip_payload_character(
        str(AccessToken.for_user(user))
    ),
    "role claim added": lambda user: _elevated_payload(AccessToken.for_user(user), role="admin"),
    "resigned with another key": lambda user: jwt.encode(
        dict(AccessToken.for_user(user).payload), FOREIGN_KEY, algorithm="HS256"
    ),
    "alg none": lambda user: _unsigned(AccessToken.for_user(user)),
    "alg none without a dot": lambda user: _unsigned(AccessToken.for_user(user)).rstrip("."),
    "alg HS512 with our key": lambda user: jwt.encode(
        dict(AccessToken.for_user(user).payload),
        django_settings.SIMPLE_JWT["SIGNING_KEY"],
        algorithm="HS512",
    ),
    "expired": _expired,
    "refresh token as access": lambda user: str(RefreshToken.for_user(user)),
    "deleted user": _deleted_users_token,
    "deactivated user": _deactivated_users_token,
    "issued before a password change": _after_password_change_token,
    "empty": lambda user: "",
    "garbage": lambda user: "not-a-jwt",
}


# The HS512 forgery signs with our key, which is sized for HS256, on purpose.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_token_is_401_on_every_endpoint_and_changes_nothing(admin_user, node, make_token):
    endpoints = authenticated_endpoints(TaskFactory(assigned_node=node), node)
    client = bearer(make_token(admin_user))
    before = snapshot()

    responses = {name: call(client, endpoint) for name, endpoint in endpoints.items()}

    answers = {name: error_status(response) for name, response in responses.items()}
    assert answers == dict.fromkeys(endpoints, 401)
    assert all(r["WWW-Authenticate"].startswith("Bearer") for r in responses.values())
    assert snapshot() == before


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + base64.b64encode(f"admin@example.com:{PASSWORD}".encode()).decode(),
        "Token {token}",
        "JWT {token}",
        "{token}",
        "Bearer {token} {token}",
        "bearer{token}",
    ],
    ids=["basic", "token-scheme", "jwt-scheme", "no-scheme", "two-tokens", "no-space"],
)
def test_only_a_bearer_header_authenticates(node, authorization):
    admin = AdminFactory(email="admin@example.com")
    endpoints = authenticated_endpoints(TaskFactory(assigned_node=node), node)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization.format(token=AccessToken.for_user(admin)))
    before = snapshot()

    answers = {name: error_status(call(client, endpoint)) for name, endpoint in endpoints.items()}

    assert answers == dict.fromkeys(endpoints, 401)
    assert snapshot() == before


# --- API3: fields the server owns ------------------------------------------------------

SERVER_OWNED_TASK_FIELDS = {
    "id": "00000000-0000-0000-0000-00000000beef",
    "status": TaskStatus.COMPLETED,
    "taskStatus": TaskStatus.COMPLETED,
    "active": False,
    "createdAt": "2000-01-01T00:00:00Z",
    "updatedAt": "2000-01-01T00:00:00Z",
    "created_at": "2000-01-01T00:00:00Z",
}


def test_create_ignores_server_owned_fields(admin_client, node):
    response = admin_client.post(
        "/api/tasks",
        {
            "taskName": "Created",
            "taskDetails": "Details.",
            "assignedNode": str(node.pk),
            "lockedAt": future(),
            **SERVER_OWNED_TASK_FIELDS,
        },
    )

    assert response.status_code == 201, response.content
    task = Task.objects.get(pk=response.json()["task"]["id"])
    assert str(task.pk) != SERVER_OWNED_TASK_FIELDS["id"]
    assert (task.status, task.active) == (TaskStatus.PENDING, True)
    assert task.created_at > timezone.now() - timedelta(minutes=1)


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/assign"])
def test_edit_and_assign_ignore_server_owned_fields(admin_client, node, path):
    task = TaskFactory(assigned_node=node)
    created_at = task.created_at
    body = {
        "taskId": str(task.pk),
        "taskName": "Edited",
        "taskDetails": "Details.",
        "assignedNode": str(node.pk),
        "nodeId": str(node.pk),
        "lockedAt": future(),
        **SERVER_OWNED_TASK_FIELDS,
    }

    response = admin_client.put(path, body)

    assert response.status_code == 200, response.content
    task.refresh_from_db()
    assert (task.status, task.active, task.created_at) == (TaskStatus.PENDING, True, created_at)
    assert not Task.objects.filter(pk=SERVER_OWNED_TASK_FIELDS["id"]).exists()


def test_shift_status_takes_only_the_status_from_the_assigned_node(node, node_client, other_node):
    task = TaskFactory(assigned_node=node)
    locked_at, name = task.locked_at, task.name

    response = node_client.put(
        "/api/tasks/shift-status",
        {
            "taskId": str(task.pk),
            "taskStatus": TaskStatus.IN_PROGRESS,
            "status": TaskStatus.COMPLETED,
            "assignedNode": str(other_node.pk),
            "nodeId": str(other_node.pk),
            "active": False,
            "id": str(uuid.uuid4()),
            "lockedAt": future(days=30),
            "taskName": "Renamed by the node",
        },
    )

    assert response.status_code == 200, response.content
    task.refresh_from_db()
    assert (task.status, task.assigned_node_id, task.active) == (
        TaskStatus.IN_PROGRESS,
        node.pk,
        True,
    )
    assert (task.locked_at, task.name) == (locked_at, name)


def test_signup_ignores_role_activity_staff_and_id(admin_client):
    response = admin_client.post(
        "/api/auth/signup",
        {
            "name": "New node",
            "email": "new@example.com",
            "password": "a-long-enough-passphrase",
            "role": Role.ADMIN,
            "is_active": False,
            "isActive": False,
            "is_staff": True,
            "id": "00000000-0000-0000-0000-00000000beef",
        },
    )

    assert response.status_code == 201, response.content
    user = User.objects.get(email="new@example.com")
    assert (user.role, user.is_active, user.is_staff) == (Role.NODE, True, False)
    assert str(user.pk) != "00000000-0000-0000-0000-00000000beef"


def test_edit_profile_cannot_change_role_activity_password_or_id(node, node_client):
    response = node_client.put(
        "/api/auth/edit-profile",
        {
            "name": "Renamed",
            "email": node.email,
            "role": Role.ADMIN,
            "is_active": False,
            "password": "a-sneaky-new-passphrase",
            "id": str(uuid.uuid4()),
        },
    )

    assert response.status_code == 200, response.content
    node.refresh_from_db()
    assert (node.name, node.role, node.is_active) == ("Renamed", Role.NODE, True)
    assert node.check_password(PASSWORD)


def test_answers_carry_only_the_documented_properties(admin_user, admin_client, node, client_for):
    task = TaskFactory(assigned_node=node)

    assert set(admin_client.get(f"/api/tasks/{task.pk}").json()["task"]) == TASK_FIELDS
    assert set(admin_client.get("/api/tasks/all").json()["tasks"][0]) == TASK_FIELDS
    profile = client_for(node).get("/api/auth/profile").json()
    assert set(profile["userDetails"]) == USER_FIELDS
    assert set(profile["tasks"][0]) == TASK_FIELDS
    users = admin_client.get("/api/auth/users").json()["usersList"]
    assert all(set(user) == {"nodeId", "name", "email", "role"} for user in users)
    login = APIClient().post("/api/auth/login", {"username": node.email, "password": PASSWORD})
    assert set(login.json()) == {"token", "refresh", "userDetails"}
    assert set(login.json()["userDetails"]) == USER_FIELDS


# --- API4: resource consumption ------------------------------------------------------


@pytest.fixture
def caller_for(admin_client, node_client):
    """The client whose role may call an endpoint, so only the attack can refuse it."""
    return lambda endpoint: node_client if endpoint in {"shift status"} else admin_client


def send_raw(caller_for, endpoints, body_for, content_type="application/json") -> dict:
    """Each write endpoint's answer to the raw body `body_for(json_body)`, by its name."""
    return {
        name: error_status(
            caller_for(name).generic(
                endpoints[name][0].upper(),
                endpoints[name][1],
                body_for(endpoints[name][2]),
                content_type=content_type,
            )
        )
        for name in WRITE_ENDPOINTS
    }


def test_a_body_over_the_upload_limit_is_413_on_every_write(node, caller_for):
    endpoints = authenticated_endpoints(TaskFactory(assigned_node=node), node)
    padding = "x" * django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    before = snapshot()

    answers = send_raw(caller_for, endpoints, lambda body: json.dumps({**body, "padding": padding}))

    assert answers == dict.fromkeys(WRITE_ENDPOINTS, 413)
    assert snapshot() == before


def test_deeply_nested_json_is_400_on_every_write(node, caller_for):
    endpoints = authenticated_endpoints(TaskFactory(assigned_node=node), node)
    depth = 50_000
    nested = '{"taskId": ' + "[" * depth + "]" * depth + "}"

    answers = send_raw(caller_for, endpoints, lambda body: nested)

    assert answers == dict.fromkeys(WRITE_ENDPOINTS, 400)


@pytest.fixture
def list_client(admin_client, node_client):
    return lambda path: admin_client if path == "/api/tasks/all" else node_client


def list_answers(list_client, query) -> dict:
    """Each list endpoint's answer to `query`: its status, and the fields a 400 names."""
    answers = {}
    for path in LIST_PATHS:
        response = list_client(path).get(path, query)
        status = error_status(response)
        fields = [error["field"] for error in response.json().get("errors", [])]
        answers[path] = (status, fields) if status == 400 else status
    return answers


def test_too_many_query_parameters_are_a_400(list_client):
    """Past DATA_UPLOAD_MAX_NUMBER_FIELDS Django refuses to parse the query (was a 500).

    One name repeated, so the URI stays within the 4094 bytes the API reads at all.
    """
    query = {"p": ["1"] * 1001}

    assert list_answers(list_client, query) == dict.fromkeys(LIST_PATHS, (400, []))


@pytest.mark.parametrize(
    "limit",
    [
        "0",
        "-1",
        "1e9",
        "1000000000",
        "9" * 4000,  # longer URIs are refused before any view (a 414)
        "abc",
        "50 ",
        " 50",
        "5.0",
        "0x10",
        "+5",
        "1001",
        "\u0665",
        "5;DROP TABLE tasks_task",
    ],
)
def test_a_limit_that_is_not_1_to_max_page_size_is_400(list_client, limit):
    expected = dict.fromkeys(LIST_PATHS, (400, ["limit"]))

    assert list_answers(list_client, {"limit": limit}) == expected


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


FORGED_CURSORS = {
    "base64 junk": "!!!$$$***",
    "not base64 at all": "' OR 1=1 --",
    "sql in base64": _b64(f"2024-01-01T00:00:00+00:00' OR '1'='1|{NO_SUCH_ID.hex}"),
    "sql as the id": _b64("2024-01-01T00:00:00+00:00|' OR 1=1; DROP TABLE tasks_task; --"),
    "json in base64": _b64(json.dumps({"created_at": "2024-01-01T00:00:00Z", "id": 1})),
    "json list in base64": _b64("[1, 2, 3]"),
    "no offset": _b64(f"2024-01-01T00:00:00|{NO_SUCH_ID.hex}"),
    "month 13": _b64(f"2024-13-01T00:00:00+00:00|{NO_SUCH_ID.hex}"),
    "year 10000": _b64(f"10000-01-01T00:00:00+00:00|{NO_SUCH_ID.hex}"),
    "before year 1 in utc": _b64(f"0001-01-01T00:00:00+05:00|{NO_SUCH_ID.hex}"),
    "after year 9999 in utc": _b64(f"9999-12-31T23:59:59-05:00|{NO_SUCH_ID.hex}"),
    "not utf-8": base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    "huge": _b64("2024-01-01T00:00:00+00:00|" + "a" * 2500),  # a URI within 4094 bytes
    "nul": "\x00",
}


@pytest.mark.parametrize("cursor", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
def test_a_forged_cursor_is_400(list_client, node, cursor):
    TaskFactory(assigned_node=node)
    expected = dict.fromkeys(LIST_PATHS, (400, ["cursor"]))

    assert list_answers(list_client, {"limit": 5, "cursor": cursor}) == expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [("9999-12-31T00:00:00+00:00", 1), ("0001-01-02T00:00:00+00:00", 0)],
    ids=["far future", "far past"],
)
def test_a_well_formed_cursor_at_any_time_only_moves_the_page(node, node_client, moment, expected):
    """Cursors are not signed: a hand-made one is a position, never a way around the scope."""
    TaskFactory(assigned_node=node)
    TaskFactory(assigned_node=NodeFactory())

    response = node_client.get(
        "/api/tasks", {"limit": 5, "cursor": _b64(f"{moment}|{NO_SUCH_ID.hex}")}
    )

    assert response.status_code == 200
    assert len(response.json()["tasks"]) == expected


@pytest.mark.parametrize(
    ("meta_key", "address"),
    [
        (None, ""),
        ("HTTP_X_REAL_IP", None),
        ("HTTP_X_REAL_IP", "not-an-address"),
        ("HTTP_X_REAL_IP", "203.0.113.7, 10.0.0.1"),
    ],
    ids=["empty-remote-addr", "proxy-header-missing", "proxy-header-garbage", "proxy-header-list"],
)
def test_a_login_without_a_usable_client_address_is_still_limited_never_a_500(
    settings, meta_key, address
):
    # All through the `settings` fixture: an @override_settings around it would be
    # undone first, and the fixture's teardown would then restore its limits.
    settings.RATELIMIT_LOGIN_IP, settings.RATELIMIT_LOGIN_USER = "2/h", "100/h"
    settings.RATELIMIT_IP_META_KEY = meta_key
    extra = {"REMOTE_ADDR": address} if meta_key is None else {"REMOTE_ADDR": "10.0.0.1"}
    if meta_key and address is not None:
        extra[meta_key] = address

    def login(email):
        return APIClient().post("/api/auth/login", {"username": email, "password": "x"}, **extra)

    assert_json_error(login("one@example.com"), 401)
    assert_json_error(login("two@example.com"), 401)
    limited = assert_json_error(login("three@example.com"), 429)
    assert limited["title"] == "Too Many Requests"


# --- API8: content types, methods, and no HTML -----------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b",
        "application/xml",
        "text/html",
    ],
)
def test_a_body_that_is_not_json_is_415_on_every_write(node, caller_for, content_type):
    def as_form(body):
        return "&".join(f"{key}={value}" for key, value in body.items())

    endpoints = authenticated_endpoints(TaskFactory(assigned_node=node), node)
    before = snapshot()

    answers = send_raw(caller_for, endpoints, as_form, content_type)

    assert answers == dict.fromkeys(WRITE_ENDPOINTS, 415)
    assert snapshot() == before


# Each route and a method it does not serve.
WRONG_METHODS = [
    ("patch", "/api/tasks"),
    ("delete", "/api/tasks"),
    ("post", "/api/tasks/all"),
    ("delete", "/api/tasks/node"),
    ("post", "/api/tasks/filter/pending"),
    ("get", "/api/tasks/assign"),
    ("post", "/api/tasks/shift-status"),
    ("put", "/api/tasks/history/{task}"),
    ("put", "/api/tasks/{task}"),
    ("patch", "/api/tasks/{task}"),
    ("delete", "/cron/collect-failed"),
    ("get", "/api/auth/login"),
    ("put", "/api/auth/refresh"),
    ("get", "/api/auth/signup"),
    ("post", "/api/auth/profile"),
    ("get", "/api/auth/edit-profile"),
    ("post", "/api/auth/update-password"),
    ("delete", "/api/auth/users"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_a_method_a_route_does_not_serve_is_a_json_405(admin_client, node, method, path):
    task = TaskFactory(assigned_node=node)

    response = getattr(admin_client, method)(path.format(task=task.pk))

    assert_json_error(response, 405)


# Paths under /api/ that name no route: each must still answer JSON.
UNROUTED_API_PATHS = [
    "/api/nothing-here",
    "/api/tasks/../../etc/passwd",
    "/api/tasks/all/",
    "/api/auth/login/",
]


def _every_api_path(task) -> list[str]:
    routes = [
        route.replace("{taskId}", str(task.pk)).replace("{status}", "pending")
        for route in sorted(api_routes())
    ]
    return routes + UNROUTED_API_PATHS


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize("caller", ["anonymous", "admin", "node"])
def test_nothing_under_the_api_answers_html_but_the_docs_pages(
    settings, admin_user, node, client_for, debug, caller
):
    settings.DEBUG = debug
    client = {"anonymous": APIClient(), "admin": client_for(admin_user), "node": client_for(node)}
    task = TaskFactory(assigned_node=node)

    for path in _every_api_path(task):
        for method in ("get", "post", "put", "patch", "delete", "options"):
            response = getattr(client[caller], method)(path)
            where = (method, path, response.status_code)
            assert response.status_code < 500, where
            if (method, path) in {("get", "/api/docs/"), ("get", "/api/redoc/")}:
                continue  # Swagger UI and ReDoc: pages for people, by the SPEC.
            assert not response["Content-Type"].startswith("text/html"), where
            assert not response.content.lstrip().startswith(b"<"), where
            if response.status_code >= 400:
                assert_json_error(response, response.status_code)


NOT_TASK_IDS = [
    "not-a-uuid",
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "1 OR 1=1",
    "%00",
    "0" * 1000,
    "{}",
    "null",
    str(NO_SUCH_ID),
]


@pytest.mark.parametrize("task_id", NOT_TASK_IDS)
def test_a_task_id_that_names_no_task_is_a_json_404(admin_client, node_client, task_id):
    calls = {
        "detail": (admin_client.get, "/api/tasks/{id}"),
        "detail as a node": (node_client.get, "/api/tasks/{id}"),
        "delete": (admin_client.delete, "/api/tasks/{id}"),
        "history": (admin_client.get, "/api/tasks/history/{id}"),
    }

    answers = {
        name: error_status(send(route.format(id=task_id))) for name, (send, route) in calls.items()
    }

    assert answers == dict.fromkeys(calls, 404)
