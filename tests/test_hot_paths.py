"""The hot paths (taskmgmt.hot_paths) answer a node's heartbeat, progress report and
task read exactly as Django does, with the same effects, and hand every other request
to Django untouched. Each request goes through the WSGI application gunicorn serves
(taskmgmt.wsgi) and, the same, through Django's application alone."""

import contextlib
import io
import json
import random
import sys
from datetime import timedelta

import pytest
import redis
from django.core.cache import caches
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework_simplejwt.tokens import RefreshToken

from nodes.models import ServingRecord
from taskmgmt import hot_paths
from taskmgmt.wsgi import application
from tasks.models import Task, TaskStatus
from tests.factories import TaskFactory
from tests.redis_server import redis_cache, redis_database, unreachable_redis_url
from tests.test_logging import log_lines, request_lines  # noqa: F401  (a fixture)

DJANGO = application.django_app


@pytest.fixture(autouse=True)
def _connections_kept():
    """As Django's test client does: the test's transaction must outlive each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


class Counting:
    """Django's application, counting the requests that reach it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return DJANGO(environ, start_response)


def environ(method, path, *, body=None, token=None, query="", content_type=None, **headers):
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if content_type or raw:
        env["CONTENT_TYPE"] = content_type or "application/json"
    if token:
        env["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    env.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    return env


def call(app, env):
    """(status code, headers without the request id, parsed or raw body)."""
    started = []
    body = b"".join(app(env, lambda status, headers, *a: started.append((status, headers))))
    status, headers = started[0]
    headers = dict(headers)
    assert headers.pop("X-Request-ID")
    with contextlib.suppress(ValueError):
        body = json.loads(body)
    return int(status.split()[0]), headers, body


def token_for(user) -> str:
    return str(RefreshToken.for_user(user).access_token)


MOMENTS = {"serverTime", "leaseExpiresAt", "updatedAt"}
# What differs between two tasks made alike, one for each way of sending the request.
ANOTHER_TASK = {"id", "taskName", "assignedNode", "createdAt", "lockedAt"}


def without_times(value, also=frozenset()):
    """The answer with the server's clock readings (new on each request) taken out."""
    if isinstance(value, dict):
        return {k: without_times(v, also) for k, v in value.items() if k not in MOMENTS | also}
    return value


def both_ways(make_environ, queries=None):
    """The same request through the hot paths, then through Django alone; `queries`, a
    list, gets how many queries each way sent."""
    counting = Counting()
    with CaptureQueriesContext(connection) as hot_queries:
        hot = call(hot_paths.HotPaths(counting), make_environ())
    with CaptureQueriesContext(connection) as django_queries:
        django = call(DJANGO, make_environ())
    if queries is not None:
        queries += [len(hot_queries), len(django_queries)]
    return hot, django, counting.calls


@pytest.fixture
def in_progress(node):
    return TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)


def new_task(node, status=TaskStatus.PENDING, owner=False):
    """A task of `node`'s, made for one request; its id (or, `owner`, a new node
    owning it alone, for a claim)."""
    # One name for all: the factory's "Task 9" and "Task 10" made the two answers'
    # Content-Length differ by a byte, whichever sequence number a run reached.
    name = "A task for one request"
    if owner:
        return TaskFactory(status=status, name=name).assigned_node
    return str(TaskFactory(assigned_node=node, status=status, name=name).pk)


