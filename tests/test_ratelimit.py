"""Rate limits: login per IP and per username, the rest of the API per user.

Rates are per hour here so a test never straddles a counting window.
"""

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from taskmgmt.sql import rate_window
from tests.factories import PASSWORD, NodeFactory
from tests.redis_server import redis_database

LOGIN = "/api/auth/login"
PROFILE = "/api/auth/profile"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db


def login(username, password=PASSWORD, ip="10.0.0.1", **headers):
    return APIClient().post(
        LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip, **headers
    )


def assert_rate_limited(response, period_seconds=3600):
    assert response.status_code == 429, response.content
    assert response.json()["title"] == "Too Many Requests"
    assert 0 < int(response["Retry-After"]) <= period_seconds


# --- Login per username ---------------------------------------------------------


@override_settings(RATELIMIT_LOGIN_USER="3/h", RATELIMIT_LOGIN_IP="100/h")
def test_login_is_limited_per_username_in_any_case_even_with_the_right_password():
    NodeFactory(email="worker@example.com")
    for username in ("worker@example.com", "WORKER@example.com", " Worker@Example.com "):
        assert login(username, "wrong-password").status_code == 401

    assert_rate_limited(login("worker@example.com"))


@override_settings(RATELIMIT_LOGIN_USER="3/h", RATELIMIT_LOGIN_IP="100/h")
def test_the_username_limit_holds_across_ips_and_spares_other_usernames():
    NodeFactory(email="worker@example.com")
    NodeFactory(email="other@example.com")
    for number in range(3):
        assert login("worker@example.com", "wrong", ip=f"10.0.0.{number}").status_code == 401

    assert_rate_limited(login("worker@example.com", ip="10.9.9.9"))
    assert login("other@example.com").status_code == 200


# --- Login per IP -----------------------------------------------------------------


@override_settings(RATELIMIT_LOGIN_IP="3/h", RATELIMIT_LOGIN_USER="100/h")
def test_login_is_limited_per_ip_whatever_the_usernames():
    NodeFactory(email="worker@example.com")
    for number in range(3):
        assert login(f"guess{number}@example.com").status_code == 401

    assert_rate_limited(login("worker@example.com"))
    assert login("worker@example.com", ip="10.0.0.2").status_code == 200


@override_settings(
    RATELIMIT_LOGIN_IP="3/h", RATELIMIT_LOGIN_USER="100/h", RATELIMIT_IP_META_KEY="HTTP_X_REAL_IP"
)
def test_behind_a_proxy_the_ip_comes_from_the_configured_header():
    NodeFactory(email="worker@example.com")
    for number in range(3):
        login(f"guess{number}@example.com", HTTP_X_REAL_IP="203.0.113.7")

    assert_rate_limited(login("worker@example.com", HTTP_X_REAL_IP="203.0.113.7"))
    assert login("worker@example.com", HTTP_X_REAL_IP="203.0.113.8").status_code == 200


# --- The rest of the API, per user -----------------------------------------------


@override_settings(RATELIMIT_API="3/h")
def test_the_api_is_limited_per_user(node, client_for):
    client = client_for(node)
    for _ in range(3):
        assert client.get(PROFILE).status_code == 200

    assert_rate_limited(client.get(PROFILE))
    assert_rate_limited(client_for(node).get(PROFILE))
    assert client_for(NodeFactory()).get(PROFILE).status_code == 200


@override_settings(RATELIMIT_API="2/h")
def test_anonymous_token_refresh_is_limited_per_ip():
    for _ in range(2):
        assert APIClient().post("/api/auth/refresh", {"refresh": "x"}).status_code == 401

    assert_rate_limited(APIClient().post("/api/auth/refresh", {"refresh": "x"}))
    other_ip = APIClient().post("/api/auth/refresh", {"refresh": "x"}, REMOTE_ADDR="10.0.0.9")
    assert other_ip.status_code == 401


