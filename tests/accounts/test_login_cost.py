"""What the worst anonymous login can cost: a few milliseconds of CPU, not a second.

A 1 MB username of U+FDFA (NFKC expands each to 18 characters) cost 1-1.5 s of CPU
when it was normalized before its length was checked, and every login throttle ran
even after the per-IP one refused. The bound is CPU time of the process for one
request through the test client, set far above what the request needs (README,
"What an anonymous request can cost") and far below that second.
"""

import gc
import json
import time

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client, override_settings
from django.test.client import BOUNDARY, encode_multipart
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from tests.api import assert_json_error

pytestmark = pytest.mark.django_db

CPU_BOUND_SECONDS = 0.05
# The character NFKC expands most (to 18), as many as fit in the largest body accepted.
EXPANDING = "\ufdfa"
# Not the test client's MULTIPART_CONTENT object, which would have it encode the body again.
ENCODED = f"multipart/form-data; boundary={BOUNDARY}"
IP_LIMIT = override_settings(RATELIMIT_LOGIN_IP="3/h", RATELIMIT_LOGIN_USER="100/h")


def largest_json(field: str, other: dict) -> bytes:
    """A JSON body with `field` a string of EXPANDING, just within the body limit."""
    overhead = len(json.dumps({**other, field: ""}).encode())
    count = (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - overhead) // len(EXPANDING.encode())
    body = json.dumps({**other, field: EXPANDING * count}, ensure_ascii=False).encode()
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert limit - 3 < len(body) <= limit
    return body


@pytest.fixture(autouse=True)
def _warm():
    """The first request of a process pays for lazy imports and caches, once: measured
    are the requests after it."""
    api_login_garbage(ip="10.9.9.9")
    admin_login_garbage(ip="10.9.9.9")
    cache.clear()


def cpu_of(send, *args, **kwargs):
    # The request's own work: a full collection of the garbage other tests left in this
    # process (an xdist worker's) may land inside it. One loaded `make test-fast` measured
    # 0.29 s for a request that takes milliseconds alone; that is the likeliest cause.
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        response = send(*args, **kwargs)
        cpu = time.process_time() - started
    finally:
        gc.enable()
    return response, cpu


def api_login_garbage(ip="10.9.0.1"):
    body = largest_json("username", {"password": "x"})
    return cpu_of(
        lambda: APIClient().post(
            "/api/auth/login", body, content_type="application/json", REMOTE_ADDR=ip
        )
    )


def test_the_largest_expanding_username_is_refused_in_milliseconds():
    response, cpu = api_login_garbage()

    assert_json_error(response, 400)
    assert [error["field"] for error in response.json()["errors"]] == ["username"]
    assert cpu < CPU_BOUND_SECONDS


@IP_LIMIT
def test_once_the_ips_budget_is_spent_the_same_request_is_refused_before_its_body_is_read():
    for _ in range(3):
        assert api_login_garbage()[0].status_code == 400

    response, cpu = api_login_garbage()

    assert_json_error(response, 429)
    assert cpu < CPU_BOUND_SECONDS


def admin_login_garbage(ip="10.9.0.2"):
    count = (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - 1000) // len(EXPANDING.encode())
    body = encode_multipart(BOUNDARY, {"username": EXPANDING * count, "password": "x"})
    return cpu_of(
        lambda: Client().post(reverse("admin:login"), body, content_type=ENCODED, REMOTE_ADDR=ip)
    )


@pytest.mark.parametrize("limited", [False, True], ids=["within budget", "over budget"])
def test_the_admin_login_refuses_the_largest_expanding_username_in_milliseconds(limited):
    with override_settings(RATELIMIT_LOGIN_IP="0/h" if limited else "100/h"):
        response, cpu = admin_login_garbage()

    assert response.status_code == 200  # the login page again, with its error
    assert cpu < CPU_BOUND_SECONDS


def test_signup_and_edit_profile_refuse_the_largest_expanding_email_in_milliseconds(
    admin_client, node_client, node
):
    signup = largest_json("email", {"name": "n", "password": "a-long-passphrase-1"})
    edit = largest_json("email", {"name": "n"})
    for client, method, path, body in [
        (admin_client, "post", "/api/auth/signup", signup),
        (node_client, "put", "/api/auth/edit-profile", edit),
    ]:
        send = getattr(client, method)
        send(path, b"{}", content_type="application/json")  # this view's first request
        response, cpu = cpu_of(send, path, body, content_type="application/json")

        errors = assert_json_error(response, 400)["errors"]
        assert [error["field"] for error in errors] == ["email"]
        assert cpu < CPU_BOUND_SECONDS
    assert User.objects.count() == 2


def api_login(email, ip):
    body = {"username": email, "password": "wrong"}
    return APIClient().post("/api/auth/login", body, REMOTE_ADDR=ip).status_code


def admin_login(email, ip):
    body = {"username": email, "password": "wrong"}
    page = Client().post(reverse("admin:login"), body, REMOTE_ADDR=ip)
    return 429 if "Too many login attempts" in page.content.decode() else 401


@IP_LIMIT
@pytest.mark.parametrize("login", [api_login, admin_login], ids=["api", "admin site"])
def test_a_refusal_per_ip_spends_no_accounts_budget(node, login):
    """The limits stop at the first refusal: a request refused per IP is not counted
    against the account it names (nor does it look the account up)."""
    with override_settings(RATELIMIT_LOGIN_USER="5/h"):
        answers = [login(node.email, "10.9.1.1") for _ in range(6)]
        assert answers == [401] * 3 + [429] * 3

        assert login(node.email, "10.9.1.2") == 401  # the account's 4th count of 5, not its 7th


def test_an_overlong_refresh_token_is_refused_before_it_is_decoded():
    body = json.dumps({"refresh": "a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - 20)}).encode()

    response, cpu = cpu_of(
        APIClient().post, "/api/auth/refresh", body, content_type="application/json"
    )

    errors = assert_json_error(response, 400)["errors"]
    assert [error["field"] for error in errors] == ["refresh"]
    assert cpu < CPU_BOUND_SECONDS
