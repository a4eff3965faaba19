"""Schema-driven fuzzing: schemathesis sends what /api/schema/ allows (and what it
does not) to the real WSGI app, in-process, as an admin and as a node.

Every answer must be no 5xx, with a status code and content type the schema
documents and a body that matches it. The database holds tasks of two nodes in
every status, with fixed ids that generated ids are steered to, so operations
meet real objects and not only 404s. Bounded and derandomized: a rerun sends the
same requests, and the whole run takes about a minute.
"""

import itertools
import re
import uuid
from datetime import timedelta

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from taskmgmt.pagination import CURSOR_MAX_LENGTH, CURSOR_PATTERN
from tasks.models import TaskStatus
from tests.factories import AdminFactory, NodeFactory, TaskFactory
from tests.test_attacks import api_routes

pytestmark = pytest.mark.fuzz

ADMIN_ID = uuid.UUID(int=1)
NODE_ID = uuid.UUID(int=2)
OTHER_NODE_ID = uuid.UUID(int=3)
NODE_IDS = [str(NODE_ID), str(OTHER_NODE_ID)]
# Tasks 0x100.. are the fuzzing node's, 0x200.. the other node's: one in each
# status, and an open one past its deadline (for the sweep and the 409s).
TASK_STATES = [*TaskStatus.values, "overdue"]
TASK_IDS = [
    str(uuid.UUID(int=base + offset))
    for base in (0x100, 0x200)
    for offset in range(len(TASK_STATES))
]
# The schema and its docs page serve the API's description, not the API.
DOCUMENTATION_ROUTES = {"/api/schema/", "/api/docs/", "/api/redoc/"}

# DRF's refusals of a string's form, which the schema's patterns describe.
FORM_REFUSALS = {"Null characters are not allowed.", "This field may not be blank."}


@schemathesis.check
def valid_strings_are_not_refused_for_their_form(ctx, response, case):
    """What the schema calls a valid string the server takes: a positive case is
    never a 400 for a NUL or a blank (schemathesis's "rejected but valid")."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code != 400:
        return None
    messages = {error["message"] for error in response.json().get("errors", [])}
    assert not messages & FORM_REFUSALS, f"a schema-valid string was refused: {messages}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    # What the schema calls invalid (a cursor's form, a NUL) the server refuses.
    negative_data_rejection,
    valid_strings_are_not_refused_for_their_form,
]
MAX_EXAMPLES = 20

schema = schemathesis.openapi.from_wsgi(
    "/api/schema/",
    WSGIHandler(),
    config=SchemathesisConfig.from_dict(
        {
            "seed": 20251125,
            "cache": {"enabled": False},
            "generation": {
                # Valid requests and invalid ones, each phase: examples, coverage, fuzzing.
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                # The token is ours to send, not the generator's.
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)
OPERATIONS = schema.raw_schema["paths"]


def _seed_tasks(node, other_node) -> None:
    soon = timezone.now() + timedelta(days=1)
    for base, assignee in ((0x100, node), (0x200, other_node)):
        for offset, state in enumerate(TASK_STATES):
            overdue = state == "overdue"
            TaskFactory(
                id=uuid.UUID(int=base + offset),
                assigned_node=assignee,
                status=TaskStatus.PENDING if overdue else state,
                locked_at=timezone.now() - timedelta(hours=1) if overdue else soon,
            )


@pytest.fixture
def fuzz_users(db, settings):
    """Users and tasks with known ids. Rate limits stay on (their code runs), but
    so high that the fuzzer gets answers, not 429s."""
    settings.RATELIMIT_API = settings.RATELIMIT_LOGIN_IP = "1000000/m"
    settings.RATELIMIT_LOGIN_USER = "1000000/m"
    users = {
        "admin": AdminFactory(id=ADMIN_ID),
        "node": NodeFactory(id=NODE_ID),
        "other node": NodeFactory(id=OTHER_NODE_ID),
    }
    _seed_tasks(users["node"], users["other node"])
    return users


@pytest.fixture
def keep_test_connection():
    """Django's WSGI handler closes the connection after each request, which would
    end the test's transaction (it holds the data); its test client skips that too."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def turns():
    return itertools.count()


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(value)
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def _is_datetime(value) -> bool:
    try:
        return isinstance(value, str) and parse_datetime(value) is not None
    except ValueError:  # well formed, but out of range
        return False


