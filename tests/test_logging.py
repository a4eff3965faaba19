"""Structured logging: one JSON line per request, tagged with a request id that the client sees."""

import io
import json
import logging
import re
import sys

import pytest

from taskmgmt.logging import JsonFormatter, current_request_id
from tests.factories import PASSWORD
from tests.redis_server import redis_cache, unreachable_redis_url

REQUEST_FIELDS = {"request_id", "method", "path", "status", "duration_ms", "user_id"}


@pytest.fixture
def log_lines():
    """Everything the configured stdout handler writes during the test, parsed line by line."""
    handler = next(
        h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)
    )
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    handler.setStream(previous)


def request_lines(lines):
    return [line for line in lines if line["logger"] == "taskmgmt.request"]


@pytest.mark.django_db
def test_a_request_writes_one_json_line_with_its_id_method_path_status_and_duration(
    anon_client, log_lines
):
    response = anon_client.get("/healthz")

    [line] = request_lines(log_lines())
    assert line.keys() >= REQUEST_FIELDS
    assert line["method"] == "GET"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["user_id"] is None
    assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])
    assert response["X-Request-ID"] == line["request_id"]


@pytest.mark.django_db
def test_each_request_gets_its_own_id(anon_client, log_lines):
    first = anon_client.get("/healthz")["X-Request-ID"]
    second = anon_client.get("/healthz")["X-Request-ID"]

    assert first != second
    assert [line["request_id"] for line in request_lines(log_lines())] == [first, second]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/tasks", "/api/auth/login", "/healthz"])
def test_a_bad_host_header_is_a_json_400_logged_once_as_a_warning_without_a_traceback(
    anon_client, log_lines, path
):
    response = anon_client.get(path, HTTP_HOST="attacker.example")

    assert response.status_code == 400
    assert response.json().keys() == {"title", "message"}
    lines = log_lines()
    [warning] = [line for line in lines if line["level"] != "INFO"]
    assert warning["level"] == "WARNING"
    assert warning["logger"] == "django.security.DisallowedHost"
    assert "attacker.example" in warning["message"]
    assert not any("exception" in line for line in lines)
    assert [line["status"] for line in request_lines(lines)] == [400]


@pytest.mark.django_db
def test_an_error_response_is_logged_with_its_status(anon_client, log_lines):
    anon_client.get("/no-such-page")

    [line] = request_lines(log_lines())
    assert (line["path"], line["status"]) == ("/no-such-page", 404)


@pytest.mark.django_db
def test_a_5xx_answer_is_logged_once_and_every_line_carries_its_request_id(
    anon_client, log_lines, settings
):
    # /healthz answers 503 (not an exception) when a dependency is down.
    settings.CACHES = redis_cache(unreachable_redis_url())

    response = anon_client.get("/healthz")

    assert response.status_code == 503
    lines = log_lines()
    assert [line["status"] for line in request_lines(lines)] == [503]
    assert all(line.get("request_id") == response["X-Request-ID"] for line in lines), lines


def test_an_api_request_logs_the_token_users_id(node, node_client, log_lines):
    response = node_client.get("/api/auth/profile")

    assert response.status_code == 200
    [line] = request_lines(log_lines())
    assert line["user_id"] == str(node.id)


def test_an_admin_site_request_logs_the_session_users_id(admin_user, client, log_lines):
    client.force_login(admin_user)

    assert client.get("/admin/").status_code == 200
    [line] = request_lines(log_lines())
    assert line["user_id"] == str(admin_user.id)


def test_logging_a_request_never_loads_the_user_itself(
    admin_user, client, log_lines, django_assert_num_queries
):
    """A view that never looked at the user must not pay a session and user query for the log."""
    client.force_login(admin_user)

    with django_assert_num_queries(1):  # healthz's own SELECT 1
        client.get("/healthz")
    [line] = request_lines(log_lines())
    assert line["user_id"] is None


@pytest.mark.django_db
def test_a_supplied_request_id_is_kept_and_echoed(anon_client, log_lines):
    response = anon_client.get("/healthz", HTTP_X_REQUEST_ID="trace-42.a:b_C")

    assert response["X-Request-ID"] == "trace-42.a:b_C"
    [line] = request_lines(log_lines())
    assert line["request_id"] == "trace-42.a:b_C"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("supplied", "kept"),
    [
        ('abc"}\\ <script>def', "abcscriptdef"),
        ("x" * 500, "x" * 64),
        ("é€ü-1", "-1"),
    ],
)
def test_a_supplied_request_id_is_stripped_to_safe_characters_and_bounded(
    anon_client, log_lines, supplied, kept
):
    response = anon_client.get("/healthz", HTTP_X_REQUEST_ID=supplied)

    assert response["X-Request-ID"] == kept
    [line] = request_lines(log_lines())
    assert line["request_id"] == kept


