"""Idempotency-Key on POST /api/tasks and POST /api/auth/signup (taskmgmt.idempotency).

A repeat gets the first answer and acts once; across threads of a live server and
across processes sharing Redis too.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from tasks.models import Task, TaskHistory
from tests.api import assert_json_error
from tests.factories import AdminFactory, NodeFactory
from tests.mariadb import wait_until_blocked
from tests.redis_server import redis_database

ROOT = Path(__file__).resolve().parent.parent
TASKS, SIGNUP = "/api/tasks", "/api/auth/signup"
REDIS_DB = 6
WAIT = 10  # seconds; longer means a request is stuck

on_mariadb = pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="needs concurrent writers, and a database that other processes reach",
)


def task_body(node, name="Reindex") -> dict:
    return {
        "taskName": name,
        "taskDetails": "Rebuild the search index.",
        "assignedNode": str(node.pk),
        "lockedAt": (timezone.now() + timedelta(days=1)).isoformat(),
    }


def signup_body(email="new-node@example.com") -> dict:
    return {"name": "New node", "email": email, "password": "a-long-node-password"}


def post(client, path, body, key):
    return client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def assert_replayed(first, repeat):
    assert repeat.status_code == first.status_code
    assert repeat.content == first.content
    assert repeat["Content-Type"] == "application/json; charset=utf-8"
    assert repeat["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first


# --- Repeats ---------------------------------------------------------------------


@pytest.mark.django_db
def test_a_repeated_task_creation_returns_the_first_answer_and_creates_one_task(admin_client, node):
    body = task_body(node)
    first = post(admin_client, TASKS, body, "create-reindex-1")
    repeats = [post(admin_client, TASKS, body, "create-reindex-1") for _ in range(3)]

    assert first.status_code == 201
    for repeat in repeats:
        assert_replayed(first, repeat)
    assert Task.objects.count() == 1
    assert TaskHistory.objects.count() == 1


@pytest.mark.django_db
def test_a_repeated_signup_returns_the_first_answer_and_creates_one_user(admin_client):
    first = post(admin_client, SIGNUP, signup_body(), "signup-1")
    repeat = post(admin_client, SIGNUP, signup_body(), "signup-1")

    assert first.status_code == 201
    assert_replayed(first, repeat)
    assert User.objects.filter(email="new-node@example.com").count() == 1


@pytest.mark.django_db
def test_the_same_json_in_another_key_order_and_spacing_is_the_same_body(admin_client, node):
    body = task_body(node)
    first = post(admin_client, TASKS, body, "k")
    reordered = json.dumps(dict(reversed(body.items())), indent=4)
    repeat = admin_client.post(
        TASKS, reordered, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )

    assert_replayed(first, repeat)
    assert Task.objects.count() == 1


@pytest.mark.django_db
def test_without_the_header_every_post_acts(admin_client, node):
    body = task_body(node)
    assert admin_client.post(TASKS, body).status_code == 201
    assert admin_client.post(TASKS, body).status_code == 201

    assert Task.objects.count() == 2


@pytest.mark.django_db
def test_keys_are_per_user(admin_client, client_for, node):
    body = task_body(node)
    mine = post(admin_client, TASKS, body, "shared-key")
    theirs = post(client_for(AdminFactory()), TASKS, body, "shared-key")

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["task"]["id"] != theirs.json()["task"]["id"]
    assert "Idempotent-Replayed" not in theirs
    assert Task.objects.count() == 2


# --- The same key for something else: 422 ------------------------------------------


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_422_and_acts_not(admin_client, node):
    post(admin_client, TASKS, task_body(node), "k")

    response = post(admin_client, TASKS, task_body(node, name="Another"), "k")

    body = assert_json_error(response, 422)
    assert "Idempotency-Key" in body["message"]
    assert list(Task.objects.values_list("name", flat=True)) == ["Reindex"]


@pytest.mark.django_db
def test_the_same_key_on_another_endpoint_is_a_422(admin_client, node):
    post(admin_client, TASKS, task_body(node), "k")

    assert_json_error(post(admin_client, SIGNUP, signup_body(), "k"), 422)
    assert not User.objects.filter(email="new-node@example.com").exists()


# --- Which answers are kept ----------------------------------------------------------


@pytest.mark.django_db
def test_a_validation_error_is_kept_so_the_key_cannot_be_reused_for_a_fixed_body(
    admin_client, node
):
    bad = {**task_body(node), "lockedAt": "2001-01-01T00:00:00Z"}
    first = post(admin_client, TASKS, bad, "k")
    repeat = post(admin_client, TASKS, bad, "k")
    fixed = post(admin_client, TASKS, task_body(node), "k")

    assert_json_error(first, 400)
    assert_replayed(first, repeat)
    assert_json_error(fixed, 422)
    assert Task.objects.count() == 0


@pytest.mark.django_db
def test_a_conflict_is_not_kept_a_retry_after_it_is_resolved_acts(admin_client):
    taken = NodeFactory(email="new-node@example.com")
    first = post(admin_client, SIGNUP, signup_body(), "k")
    taken.email = "moved@example.com"
    taken.save()
    retry = post(admin_client, SIGNUP, signup_body(), "k")

    assert_json_error(first, 409)
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry
    assert User.objects.filter(email="new-node@example.com").count() == 1


@pytest.mark.django_db
def test_a_rate_limited_request_is_not_kept(admin_client, node):
    body = task_body(node)
    with override_settings(RATELIMIT_API="1/h"):
        admin_client.get("/api/auth/profile")
        limited = post(admin_client, TASKS, body, "k")
    retry = post(admin_client, TASKS, body, "k")

    assert limited.status_code == 429
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry
    assert Task.objects.count() == 1


@pytest.mark.django_db
@override_settings(IDEMPOTENCY_KEY_TTL=1)
def test_a_key_expires_after_idempotency_key_ttl(admin_client, node):
    body = task_body(node)
    first = post(admin_client, TASKS, body, "k")
    time.sleep(1.2)
    later = post(admin_client, TASKS, body, "k")

    assert (first.status_code, later.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in later
    assert Task.objects.count() == 2


# --- Bad keys: 400, nothing done -------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key",
    ["", "   ", "k" * 256, "clé", "tab\there", "bell\x07", "new\nline", "del\x7f"],
    ids=["empty", "blank", "256-long", "non-ascii", "tab", "control", "newline", "del"],
)
def test_a_malformed_key_is_a_400_and_creates_nothing(admin_client, node, key):
    for path, body in ((TASKS, task_body(node)), (SIGNUP, signup_body())):
        body_of_error = assert_json_error(post(admin_client, path, body, key), 400)
        assert "Idempotency-Key" in body_of_error["message"]

    assert Task.objects.count() == 0
    assert not User.objects.filter(email="new-node@example.com").exists()


@pytest.mark.django_db
def test_a_key_of_255_printable_characters_is_accepted(admin_client, node):
    key, body = ("a-Z 0~!" * 40)[:255], task_body(node)
    first = post(admin_client, TASKS, body, key)

    assert first.status_code == 201
    assert_replayed(first, post(admin_client, TASKS, body, key))


@pytest.mark.django_db
def test_the_key_is_checked_after_the_caller_is_authorized(node_client, anon_client, node):
    assert_json_error(post(node_client, TASKS, task_body(node), ""), 403)
    assert_json_error(post(anon_client, TASKS, task_body(node), ""), 401)


@pytest.mark.django_db
@override_settings(RATELIMIT_ENABLE=False)
def test_without_the_cache_a_keyed_request_is_refused_with_503_and_acts_not(admin_client, node):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    dead = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0"}
    with override_settings(CACHES={"default": dead}):
        response = post(admin_client, TASKS, task_body(node), "k")

    assert_json_error(response, 503)
    assert int(response["Retry-After"]) > 0
    assert Task.objects.count() == 0


# --- In flight: 409 with Retry-After, never a second effect ------------------------------


def http_post(url, body, token, key):
    """(status, headers, body bytes) of one real HTTP request."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": key,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def hold_node_row(node, released: threading.Event, held: threading.Event):
    """Locks the node's row on another connection: a task create for it waits (it takes the
    node's lock before its insert, nodes.models.lock_nodes)."""
    try:
        with transaction.atomic():
            User.objects.select_for_update().get(pk=node.pk)
            held.set()
            released.wait(WAIT)
    finally:
        connection.close()


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
@pytest.mark.mysql
@on_mariadb
def test_a_repeat_while_the_first_is_in_flight_is_a_409_with_retry_after(live_server):
    admin, node = AdminFactory(), NodeFactory()
    token = str(RefreshToken.for_user(admin).access_token)
    url, body = f"{live_server.url}{TASKS}", task_body(node)
    released, held = threading.Event(), threading.Event()
    with ThreadPoolExecutor(2) as pool:
        pool.submit(hold_node_row, node, released, held)
        assert held.wait(WAIT)
        first = pool.submit(http_post, url, body, token, "k")
        wait_until_blocked("SELECT%FOR UPDATE%")

        in_flight = http_post(url, body, token, "k")
        other_body = http_post(url, task_body(node, name="Other"), token, "k")
        released.set()
        first_status, _headers, first_content = first.result(WAIT)
    retry = http_post(url, body, token, "k")

    assert in_flight[0] == 409
    assert int(in_flight[1]["Retry-After"]) >= 1
    assert json.loads(in_flight[2])["title"] == "Conflict"
    assert other_body[0] == 422
    assert first_status == 201
    assert (retry[0], retry[2]) == (201, first_content)
    assert retry[1]["Idempotent-Replayed"] == "true"
    assert Task.objects.count() == 1


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
@pytest.mark.mysql
@on_mariadb
@pytest.mark.parametrize("path", [TASKS, SIGNUP])
@pytest.mark.parametrize("cache_backend", ["locmem", "redis"])
def test_concurrent_duplicates_on_a_live_server_act_exactly_once(
    live_server, path, cache_backend, request
):
    if cache_backend == "redis":
        location = request.getfixturevalue("redis_url")
        redis_cache = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": location}
        request.getfixturevalue("settings").CACHES = {"default": redis_cache}
    admin, node = AdminFactory(), NodeFactory()
    token = str(RefreshToken.for_user(admin).access_token)
    body = task_body(node) if path == TASKS else signup_body()
    start = threading.Barrier(6)

    def client():
        start.wait(WAIT)
        for _ in range(100):
            status, headers, content = http_post(f"{live_server.url}{path}", body, token, "k")
            if status != 409:
                return status, content
            assert int(headers["Retry-After"]) >= 1
            time.sleep(0.05)  # a real client would wait Retry-After; the test need not
        pytest.fail("the key stayed in flight")

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: client(), range(6)))

    assert {status for status, _ in answers} == {201}
    assert len({content for _, content in answers}) == 1
    if cache_backend == "redis":  # the answer is kept there, not in this process
        assert redis.Redis.from_url(location).keys("*idempotency:*")
    if path == TASKS:
        assert Task.objects.count() == 1
    else:
        assert User.objects.filter(email="new-node@example.com").count() == 1


