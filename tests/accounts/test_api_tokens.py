"""Login, refresh, and which tokens the API accepts: real JWTs through the real endpoints."""

import base64
import json
import threading
import time
from datetime import timedelta

import jwt
import pytest
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.api import assert_json_error
from tests.factories import PASSWORD, AdminFactory, NodeFactory

LOGIN = "/api/auth/login"
REFRESH = "/api/auth/refresh"
PROFILE = "/api/auth/profile"
# Signs like our key would, but is not ours.
FOREIGN_KEY = "a-key-that-is-not-ours-but-long-enough"

pytestmark = pytest.mark.django_db


def login(email, password=PASSWORD):
    return APIClient().post(LOGIN, {"username": email, "password": password})


def bearer(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def expired(token_class, user) -> str:
    token = token_class.for_user(user)
    token.set_exp(lifetime=-timedelta(minutes=1))
    return str(token)


def resigned(token, key: str, algorithm: str = "HS256") -> str:
    return jwt.encode(dict(token.payload), key, algorithm=algorithm)


def with_payload(token, **changes) -> str:
    """The token's header and signature around a changed payload."""
    header, _, signature = str(token).split(".")
    payload = json.dumps({**token.payload, **changes}).encode()
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
@pytest.mark.parametrize(
    "method, path",
    [("get", PROFILE), ("post", "/api/nodes/heartbeat")],  # a hot path too
)
def test_the_bearer_scheme_is_read_whatever_its_case(scheme, method, path):
    # RFC 9110 11.1: a scheme is case-insensitive; `bearer` was a 401.
    node = NodeFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {AccessToken.for_user(node)}")

    assert getattr(client, method)(path).status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Basic {AccessToken.for_user(node)}")
    assert getattr(client, method)(path).status_code == 401


# --- Login ------------------------------------------------------------------


def test_login_returns_tokens_and_the_user_details():
    node = NodeFactory(email="worker@example.com", name="Worker")

    response = login("worker@example.com")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "refresh", "userDetails"}
    assert body["userDetails"] == {
        "id": str(node.pk),
        "name": "Worker",
        "email": "worker@example.com",
        "role": "node",
    }
    assert AccessToken(body["token"])["user_id"] == str(node.pk)
    assert RefreshToken(body["refresh"])["user_id"] == str(node.pk)


def test_the_login_token_authenticates_later_requests():
    AdminFactory(email="boss@example.com")

    token = login("boss@example.com").json()["token"]

    response = bearer(token).get(PROFILE)
    assert response.status_code == 200
    assert response.json()["userDetails"]["email"] == "boss@example.com"


def test_login_ignores_the_case_and_surrounding_spaces_of_the_email():
    NodeFactory(email="worker@example.com")

    assert login("  Worker@Example.COM ").status_code == 200


def test_unknown_email_and_wrong_password_get_the_same_401():
    NodeFactory(email="worker@example.com")

    unknown = login("nobody@example.com")
    wrong = login("worker@example.com", "not-the-password")

    assert_json_error(unknown, 401)
    assert_json_error(wrong, 401)
    assert unknown.json() == wrong.json()
    assert unknown["WWW-Authenticate"].startswith("Bearer")


def test_inactive_account_with_the_right_password_gets_403():
    NodeFactory(email="gone@example.com", is_active=False)

    body = assert_json_error(login("gone@example.com"), 403)
    assert "deactivated" in body["message"]


def test_inactive_account_with_a_wrong_password_gets_the_usual_401():
    NodeFactory(email="gone@example.com", is_active=False)

    assert_json_error(login("gone@example.com", "not-the-password"), 401)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": PASSWORD}, "username"),
        ({"username": "worker@example.com"}, "password"),
        ({"username": {"$ne": ""}, "password": PASSWORD}, "username"),
        ({"username": "worker@example.com", "password": ["x"]}, "password"),
        ({"username": 0, "password": PASSWORD}, "username"),
    ],
)
def test_login_without_a_string_username_or_password_is_a_400_naming_the_field(body, field):
    NodeFactory(email="worker@example.com")

    response = APIClient().post(LOGIN, body)

    errors = assert_json_error(response, 400)["errors"]
    assert [error["field"] for error in errors] == [field]


def test_login_ignores_a_bearer_token_even_a_broken_one():
    NodeFactory(email="worker@example.com")
    client = bearer("not-a-jwt")

    response = client.post(LOGIN, {"username": "worker@example.com", "password": PASSWORD})

    assert response.status_code == 200


# --- Refresh ----------------------------------------------------------------


def test_refresh_returns_a_new_pair_that_works():
    node = NodeFactory(email="worker@example.com")
    first = login("worker@example.com").json()

    response = APIClient().post(REFRESH, {"refresh": first["refresh"]})

    assert response.status_code == 200
    pair = response.json()
    assert set(pair) == {"token", "refresh"}
    assert pair["refresh"] != first["refresh"]
    assert bearer(pair["token"]).get(PROFILE).json()["userDetails"]["id"] == str(node.pk)
    assert APIClient().post(REFRESH, {"refresh": pair["refresh"]}).status_code == 200


def test_a_refresh_token_works_only_once():
    NodeFactory(email="worker@example.com")
    refresh = login("worker@example.com").json()["refresh"]
    assert APIClient().post(REFRESH, {"refresh": refresh}).status_code == 200

    again = APIClient().post(REFRESH, {"refresh": refresh})

    assert "blacklisted" in assert_json_error(again, 401)["message"]