def hot_requests(node, in_progress, admin_user):
    """What a worker sends most: each answered on the hot path with a 200."""
    node_token, task_id = token_for(node), str(in_progress.pk)
    report = {"taskId": task_id, "percent": 40, "message": "rows", "checkpoint": {"row": 4}}
    return {
        "an empty heartbeat": lambda: environ("POST", "/api/nodes/heartbeat", token=node_token),
        "a heartbeat of {}": lambda: environ(
            "POST", "/api/nodes/heartbeat", body={}, token=node_token
        ),
        "a heartbeat naming its tasks": lambda: environ(
            "POST", "/api/nodes/heartbeat", body={"taskIds": [task_id]}, token=node_token
        ),
        "a heartbeat accepting what axios accepts": lambda: environ(
            "POST",
            "/api/nodes/heartbeat",
            token=node_token,
            accept="application/json, text/plain, */*",
        ),
        "a progress report": lambda: environ(
            "PUT", "/api/tasks/progress", body=report, token=node_token
        ),
        "its node reading a task": lambda: environ(
            "GET", f"/api/tasks/{task_id}", token=node_token
        ),
        "its node completing a task": lambda: environ(
            "PUT",
            "/api/tasks/shift-status",
            body={
                "taskId": new_task(node, TaskStatus.IN_PROGRESS),
                "taskStatus": "completed",
                "result": {"rows": 4},
            },
            token=node_token,
        ),
        "its node starting a task": lambda: environ(
            "PUT",
            "/api/tasks/shift-status",
            body={"taskId": new_task(node), "taskStatus": "in_progress"},
            token=node_token,
        ),
        "a claim": lambda: environ(
            "POST", "/api/tasks/claim", token=token_for(new_task(node, owner=True))
        ),
        "an admin reading a task": lambda: environ(
            "GET", f"/api/tasks/{task_id}", token=token_for(admin_user)
        ),
    }


HOT = [
    "an empty heartbeat",
    "a heartbeat of {}",
    "a heartbeat naming its tasks",
    "a heartbeat accepting what axios accepts",
    "a progress report",
    "its node reading a task",
    "an admin reading a task",
    "its node completing a task",
    "its node starting a task",
    "a claim",
]


ON_NEW_TASKS = {"its node completing a task", "its node starting a task", "a claim"}


@pytest.mark.parametrize("name", HOT)
def test_a_hot_request_is_answered_without_django_and_as_django_answers_it(
    name, node, in_progress, admin_user
):
    queries = []
    hot, django, django_calls = both_ways(
        hot_requests(node, in_progress, admin_user)[name], queries
    )

    assert django_calls == 0
    hot_queries, django_queries = queries
    # On MariaDB a heartbeat's facts and a read task go in one query with the caller's
    # user (read_with_user).
    merged = ("heartbeat" in name or "reading a task" in name) and connection.vendor == "mysql"
    assert hot_queries == django_queries - merged
    assert hot[0] == django[0] == 200
    assert hot[1] == django[1]  # every header, the request id aside
    also = ANOTHER_TASK if name in ON_NEW_TASKS else frozenset()
    assert without_times(hot[2], also) == without_times(django[2], also)


def test_a_body_with_a_byte_order_mark_stays_on_the_hot_path(node, in_progress):
    report = {"taskId": str(in_progress.pk), "percent": 7}
    counting = Counting()

    status, _, body = call(
        hot_paths.HotPaths(counting),
        environ(
            "PUT",
            "/api/tasks/progress",
            body=b"\xef\xbb\xbf" + json.dumps(report).encode(),
            token=token_for(node),
        ),
    )

    assert (status, counting.calls) == (200, 0)
    assert body["task"]["progress"]["percent"] == 7


def test_a_lowercase_bearer_scheme_stays_on_the_hot_path(node):
    counting = Counting()
    env = environ("POST", "/api/nodes/heartbeat", AUTHORIZATION=f"bearer {token_for(node)}")

    status, _, body = call(hot_paths.HotPaths(counting), env)

    assert (status, counting.calls) == (200, 0)
    assert body["schedulable"] is True


def test_a_progress_report_on_the_hot_path_is_stored(node, in_progress):
    report = {"taskId": str(in_progress.pk), "percent": 55, "message": "m", "checkpoint": [1]}
    counting = Counting()

    status, _, body = call(
        hot_paths.HotPaths(counting),
        environ("PUT", "/api/tasks/progress", body=report, token=token_for(node)),
    )

    assert (status, counting.calls) == (200, 0)
    task = Task.objects.get(pk=in_progress.pk)
    assert (task.progress_percent, task.progress_message, task.checkpoint) == (55, "m", [1])
    assert body["task"]["progress"]["percent"] == 55