@override_settings(RATELIMIT_API="3/h")
def test_requests_refused_for_a_bad_token_are_counted_per_ip():
    bad_token = {"HTTP_AUTHORIZATION": "Bearer not-a-token"}
    for _ in range(3):
        assert APIClient().get(PROFILE, **bad_token).status_code == 401

    assert_rate_limited(APIClient().get(PROFILE, **bad_token))
    assert_rate_limited(APIClient().get(PROFILE))  # no token at all: the same IP's count
    assert APIClient().get(PROFILE, REMOTE_ADDR="10.0.0.9", **bad_token).status_code == 401


@override_settings(RATELIMIT_API="3/h")
def test_requests_refused_as_forbidden_are_counted_per_ip(node, client_for):
    for _ in range(3):
        assert client_for(node).get("/api/tasks/all").status_code == 403

    assert_rate_limited(client_for(node).get("/api/tasks/all"))
    # Allowed calls are still counted per user, apart from the refusals.
    assert client_for(node).get(PROFILE).status_code == 200


@override_settings(RATELIMIT_API="1/h", RATELIMIT_LOGIN_IP="1/h", RATELIMIT_ENABLE=False)
def test_ratelimit_enable_false_turns_every_limit_off(node_client):
    for _ in range(3):
        assert node_client.get(PROFILE).status_code == 200
        assert login("nobody@example.com").status_code == 401


# --- A shared count in the real Redis ---------------------------------------------

REDIS_DB = 13
# Logs in without a password: a 400 that checks no password, but counts (the account's
# budget is found in the database, a fresh one per process).
LOGIN_SCRIPT = """
import sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client
client = Client()
for _ in range(int(sys.argv[1])):
    response = client.post(
        "/api/auth/login", {"username": sys.argv[2]}, content_type="application/json"
    )
    print(response.status_code)
"""


@pytest.fixture
def redis_db():
    with redis_database(REDIS_DB) as url:
        yield url


def name_whose_window_lasts(seconds: float) -> str:
    """An account name whose hourly login window does not end within `seconds`:
    django-ratelimit offsets each key's window by the key, so a fixed name's ends at
    one fixed second of every hour, and a test run across it counted in two windows."""
    now = time.time()
    for index in itertools.count():
        name = f"shared{index}@example.com"
        if rate_window("login-account", "5/h", f"name:{name}").ends_at - now > seconds:
            return name
    raise AssertionError("unreachable")


def logins_in_a_new_process(cache_url: str, count: int, database: Path, username: str) -> list[int]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CACHE_URL": cache_url,
        "ALLOWED_HOSTS": "testserver",
        "RATELIMIT_LOGIN_USER": "5/h",
        "RATELIMIT_LOGIN_IP": "1000/h",
    }
    result = subprocess.run(
        [sys.executable, "-c", LOGIN_SCRIPT, str(count), username],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [int(line) for line in result.stdout.split() if line.isdigit()]


@pytest.mark.process
def test_two_processes_share_the_login_count_in_redis(redis_db, tmp_path):
    username = name_whose_window_lasts(120)  # both processes count in one window
    first = logins_in_a_new_process(redis_db, 3, tmp_path / "first.sqlite3", username)
    second = logins_in_a_new_process(redis_db, 3, tmp_path / "second.sqlite3", username)

    assert first == [400, 400, 400]
    assert second == [400, 400, 429]


def test_one_request_is_counted_in_one_window_however_often_it_is_asked(monkeypatch, rf):
    """The heartbeat's hot path asks for its window before the throttle does; a window
    ending between the two asks must not make it count the request in two windows."""
    import time

    from taskmgmt.throttling import ApiRateThrottle

    node, now = NodeFactory(), time.time()
    request = rf.post("/api/nodes/heartbeat")
    request.user = node
    monkeypatch.setattr(time, "time", lambda: now)
    first = ApiRateThrottle().window_for(request)
    monkeypatch.setattr(time, "time", lambda: now + 3600)  # the window has ended since
    assert ApiRateThrottle().window_for(request) == first
    later = rf.post("/api/nodes/heartbeat")
    later.user = node
    assert ApiRateThrottle().window_for(later).cache_key != first.cache_key