def test_refresh_works_for_a_client_whose_access_token_expired():
    node = NodeFactory()
    refresh = RefreshToken.for_user(node)
    response = bearer(expired(AccessToken, node)).post(REFRESH, {"refresh": str(refresh)})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda user: "garbage", id="garbage"),
        pytest.param(lambda user: str(AccessToken.for_user(user)), id="access-token"),
        pytest.param(lambda user: expired(RefreshToken, user), id="expired"),
        pytest.param(lambda user: resigned(RefreshToken.for_user(user), FOREIGN_KEY), id="forged"),
    ],
)
def test_refresh_refuses_what_is_not_a_live_refresh_token(make_token):
    node = NodeFactory()

    response = APIClient().post(REFRESH, {"refresh": make_token(node)})

    assert_json_error(response, 401)


def signed_with_our_key(token, **changes) -> str:
    """The token with changed claims, signed with the key the server signs with: what only
    a holder of that key (another service sharing it, a bug of ours) could send."""
    payload = {**token.payload, **changes}
    for name in [name for name, value in changes.items() if value is None]:
        del payload[name]
    return jwt.encode(payload, api_settings.SIGNING_KEY, algorithm=api_settings.ALGORITHM)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"exp": 1e30}, id="exp-beyond-any-date"),
    ],
)
def test_refresh_with_claims_of_the_wrong_shape_is_a_401_not_a_500(changes):
    node = NodeFactory()
    refresh = signed_with_our_key(RefreshToken.for_user(node), **changes)

    assert_json_error(APIClient().post(REFRESH, {"refresh": refresh}), 401)


def test_refresh_without_a_token_is_a_400():
    body = assert_json_error(APIClient().post(REFRESH, {}), 400)
    assert body["errors"][0]["field"] == "refresh"


def test_refresh_refuses_a_deactivated_users_token():
    node = NodeFactory()
    refresh = RefreshToken.for_user(node)
    node.is_active = False
    node.save()

    assert_json_error(APIClient().post(REFRESH, {"refresh": str(refresh)}), 401)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_refreshes_with_one_token_yield_one_new_pair():
    if connection.vendor == "sqlite":
        pytest.skip("needs row locks across threads: runs on MariaDB")
    node = NodeFactory()
    refresh = str(RefreshToken.for_user(node))
    barrier = threading.Barrier(4)
    statuses = []

    def use_token():
        barrier.wait()
        try:
            statuses.append(APIClient().post(REFRESH, {"refresh": refresh}).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=use_token) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 401, 401, 401]


# --- Which tokens authenticate ----------------------------------------------


def test_a_valid_access_token_authenticates():
    node = NodeFactory()

    assert bearer(AccessToken.for_user(node)).get(PROFILE).status_code == 200


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda user, other: "garbage", id="garbage"),
        pytest.param(lambda user, other: "a.b.c", id="three-garbage-parts"),
        pytest.param(lambda user, other: expired(AccessToken, user), id="expired"),
        pytest.param(
            lambda user, other: with_payload(AccessToken.for_user(user), user_id=str(other.pk)),
            id="tampered-payload",
        ),
        pytest.param(
            lambda user, other: resigned(AccessToken.for_user(user), "", "none"), id="alg-none"
        ),
        pytest.param(
            lambda user, other: resigned(AccessToken.for_user(user), FOREIGN_KEY),
            id="wrong-key",
        ),
        pytest.param(lambda user, other: str(RefreshToken.for_user(user)), id="refresh-as-access"),
    ],
)
def test_a_bad_token_is_a_json_401_never_a_500(make_token):
    node, other = NodeFactory(), NodeFactory()

    response = bearer(make_token(node, other)).get(PROFILE)

    assert_json_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_access_token_with_an_exp_beyond_any_date_is_a_401_not_a_500():
    node = NodeFactory()
    token = signed_with_our_key(AccessToken.for_user(node), exp=1e30)

    response = bearer(token).get(PROFILE)

    assert_json_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_header_with_three_parts_is_a_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer one two")

    assert_json_error(client.get(PROFILE), 401)


def test_basic_authentication_with_the_right_password_does_not_authenticate():
    NodeFactory(email="worker@example.com")
    credentials = base64.b64encode(f"worker@example.com:{PASSWORD}".encode()).decode()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")

    assert_json_error(client.get(PROFILE), 401)


def test_a_session_login_does_not_authenticate_the_api(admin_user):
    client = APIClient()
    client.force_login(admin_user)

    assert_json_error(client.get(PROFILE), 401)


def test_a_deactivated_users_access_token_stops_working():
    node = NodeFactory()
    client = bearer(AccessToken.for_user(node))
    assert client.get(PROFILE).status_code == 200

    node.is_active = False
    node.save()

    assert_json_error(client.get(PROFILE), 401)


def test_a_token_that_worked_stops_working_when_it_expires():
    """A token's verification is kept per process; its expiry is not."""
    node = NodeFactory()
    token = AccessToken.for_user(node)
    # exp is a whole second: 3 s leave it valid for at least 2, however loaded the machine.
    token.set_exp(lifetime=timedelta(seconds=3))
    client = bearer(token)
    assert client.get(PROFILE).status_code == 200

    time.sleep(max(token["exp"] - time.time(), 0) + 0.1)

    assert_json_error(client.get(PROFILE), 401)


def test_a_deleted_users_token_is_a_401():
    node = NodeFactory()
    client = bearer(AccessToken.for_user(node))
    node.delete()

    assert_json_error(client.get(PROFILE), 401)