def _steer(value, known: list[str], fits, turn: int) -> object:
    """A generated value that `fits` swapped, most turns, for a known one; anything
    else kept. Turns count the examples, so a rerun sends the same requests."""
    if not fits(value):
        return value
    choices = [*known, value]
    return choices[turn % len(choices)]


# Body fields steered to real objects (and a deadline in the future), so valid
# requests get past "no such task" and "deadline passed" to the real work.
STEERED_FIELDS = {
    "taskId": (TASK_IDS, _is_uuid),
    "assignedNode": (NODE_IDS, _is_uuid),
    "nodeId": (NODE_IDS, _is_uuid),
    "lockedAt": (["2999-01-01T00:00:00Z"], _is_datetime),
}


def _aim_at_real_objects(case, turn: int) -> None:
    path = case.path_parameters or {}
    if "taskId" in path:
        path["taskId"] = _steer(path["taskId"], TASK_IDS, _is_uuid, turn)
    if isinstance(case.body, dict):
        for shift, (field, (known, fits)) in enumerate(STEERED_FIELDS.items()):
            if field in case.body:
                # Shifted per field, so the fields' choices combine differently each turn.
                case.body[field] = _steer(case.body[field], known, fits, turn // (shift + 1))


@pytest.mark.parametrize("role", ["admin", "node"])
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_every_answer_is_what_the_schema_says(case, role, fuzz_users, keep_test_connection, turns):
    _aim_at_real_objects(case, next(turns))
    token = AccessToken.for_user(fuzz_users[role])

    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


def test_every_route_under_api_and_cron_is_in_the_schema_with_its_methods():
    served = {
        # DRF answers HEAD wherever there is a GET; OpenAPI leaves it implied.
        route: set(view.actions) - {"head"}
        for route, view in api_routes().items()
        if route not in DOCUMENTATION_ROUTES
    }
    documented = {path: set(item) - {"parameters"} for path, item in OPERATIONS.items()}

    assert served == documented


@pytest.mark.parametrize(
    ("path", "method"),
    [(path, method) for path, item in OPERATIONS.items() for method in item],
)
def test_every_operation_documents_its_rate_limit_and_auth_errors(path, method):
    operation = OPERATIONS[path][method]

    assert "429" in operation["responses"]
    if {"jwtAuth": []} in operation.get("security", []):
        assert "401" in operation["responses"]


def _request_strings() -> list[tuple[str, str, dict]]:
    """Every plain string (no format, no enum) a request body can carry."""
    return [
        (name, field, schema)
        for name, component in raw_components().items()
        if name.endswith("Request")
        for field, schema in component.get("properties", {}).items()
        if schema.get("type") == "string" and "format" not in schema
    ]


def raw_components() -> dict:
    return schema.raw_schema["components"]["schemas"]


def test_every_string_a_request_sends_refuses_nul_in_the_schema_as_the_server_does():
    strings = _request_strings()

    assert {field for _, field, _ in strings} >= {"taskName", "taskDetails", "name", "password"}
    for name, field, string in strings:
        # JSON Schema patterns match anywhere (re.search), not the whole value.
        assert re.search(string["pattern"], "a\x00b") is None, (name, field)
        assert re.search(string["pattern"], "plain text"), (name, field)


def test_every_cursor_parameter_gives_the_cursors_form():
    cursors = [
        parameter["schema"]
        for item in OPERATIONS.values()
        for operation in item.values()
        if isinstance(operation, dict)
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "cursor"
    ]

    assert len(cursors) >= 5
    for cursor in cursors:
        assert cursor["pattern"] == CURSOR_PATTERN
        assert cursor["maxLength"] == CURSOR_MAX_LENGTH