@pytest.mark.django_db
def test_a_supplied_request_id_with_nothing_safe_in_it_is_replaced(anon_client):
    response = anon_client.get("/healthz", HTTP_X_REQUEST_ID="<>;{}")

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_a_line_logged_while_serving_a_request_carries_its_id(log_lines):
    logger = logging.getLogger("taskmgmt.tests")
    token = current_request_id.set("req-1")
    try:
        logger.warning("inside", extra={"event": "probe"})
    finally:
        current_request_id.reset(token)
    logger.warning("outside")

    inside, outside = log_lines()
    assert inside["request_id"] == "req-1"
    assert (inside["message"], inside["event"]) == ("inside", "probe")
    assert "request_id" not in outside


def test_an_exception_is_logged_as_one_json_line_with_its_traceback(log_lines):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("taskmgmt.tests").exception("failed")

    [line] = log_lines()
    assert line["level"] == "ERROR"
    assert "ValueError: boom" in line["exception"]


@pytest.mark.django_db
def test_a_refused_request_is_logged_as_a_warning(anon_client, log_lines):
    response = anon_client.get("/api/auth/profile")

    assert response.status_code == 401
    [line] = request_lines(log_lines())
    assert (line["level"], line["status"]) == ("WARNING", 401)


@pytest.mark.parametrize(
    ("password", "active", "reason"),
    [("wrong-password-1", True, "wrong_password"), (PASSWORD, False, "inactive")],
)
def test_a_failed_login_is_logged_with_its_reason_and_request_id(
    node, anon_client, log_lines, password, active, reason
):
    node.is_active = active
    node.save()

    response = anon_client.post(
        "/api/auth/login", {"username": node.email, "password": password}, format="json"
    )

    assert response.status_code in (401, 403)
    [failure] = [line for line in log_lines() if line.get("event") == "login_failed"]
    assert failure["level"] == "WARNING"
    assert failure["reason"] == reason
    assert failure["user_id"] == str(node.id)
    assert failure["request_id"] == response["X-Request-ID"]
    assert password not in json.dumps(failure)


@pytest.mark.django_db
def test_a_login_with_an_unknown_email_logs_the_failure_but_not_the_name(anon_client, log_lines):
    anon_client.post(
        "/api/auth/login", {"username": "typo-secret@example.com", "password": "x"}, format="json"
    )

    [failure] = [line for line in log_lines() if line.get("event") == "login_failed"]
    assert (failure["reason"], failure["user_id"]) == ("unknown_user", None)
    assert "typo-secret" not in json.dumps(log_lines())


def handlers_reached(name: str) -> list[logging.Handler]:
    """The handlers a record logged on `name` is written by, following propagation."""
    logger, found = logging.getLogger(name), []
    while logger:
        found += [h for h in logger.handlers if not type(h).__module__.startswith("_pytest")]
        if not logger.propagate:
            break
        logger = logger.parent
    return found


@pytest.mark.parametrize(
    "name", ["django.utils.autoreload", "django.request", "django.db.backends", "taskmgmt.sweep"]
)
def test_a_log_line_is_written_once_as_json(name):
    # Django's own `console` handler on "django" printed a plain copy under runserver.
    assert [type(handler.formatter) for handler in handlers_reached(name)] == [JsonFormatter]


def test_runservers_access_line_is_left_to_the_request_log():
    # Discarded, not handler-less: a handler-less WARNING goes to Python's last resort.
    handlers = handlers_reached("django.server")
    assert handlers
    assert all(isinstance(handler, logging.NullHandler) for handler in handlers)


@pytest.mark.process
def test_runserver_prints_each_request_once(tmp_path):
    from tests.ports import free_port
    from tests.test_docs import Server, environment, fetch, manage

    env = environment(tmp_path, debug=True)
    manage(env, "migrate", "--noinput", "-v", "0")
    port = free_port()
    command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    server = Server(command, env, tmp_path / "server.log", port)
    try:
        fetch(f"{server.origin}/api/no-such-page")
    finally:
        server.stop()

    printed = server.log.read_text().splitlines()
    assert len([line for line in printed if "/api/no-such-page" in line]) == 1