def test_a_heartbeat_on_the_hot_path_names_a_task_taken_away(node, in_progress):
    taken = TaskFactory(assigned_node=node, status=TaskStatus.PENDING)
    body = {"taskIds": [str(in_progress.pk), str(taken.pk)]}
    counting = Counting()

    status, _, answer = call(
        hot_paths.HotPaths(counting),
        environ("POST", "/api/nodes/heartbeat", body=body, token=token_for(node)),
    )

    assert (status, counting.calls) == (200, 0)
    assert answer["revokedTaskIds"] == [str(taken.pk)]


def refused_requests(node, other_node, in_progress, admin_user):
    """Requests the hot paths leave to Django: each must get exactly Django's answer."""
    node_token, task_id = token_for(node), str(in_progress.pk)
    report = {"taskId": task_id, "percent": 40}
    heartbeat, progress = "/api/nodes/heartbeat", "/api/tasks/progress"
    pending = TaskFactory(assigned_node=node)
    return {
        "no token": lambda: environ("POST", heartbeat),
        "a bad token": lambda: environ("POST", heartbeat, token="not-a-jwt"),
        "an admin beating": lambda: environ("POST", heartbeat, token=token_for(admin_user)),
        "a body that is not JSON": lambda: environ("POST", heartbeat, body=b"{", token=node_token),
        "a body of another type": lambda: environ(
            "POST", heartbeat, body=b"taskIds=1", content_type="text/plain", token=node_token
        ),
        "a charset named": lambda: environ(
            "POST",
            heartbeat,
            body={},
            content_type="application/json; charset=utf-8",
            token=node_token,
        ),
        "null": lambda: environ("POST", heartbeat, body=b"null", token=node_token),
        "a task id that is not one": lambda: environ(
            "POST", heartbeat, body={"taskIds": ["x"]}, token=node_token
        ),
        "an Origin": lambda: environ(
            "POST", heartbeat, token=node_token, origin="https://ops.example.com"
        ),
        "a query string": lambda: environ("POST", heartbeat, token=node_token, query="format=json"),
        "an Accept the API cannot meet": lambda: environ(
            "POST", heartbeat, token=node_token, accept="text/html"
        ),
        "an Accept with an indent": lambda: environ(
            "POST", heartbeat, token=node_token, accept="application/json; indent=4"
        ),
        "an Accept with weights": lambda: environ(
            "POST", heartbeat, token=node_token, accept="application/json;q=0.9, */*;q=0.1"
        ),
        "a host not allowed": lambda: environ(
            "POST", heartbeat, token=node_token, host="evil.test"
        ),
        "a percent over 100": lambda: environ(
            "PUT", progress, body={"taskId": task_id, "percent": 101}, token=node_token
        ),
        "another node's report": lambda: environ(
            "PUT", progress, body=report, token=token_for(other_node)
        ),
        "a report on a pending task": lambda: environ(
            "PUT", progress, body={"taskId": str(pending.pk), "percent": 1}, token=node_token
        ),
        "a report on no task": lambda: environ(
            "PUT", progress, body={"taskId": str(other_node.pk), "percent": 1}, token=node_token
        ),
        "another node's task": lambda: environ(
            "GET", f"/api/tasks/{task_id}", token=token_for(other_node)
        ),
        "no such task": lambda: environ("GET", f"/api/tasks/{other_node.pk}", token=node_token),
        "a status change on another node's task": lambda: environ(
            "PUT",
            "/api/tasks/shift-status",
            body={"taskId": task_id, "taskStatus": "completed"},
            token=token_for(other_node),
        ),
        "a pending task completed": lambda: environ(
            "PUT",
            "/api/tasks/shift-status",
            body={"taskId": str(pending.pk), "taskStatus": "completed"},
            token=node_token,
        ),
        "a status that is not one": lambda: environ(
            "PUT",
            "/api/tasks/shift-status",
            body={"taskId": task_id, "taskStatus": "done"},
            token=node_token,
        ),
        "a claim with nothing to claim": lambda: environ(
            "POST", "/api/tasks/claim", token=token_for(other_node)
        ),
        "an admin claiming": lambda: environ(
            "POST", "/api/tasks/claim", token=token_for(admin_user)
        ),
        "a claim whose body is not JSON": lambda: environ(
            "POST", "/api/tasks/claim", body=b'{"taskId":', token=node_token
        ),
        "a claim with a body of another type": lambda: environ(
            "POST", "/api/tasks/claim", body=b"x", content_type="text/plain", token=node_token
        ),
        "a claim whose body is JSON but no object": lambda: environ(
            "POST", "/api/tasks/claim", body=b"1", token=node_token
        ),
        "an Idempotency-Key": lambda: environ(
            "POST", heartbeat, token=node_token, idempotency_key="k-1"
        ),
        "a task id in capitals": lambda: environ(
            "GET", f"/api/tasks/{task_id.upper()}", token=node_token
        ),
    }


