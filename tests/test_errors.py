"""The one error format: every failure under /api/ is JSON {title, message}, never a 500."""

import uuid

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, OperationalError
from django.test import Client, override_settings
from django.urls import include, path
from django.utils.decorators import method_decorator
from django_ratelimit.decorators import ratelimit
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

import taskmgmt.urls
from tests.api import assert_json_error
from tests.factories import PASSWORD
from tests.test_attacks import api_routes

LOGIN = "/api/auth/login"

pytestmark = pytest.mark.django_db


def post_raw(body: bytes | str, content_type="application/json", path=LOGIN):
    return APIClient().generic("POST", path, body, content_type=content_type)


# --- Views that fail on purpose, mounted beside the real URLs ---------------


class RaisingView(APIView):
    """Raises what the test asks for, as code deeper in a view might."""

    permission_classes = [AllowAny]
    raised = {
        "bug": RuntimeError("a bug"),
        "integrity": IntegrityError("duplicate key"),
        "database-down": OperationalError("server has gone away"),
        "model-validation": DjangoValidationError(
            {"locked_at": ["The deadline must be in the future."], "__all__": ["Bad task."]}
        ),
    }

    def get(self, request, kind):
        raise self.raised[kind]


class DecoratedRatelimitView(APIView):
    permission_classes = [AllowAny]

    @method_decorator(ratelimit(key="ip", rate="1/h", block=True))
    def get(self, request):
        return Response({"message": "ok"})


def django_view_bug(request):
    raise RuntimeError("a bug outside DRF")


urlpatterns = [
    path("api/test-raise/<str:kind>", RaisingView.as_view()),
    path("api/test-ratelimit", DecoratedRatelimitView.as_view()),
    path("test-django-bug", django_view_bug),
    path("", include("taskmgmt.urls")),
]
handler500 = taskmgmt.urls.handler500

with_test_views = pytest.mark.urls(__name__)


# --- Malformed bodies ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"{'username': 'single quotes'}",
        b'{"username": NaN}',
        b"\xff\xfe not utf-8",
        b"1" * 5000,
    ],
    ids=["truncated", "not-json", "nan", "not-utf8", "huge-integer"],
)
def test_malformed_json_is_a_400(body):
    body = assert_json_error(post_raw(body), 400)
    assert "JSON parse error" in body["message"]


def test_a_body_that_starts_with_a_utf8_byte_order_mark_is_read_past_it():
    """Express's parser (the original's) skipped it; Python's json refused it (a 400)."""
    body = "\ufeff" + '{"username": "nobody@example.com", "password": "wrong"}'

    response = post_raw(body.encode("utf-8"))

    assert_json_error(response, 401)  # read: the credentials, not the body, are wrong
    assert_json_error(post_raw(b"\xef\xbb\xbf"), 400)  # a mark and nothing after it


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_json_is_a_400_not_a_500(depth):
    nested = "[" * depth + "]" * depth
    response = post_raw(f'{{"username": {nested}, "password": "x"}}')

    assert "nested too deeply" in assert_json_error(response, 400)["message"]


@pytest.mark.parametrize("body", ["null", "[]", '"a string"', "42", '[{"username": "a"}]'])
def test_a_body_that_is_not_an_object_is_a_400(body):
    assert_json_error(post_raw(body), 400)


def test_an_empty_json_body_is_a_400_naming_every_missing_field():
    body = assert_json_error(post_raw(""), 400)

    assert body["title"] == "Validation error"
    assert [error["field"] for error in body["errors"]] == ["username", "password"]
    assert body["message"] == "username: This field is required. (and 1 more)"


@pytest.mark.parametrize(
    "username",
    [r"\ud800@example.com", r"nul\u0000@example.com"],
    ids=["lone-surrogate", "nul-character"],
)
def test_characters_no_database_can_store_are_a_400(username):
    response = post_raw(f'{{"username": "{username}", "password": "{PASSWORD}"}}')

    assert assert_json_error(response, 400)["errors"][0]["field"] == "username"