# --- Across processes sharing Redis ------------------------------------------------------

POST_SCRIPT = """
import json, os, sys
import django
django.setup()
from django.test import Client
response = Client().post(
    sys.argv[1], sys.argv[2], content_type="application/json",
    HTTP_AUTHORIZATION="Bearer " + os.environ["TOKEN"], HTTP_IDEMPOTENCY_KEY=sys.argv[3],
)
print(json.dumps({"status": response.status_code, "body": response.content.decode(),
                  "replayed": response.get("Idempotent-Replayed")}))
"""


@pytest.fixture
def redis_url():
    with redis_database(REDIS_DB) as url:
        yield url


def post_in_a_new_process(redis_url, token, path, body, key) -> dict:
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CACHE_URL": redis_url,
        "DATABASE_URL": (
            f"mysql://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:"
            f"{database['PORT'] or 3306}/{database['NAME']}"
        ),
        "ALLOWED_HOSTS": "testserver",
        "TOKEN": token,
    }
    result = subprocess.run(
        [sys.executable, "-c", POST_SCRIPT, path, json.dumps(body), key],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
@pytest.mark.mysql
@on_mariadb
def test_two_processes_sharing_redis_give_the_same_answer_and_act_once(redis_url):
    admin, node = AdminFactory(), NodeFactory()
    token = str(RefreshToken.for_user(admin).access_token)
    body = task_body(node)

    first = post_in_a_new_process(redis_url, token, TASKS, body, "k")
    second = post_in_a_new_process(redis_url, token, TASKS, body, "k")
    other = post_in_a_new_process(redis_url, token, TASKS, task_body(node, name="Other"), "k")

    assert (first["status"], first["replayed"]) == (201, None)
    assert (second["status"], second["body"], second["replayed"]) == (201, first["body"], "true")
    assert other["status"] == 422
    assert Task.objects.count() == 1


@pytest.mark.process
def test_a_ttl_below_one_second_stops_startup():
    env = {**os.environ, "DEBUG": "true", "IDEMPOTENCY_KEY_TTL": "0"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode != 0
    assert "IDEMPOTENCY_KEY_TTL must be at least 1" in result.stderr