REFUSED = [
    "no token",
    "a bad token",
    "an admin beating",
    "a body that is not JSON",
    "a body of another type",
    "a charset named",
    "null",
    "a task id that is not one",
    "an Origin",
    "a query string",
    "an Accept the API cannot meet",
    "an Accept with an indent",
    "an Accept with weights",
    "a host not allowed",
    "a percent over 100",
    "another node's report",
    "a report on a pending task",
    "a report on no task",
    "another node's task",
    "no such task",
    "a status change on another node's task",
    "a pending task completed",
    "a status that is not one",
    "a claim with nothing to claim",
    "an admin claiming",
    "a claim whose body is not JSON",
    "a claim with a body of another type",
    "a claim whose body is JSON but no object",
    "an Idempotency-Key",
    "a task id in capitals",
]


@pytest.mark.parametrize("name", REFUSED)
def test_any_other_request_gets_django_s_own_answer(
    name, node, other_node, in_progress, admin_user
):
    make = refused_requests(node, other_node, in_progress, admin_user)[name]

    hot, django, django_calls = both_ways(make)

    assert django_calls == 1
    assert hot[0] == django[0]
    assert hot[1] == django[1]
    assert without_times(hot[2]) == without_times(django[2])


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/api/tasks/progress", {"percent": 5}),
        ("/api/tasks/shift-status", {"taskStatus": "completed"}),
    ],
)
@pytest.mark.parametrize("attempt", [2**31, 2**63, 2**64, 10**30])
def test_an_attempt_beyond_the_attempts_column_is_the_same_400_both_ways(
    node, in_progress, path, fields, attempt
):
    body = {"taskId": str(in_progress.pk), "attempt": attempt, **fields}

    hot, django, django_calls = both_ways(
        lambda: environ("PUT", path, body=body, token=token_for(node))
    )

    assert (django_calls, hot[0], django[0]) == (1, 400, 400)
    assert hot[2] == django[2]
    assert [e["field"] for e in hot[2]["errors"]] == ["attempt"]


def test_the_cases_cover_every_route_and_both_answers():
    assert len(hot_paths._routes) == 5
    assert len(HOT) == 10 and len(REFUSED) == 30


@override_settings(RATELIMIT_API="2/h")
def test_a_request_handed_to_django_is_counted_once_against_the_rate_limit(node, in_progress):
    """The hot path counts before the work; a refusal after that must not count twice."""
    pending = TaskFactory(assigned_node=node)
    app, token = hot_paths.HotPaths(DJANGO), token_for(node)
    refused = {"taskId": str(pending.pk), "percent": 1}  # 409: the task is not in progress

    first = call(app, environ("PUT", "/api/tasks/progress", body=refused, token=token))
    second = call(app, environ("POST", "/api/nodes/heartbeat", token=token))
    third = call(app, environ("POST", "/api/nodes/heartbeat", token=token))

    assert [first[0], second[0], third[0]] == [409, 200, 429]
    assert third[1]["Retry-After"].isdigit()