def test_an_object_where_a_uuid_is_expected_is_a_400(node_client):
    response = node_client.put(
        "/api/tasks/shift-status", {"taskId": {"$gt": ""}, "taskStatus": "in_progress"}
    )

    assert [error["field"] for error in assert_json_error(response, 400)["errors"]] == ["taskId"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_json_is_a_415(content_type):
    response = post_raw("username=a&password=b", content_type=content_type)

    assert_json_error(response, 415)


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_body_over_the_size_limit_is_a_413():
    big = '{"username": "%s", "password": "x"}' % ("a" * 1000)

    assert "1000 bytes" in assert_json_error(post_raw(big), 413)["message"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_body_at_the_size_limit_is_read():
    body = '{"username": "nobody@example.com", "password": "%s"}'
    padded = body % ("x" * (1000 - len(body % "")))

    assert len(padded) == 1000
    assert_json_error(post_raw(padded), 401)


# --- Unknown paths and methods --------------------------------------------------


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
def test_an_unknown_api_path_is_a_json_404_with_or_without_debug(settings, debug, method):
    settings.DEBUG = debug

    response = getattr(APIClient(), method)("/api/no-such-thing")

    assert_json_error(response, 404)


def test_an_unknown_path_outside_the_api_is_a_json_404_too():
    assert_json_error(Client().get("/no-such-page"), 404)


def test_a_wrong_method_is_a_json_405_naming_the_allowed_one():
    response = APIClient().get(LOGIN)

    assert_json_error(response, 405)
    assert response["Allow"] == "POST, OPTIONS"


def _allowed(response) -> set[str]:
    return {method.strip() for method in response["Allow"].split(",")}


@pytest.mark.parametrize("route", sorted(api_routes()))
def test_options_answers_exactly_the_methods_allow_lists(admin_client, settings, route):
    """Every method Allow names is served, every other one is a 405 naming the same set."""
    settings.RATELIMIT_LOGIN_USER = "1000/h"  # six calls to the login name no one
    path = route.replace("{taskId}", str(uuid.uuid4())).replace("{status}", "pending")

    options = admin_client.options(path)

    assert options.status_code == 200, options.content
    assert options.json() == {"methods": options["Allow"].split(", ")}
    allowed = _allowed(options)
    assert "OPTIONS" in allowed
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = admin_client.generic(method, path, "{}", content_type="application/json")
        if method in allowed:
            assert response.status_code != 405, (method, response.content)
        else:
            assert_json_error(response, 405)
            assert _allowed(response) == allowed, method


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        (f"/api/tasks?cursor={'A' * 4100}", {}, 414),
        ("/api/tasks", {"HTTP_X_PADDING": "a" * 8200}, 431),
        ("/api/tasks", {f"HTTP_X_HEADER_{number}": "1" for number in range(101)}, 431),
    ],
    ids=["long URI", "long header", "many headers"],
)
def test_a_request_larger_than_the_api_accepts_is_a_json_414_or_431(
    node_client, path, headers, status
):
    assert_json_error(node_client.get(path, **headers), status)


def test_a_chunked_body_is_a_json_411_not_an_empty_body(node_client):
    """Django reads a body by its Content-Length; without one it saw none (the real
    server's side of this is in tests/test_serving.py)."""
    response = node_client.post(
        "/api/nodes/heartbeat",
        '{"taskIds": "not-a-list"}',
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
    )

    assert "Content-Length" in assert_json_error(response, 411)["message"]


def test_options_needs_a_token_like_every_other_method():
    assert_json_error(APIClient().options("/api/auth/edit-profile"), 401)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"])
def test_healthz_answers_get_and_head_only_and_a_json_405_otherwise(method):
    response = APIClient().generic(method, "/healthz")

    assert_json_error(response, 405)
    assert response["Allow"] == "GET, HEAD"
    assert Client().get("/healthz").status_code == 200
    assert Client().head("/healthz").status_code == 200


def test_missing_credentials_are_a_json_401_with_the_bearer_challenge():
    response = APIClient().get("/api/auth/profile")

    assert_json_error(response, 401)
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


# --- Exceptions raised inside views --------------------------------------------


@with_test_views
@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_in_an_api_view_is_a_json_500_without_details(settings, debug):
    settings.DEBUG = debug

    body = assert_json_error(APIClient().get("/api/test-raise/bug"), 500)

    assert "a bug" not in body["message"]


@with_test_views
@pytest.mark.parametrize(("kind", "status_code"), [("integrity", 409), ("database-down", 503)])
def test_database_errors_get_their_own_answers(kind, status_code):
    assert_json_error(APIClient().get(f"/api/test-raise/{kind}"), status_code)


@with_test_views
def test_a_database_outage_says_when_to_try_again():
    response = APIClient().get("/api/test-raise/database-down")

    # As for the cache's outage and the 503s answered outside DRF (docs/api.md).
    assert assert_json_error(response, 503)["message"].startswith("The database is unavailable")
    assert response["Retry-After"] == "5"


@with_test_views
def test_a_models_validation_error_is_a_400_with_api_field_names():
    body = assert_json_error(APIClient().get("/api/test-raise/model-validation"), 400)

    assert body["errors"] == [
        {"field": "lockedAt", "message": "The deadline must be in the future."},
        {"field": None, "message": "Bad task."},
    ]


@with_test_views
def test_django_ratelimits_own_exception_is_a_429_not_a_403():
    client = APIClient()
    assert client.get("/api/test-ratelimit").status_code == 200

    response = client.get("/api/test-ratelimit")

    assert_json_error(response, 429)
    assert int(response["Retry-After"]) > 0


@with_test_views
def test_a_bug_in_a_plain_django_view_is_a_json_500():
    client = Client(raise_request_exception=False)

    assert_json_error(client.get("/test-django-bug"), 500)


def test_a_request_for_an_unknown_host_is_a_json_400():
    assert_json_error(Client().get("/api/auth/profile", HTTP_HOST="evil.example"), 400)


@pytest.mark.parametrize("path", ["/api/auth/profile", "/api/tasks/all", "/healthz"])
def test_with_debug_on_an_unknown_host_is_still_a_json_400_for_the_api(settings, path):
    settings.DEBUG = True  # as `make run` serves: Django's debug page answered, in HTML

    response = Client().get(path, HTTP_HOST="evil.example")

    assert_json_error(response, 400)
    # The admin site keeps Django's own page for a person (and its debug details).
    assert Client().get("/admin/", HTTP_HOST="evil.example")["Content-Type"].startswith("text/html")