@override_settings(HOT_PATHS=False)
def test_hot_paths_false_sends_everything_to_django(node):
    counting = Counting()

    status, _, _ = call(
        hot_paths.HotPaths(counting), environ("POST", "/api/nodes/heartbeat", token=token_for(node))
    )

    assert (status, counting.calls) == (200, 1)


def requests_counted(view: str) -> float:
    value = REGISTRY.get_sample_value(
        "taskmgmt_http_requests_total", {"method": "POST", "view": view, "status": "200"}
    )
    return value or 0.0


def test_a_hot_answer_is_logged_counted_and_recorded_as_serving(
    node,
    log_lines,  # noqa: F811  (the fixture imported above)
    serving_recorded,
):
    before = requests_counted("node-heartbeat")
    hot = hot_paths.HotPaths(Counting())

    def beat(app):
        env = environ("POST", "/api/nodes/heartbeat", token=token_for(node), x_request_id="r-1")
        return call(app, env)[0]

    assert [beat(hot), beat(DJANGO)] == [200, 200]

    hot_line, django_line = request_lines(log_lines())
    for line in hot_line, django_line:
        del line["time"], line["duration_ms"]
    assert hot_line == django_line
    assert hot_line["request_id"] == "r-1" and hot_line["user_id"] == str(node.pk)
    assert requests_counted("node-heartbeat") == before + 2
    record = ServingRecord.objects.get(pk=ServingRecord.ROW)
    assert timezone.now() - record.last_serving < timedelta(seconds=5)


def test_behind_a_tls_proxy_the_hot_answer_carries_hsts_as_django_s_does(node):
    def make():
        return environ(
            "POST", "/api/nodes/heartbeat", token=token_for(node), x_forwarded_proto="https"
        )

    hot, django, django_calls = both_ways(make)

    assert django_calls == 0
    assert hot[1] == django[1]
    assert hot[1]["Strict-Transport-Security"].startswith("max-age=")


def test_a_status_change_on_the_hot_path_is_in_the_history_by_its_node(node, in_progress):
    counting = Counting()
    body = {"taskId": str(in_progress.pk), "taskStatus": "completed", "result": {"rows": 9}}

    status, _, _ = call(
        hot_paths.HotPaths(counting),
        environ("PUT", "/api/tasks/shift-status", body=body, token=token_for(node)),
    )

    assert (status, counting.calls) == (200, 0)
    task = Task.objects.get(pk=in_progress.pk)
    assert (task.status, task.result) == (TaskStatus.COMPLETED, {"rows": 9})
    change = task.history.get(to_value=TaskStatus.COMPLETED)
    assert change.performed_by_id == node.pk


def test_an_error_after_a_committed_change_is_a_500_never_a_second_run(
    node, in_progress, monkeypatch
):
    """Through Django a second run would answer 409 (already completed) for work done."""
    from tasks import hot_paths as task_hot_paths

    def broken(task):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(task_hot_paths, "task_representation", broken)
    counting = Counting()
    body = {"taskId": str(in_progress.pk), "taskStatus": "completed"}

    status, headers, answer = call(
        hot_paths.HotPaths(counting),
        environ("PUT", "/api/tasks/shift-status", body=body, token=token_for(node)),
    )

    assert (status, counting.calls) == (500, 0)
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert answer["message"] == "Something went wrong on our side; it has been logged."
    task = Task.objects.get(pk=in_progress.pk)
    assert task.status == TaskStatus.COMPLETED
    assert task.history.filter(to_value=TaskStatus.COMPLETED).count() == 1


# Bodies and content types a careless or hostile client sends; "{task}" is the task's id.
ODD_BODIES = [
    b"",
    b"{}",
    b"[]",
    b"null",
    b"0",
    b'"x"',
    b"{",
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{}",
    b'{"a": NaN}',
    b'{"taskIds": null}',
    b'{"taskIds": []}',
    b'{"taskIds": [1]}',
    b'{"taskIds": "x"}',
    b'{"taskIds": ["00000000-0000-0000-0000-000000000000"]}',
    b'{"taskId": "{task}"}',
    b'{"taskId": "{task}", "percent": 50}',
    b'{"taskId": "{task}", "percent": "50"}',
    b'{"taskId": "{task}", "percent": true}',
    b'{"taskId": "{task}", "percent": 1e400}',
    b'{"taskId": "{task}", "attempt": 0}',
    b'{"taskId": "{task}", "attempt": 1, "percent": 10}',
    b'{"taskId": "{task}", "percent": 50.5, "message": "\\ud800"}',
    b'{"taskId": "{task}", "checkpoint": {"a": "\\u0000"}}',
    b'{"taskId": "{task}", "percent": 50}{}',
    b'{"taskId": "{task}", "percent": 5, "x": 1}',
    b'{"taskId": "{task}", "taskStatus": "completed", "result": [1]}',
    b'{"taskId": "{task}", "taskStatus": "failed", "reason": "' + b"x" * 600 + b'"}',
    b'{"taskId": "{task}", "taskStatus": "in_progress"}',
]
ODD_TYPES = [
    None,
    "application/json",
    "APPLICATION/JSON",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/merge-patch+json",
]
NODE_WRITES = [
    ("POST", "/api/nodes/heartbeat"),
    ("PUT", "/api/tasks/progress"),
    ("PUT", "/api/tasks/shift-status"),
    ("POST", "/api/tasks/claim"),
]


@pytest.mark.parametrize("seed", range(200))
def test_an_odd_request_gets_the_same_answer_both_ways(seed, node):
    chance = random.Random(seed)
    status = chance.choice([TaskStatus.IN_PROGRESS, TaskStatus.PENDING])
    task = TaskFactory(assigned_node=node, status=status)
    method, path = chance.choice(NODE_WRITES)
    body = chance.choice(ODD_BODIES).replace(b"{task}", str(task.pk).encode())
    content_type = chance.choice(ODD_TYPES)
    headers = chance.choice([{}, {"accept": "application/json"}, {"x_request_id": "a b"}])
    token = token_for(node)

    def make():
        env = environ(method, path, body=body, token=token, **headers)
        env.pop("CONTENT_TYPE", None)
        if content_type:
            env["CONTENT_TYPE"] = content_type
        return env

    hot, django, _ = both_ways(make)

    if hot[0] == 200 and path in ("/api/tasks/shift-status", "/api/tasks/claim"):
        return  # done once; the second way meets the task changed (the cases above compare)
    assert hot[0] == django[0]
    assert hot[1] == django[1]
    assert without_times(hot[2]) == without_times(django[2])


@pytest.mark.skipif(connection.vendor != "mysql", reason="SQLite's connections need no ping")
def test_a_hot_request_sends_no_ping_before_its_first_query(node, in_progress, admin_user):
    """CONN_HEALTH_CHECKS pings a kept connection at each request's first query; a hot
    request's first query, a read, finds a dead one itself (tests/test_faults.py)."""
    connection.ensure_connection()
    raw = connection.connection
    pings, ping = [], raw.ping
    raw.ping = lambda *args: pings.append(args) or ping(*args)
    try:
        for name, make in hot_requests(node, in_progress, admin_user).items():
            request = make()  # may make a task first
            connection.health_check_done = False  # as a new request finds it
            counting = Counting()
            assert call(hot_paths.HotPaths(counting), request)[0] == 200, name
            assert counting.calls == 0, name
        assert pings == []
        request = hot_requests(node, in_progress, admin_user)["an empty heartbeat"]()
        connection.health_check_done = False
        assert call(DJANGO, request)[0] == 200
        assert len(pings) == 1  # Django's own path still pings
    finally:
        raw.ping = ping


HOT_PATHS_REDIS_DB = 4


@pytest.fixture
def redis_beats(settings):
    """The production cache (Redis): beats wait there, and so do the rate counts."""
    with redis_database(HOT_PATHS_REDIS_DB) as url:
        settings.CACHES = redis_cache(url)
        settings.NODE_HEARTBEAT_FLUSH_SECONDS = 60  # the first beat flushes, no other
        yield redis.Redis.from_url(url)


def redis_commands(monkeypatch) -> list:
    sent = []
    send = redis.Redis.execute_command

    def counting(self, *args, **options):
        sent.append(args[0])
        return send(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counting)
    return sent


def test_a_hot_heartbeat_counts_and_beats_in_one_redis_round_trip(
    node, redis_beats, settings, monkeypatch
):
    settings.RATELIMIT_API = "3/h"
    app, token = hot_paths.HotPaths(DJANGO), token_for(node)

    def beat():
        return call(app, environ("POST", "/api/nodes/heartbeat", token=token))

    assert beat()[0] == 200  # takes the flush lock, and flushes
    sent = redis_commands(monkeypatch)
    assert beat()[0] == 200
    assert sent == ["EVALSHA"]  # the beat with the count; Django's path sends two
    (count_key,) = [key for key in redis_beats.keys("*") if b"heartbeats" not in key]
    assert redis_beats.get(count_key) == b"2"
    assert 0 < redis_beats.ttl(count_key) <= 3600 + 60

    assert beat()[0] == 200
    stamped = redis_beats.hget(caches["default"].make_key("heartbeats:pending"), str(node.pk))
    over = beat()  # the 4th in the hour: Django answers the 429, counting nothing more
    assert over[0] == 429
    assert redis_beats.get(count_key) == b"4"
    later = redis_beats.hget(caches["default"].make_key("heartbeats:pending"), str(node.pk))
    assert int(later) > int(stamped)  # a node over its limit is still alive


def test_a_hot_heartbeat_with_redis_down_is_written_to_the_database_and_answered(
    node, settings, caplog
):
    settings.CACHES = redis_cache(unreachable_redis_url())
    app, token = hot_paths.HotPaths(Counting()), token_for(node)

    status, _, body = call(app, environ("POST", "/api/nodes/heartbeat", token=token))

    assert status == 200 and "pendingCount" in body
    node.refresh_from_db()
    assert node.last_seen is not None  # straight to the database
    assert "rate limit not counted" in caplog.text  # the limit fails open, as in Django's path


@pytest.mark.skipif(connection.vendor != "mysql", reason="SQLite reads one statement a query")
def test_a_hot_heartbeat_reads_its_facts_in_one_query_with_its_user(node, in_progress):
    held = {"taskIds": [str(in_progress.pk)]}
    request = environ("POST", "/api/nodes/heartbeat", body=held, token=token_for(node))
    with CaptureQueriesContext(connection) as queries:
        status, _, body = call(hot_paths.HotPaths(Counting()), request)
    assert status == 200 and body["revokedTaskIds"] == []
    first = queries[0]["sql"]
    assert "`accounts_user`" in first and "UNION ALL" in first  # the user, then the facts
    # then the beat (written at once: no Redis here) and the tasks it named, read apart
    assert len(queries) == 3, [q["sql"][:80] for q in queries]


@pytest.mark.skipif(connection.vendor != "mysql", reason="SQLite reads one statement a query")
def test_a_hot_task_read_is_one_query_with_its_user(node, in_progress):
    request = environ("GET", f"/api/tasks/{in_progress.pk}", token=token_for(node))
    with CaptureQueriesContext(connection) as queries:
        status, _, body = call(hot_paths.HotPaths(Counting()), request)
    assert (status, body["task"]["id"]) == (200, str(in_progress.pk))
    (query,) = [q["sql"] for q in queries]
    assert "`accounts_user`" in query and "`tasks_task`" in query
