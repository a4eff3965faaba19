"""One login budget per account and per IP, spent by every password check: the API
login, the admin site's login and update-password's old password.

Rates are per hour so a test never straddles a counting window.
"""

import socket

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from tests.api import assert_json_error
from tests.factories import PASSWORD, AdminFactory, NodeFactory

pytestmark = pytest.mark.django_db

LOGIN = "/api/auth/login"
PROFILE = "/api/auth/profile"
PASSWORD_URL = "/api/auth/update-password"
ADMIN_LOGIN = reverse("admin:login")
NEW_PASSWORD = "a-brand-new-long-passphrase"
LIMITED = "Too many login attempts"
ACCOUNT_LIMIT = override_settings(RATELIMIT_LOGIN_USER="3/h", RATELIMIT_LOGIN_IP="100/h")
IP_LIMIT = override_settings(RATELIMIT_LOGIN_USER="100/h", RATELIMIT_LOGIN_IP="3/h")


def api_login(username, password=PASSWORD, ip="10.0.0.1"):
    return APIClient().post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip)


def admin_login(username, password=PASSWORD, ip="10.0.0.1"):
    client = Client()
    response = client.post(
        ADMIN_LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip
    )
    return response, client


def assert_rate_limited(response):
    assert_json_error(response, 429)
    assert 0 < int(response["Retry-After"]) <= 3600


def assert_admin_refused_as_limited(response, client):
    """The admin's login page again, status 200, saying why; no session."""
    assert response.status_code == 200
    assert LIMITED in response.content.decode()
    assert client.get(reverse("admin:index")).status_code == 302


def assert_admin_logged_in(response, client):
    assert response.status_code == 302, response.content.decode()
    assert client.get(reverse("admin:index")).status_code == 200


# --- The admin login shares the API login's budgets --------------------------------


@ACCOUNT_LIMIT
def test_api_login_failures_lock_the_admin_login_of_that_account():
    boss = AdminFactory()
    for number in range(3):
        assert_json_error(api_login(boss.email, "wrong", ip=f"10.0.1.{number}"), 401)

    assert_admin_refused_as_limited(*admin_login(boss.email, ip="10.0.2.1"))
    other = AdminFactory()
    assert_admin_logged_in(*admin_login(other.email, ip="10.0.2.1"))


@ACCOUNT_LIMIT
def test_admin_login_failures_lock_the_api_login_of_that_account():
    boss = AdminFactory()
    for number in range(3):
        response, _ = admin_login(boss.email, "wrong", ip=f"10.0.1.{number}")
        assert response.status_code == 200
        assert LIMITED not in response.content.decode()

    assert_rate_limited(api_login(boss.email, ip="10.0.2.1"))
    # The right password does not get through the limit on the admin side either.
    assert_admin_refused_as_limited(*admin_login(boss.email, ip="10.0.2.2"))


@IP_LIMIT
def test_api_login_failures_from_an_ip_lock_the_admin_login_from_it():
    boss = AdminFactory()
    for number in range(3):
        assert_json_error(api_login(f"guess{number}@example.com", "wrong"), 401)

    assert_admin_refused_as_limited(*admin_login(boss.email))
    assert_admin_logged_in(*admin_login(boss.email, ip="10.0.0.2"))


@IP_LIMIT
def test_admin_login_failures_from_an_ip_lock_the_api_login_from_it():
    node = NodeFactory()
    for number in range(3):
        admin_login(f"guess{number}@example.com", "wrong")

    assert_rate_limited(api_login(node.email))
    assert api_login(node.email, ip="10.0.0.2").status_code == 200


# --- The account is the user, whatever the spelling ------------------------------


@ACCOUNT_LIMIT
def test_every_spelling_of_an_account_spends_one_budget():
    node = NodeFactory(email="node3@example.com")
    # Case, spaces and compatibility forms (fullwidth letters) all name this account.
    spellings = ["NODE3@example.com", " Node3@Example.COM ", "\uff4eode3@example.com"]
    for number, spelling in enumerate(spellings):
        assert_json_error(api_login(spelling, "wrong", ip=f"10.0.1.{number}"), 401)

    assert_rate_limited(api_login(node.email, ip="10.0.2.1"))


def test_a_compatibility_spelling_of_the_email_logs_in_as_the_account():
    node = NodeFactory(email="node3@example.com")

    response = api_login("\uff2eODE3@EXAMPLE.COM")

    assert response.status_code == 200
    assert response.json()["userDetails"]["id"] == str(node.pk)


LOOK_ALIKES = ["n\u00f6de3@example.com", "nod\u00e93@example.com", "node3@ex\u00e1mple.com"]


@pytest.mark.parametrize("look_alike", LOOK_ALIKES)
def test_an_accented_look_alike_never_logs_in_even_where_the_collation_matches_it(look_alike):
    # MariaDB's utf8mb4_unicode_ci finds node3@example.com for each of these.
    NodeFactory(email="node3@example.com")

    body = assert_json_error(api_login(look_alike), 401)

    assert body["message"] == "Invalid email or password."
    assert_json_error(api_login("n\u00f6de3@example.com", "wrong"), 401)
    response, client = admin_login(look_alike)
    assert response.status_code == 200
    assert client.get(reverse("admin:index")).status_code == 302


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor == "sqlite", reason="needs MariaDB's _ci collations")
def test_on_mariadb_the_collation_does_match_the_look_alikes():
    """What the look-alike test guards against is real on MariaDB."""
    NodeFactory(email="node3@example.com")

    for look_alike in LOOK_ALIKES:
        assert User.objects.filter(email=look_alike).exists()
        assert User.objects.get_for_login(look_alike) is None


# --- update-password's old password is a login attempt ------------------------------


@ACCOUNT_LIMIT
def test_wrong_old_passwords_spend_the_accounts_login_budget(node, client_for):
    client = client_for(node)
    for guess in ("guess-one", "guess-two", "guess-three"):
        response = client.put(PASSWORD_URL, {"oldPassword": guess, "newPassword": NEW_PASSWORD})
        assert_json_error(response, 401)

    # The right old password is now refused too, and changes nothing.
    right = client.put(PASSWORD_URL, {"oldPassword": PASSWORD, "newPassword": NEW_PASSWORD})
    assert_rate_limited(right)
    assert User.objects.get(pk=node.pk).check_password(PASSWORD)
    # The budget is the account's: its logins are limited, other accounts' are not.
    assert_rate_limited(api_login(node.email, ip="10.0.3.1"))
    assert api_login(NodeFactory().email, ip="10.0.3.1").status_code == 200
    # The token itself still works for everything else.
    assert client.get(PROFILE).status_code == 200


@ACCOUNT_LIMIT
def test_login_failures_limit_update_password_of_that_account(node, client_for):
    for number in range(3):
        assert_json_error(api_login(node.email, "wrong", ip=f"10.0.1.{number}"), 401)

    response = client_for(node).put(
        PASSWORD_URL, {"oldPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    )

    assert_rate_limited(response)
    assert User.objects.get(pk=node.pk).check_password(PASSWORD)


@IP_LIMIT
def test_wrong_old_passwords_spend_the_ips_login_budget(node, client_for):
    client = client_for(node)
    for guess in ("guess-one", "guess-two", "guess-three"):
        response = client.put(
            PASSWORD_URL,
            {"oldPassword": guess, "newPassword": NEW_PASSWORD},
            REMOTE_ADDR="10.0.0.1",
        )
        assert_json_error(response, 401)

    assert_rate_limited(api_login(NodeFactory().email, ip="10.0.0.1"))


def test_a_wrong_guess_equal_to_the_new_password_is_a_401_not_a_400(node_client):
    response = node_client.put(PASSWORD_URL, {"oldPassword": "my-guess", "newPassword": "my-guess"})

    body = assert_json_error(response, 401)
    assert body["message"] == "The old password is wrong."


def test_with_the_count_store_down_the_admin_login_refuses_on_its_own_page(admin_user):
    """Fails closed, as the API login does, but as the admin's HTML form, not JSON."""
    with socket.socket() as unused:  # a port nothing listens on: Redis is down
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    down = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    with override_settings(CACHES=down):
        response, client = admin_login(admin_user.email)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "Logins are unavailable" in response.content.decode()
    assert "_auth_user_id" not in client.session


# --- the admin site's own password change is a password check too ------------------

ADMIN_PASSWORD_CHANGE = reverse("admin:password_change")
INCORRECT = "Your old password was entered incorrectly"


def admin_password_change(client, old_password, ip="10.0.0.1"):
    body = {"old_password": old_password, "new_password1": NEW_PASSWORD}
    body["new_password2"] = NEW_PASSWORD
    return client.post(ADMIN_PASSWORD_CHANGE, body, REMOTE_ADDR=ip)


def test_the_admin_password_change_refuses_after_the_api_limit_of_wrong_old_passwords(
    admin_user, admin_site_client
):
    """The default limit (5 a minute per account), as update-password has it; the
    seventh guess was checked too before."""
    pages = [admin_password_change(admin_site_client, f"guess-{n}") for n in range(5)]
    assert all(INCORRECT in page.content.decode() for page in pages)

    for old_password in ("guess-6", PASSWORD):
        page = admin_password_change(admin_site_client, old_password)
        assert page.status_code == 200
        assert "Too many password checks" in page.content.decode()
        assert INCORRECT not in page.content.decode()
    assert User.objects.get(pk=admin_user.pk).check_password(PASSWORD)
    assert_rate_limited(api_login(admin_user.email, ip="10.0.3.1"))  # the same budget


@ACCOUNT_LIMIT
def test_api_login_failures_limit_the_admin_password_change(admin_user, admin_site_client):
    for number in range(3):
        assert_json_error(api_login(admin_user.email, "wrong", ip=f"10.0.1.{number}"), 401)

    page = admin_password_change(admin_site_client, PASSWORD, ip="10.0.2.1")

    assert "Too many password checks" in page.content.decode()
    assert User.objects.get(pk=admin_user.pk).check_password(PASSWORD)


@IP_LIMIT
def test_admin_password_changes_spend_the_ips_login_budget(admin_user, admin_site_client):
    for number in range(3):
        admin_password_change(admin_site_client, f"guess-{number}", ip="10.0.0.7")

    assert_rate_limited(api_login(NodeFactory().email, ip="10.0.0.7"))


def test_the_admin_password_change_still_changes_the_password(admin_user, admin_site_client):
    page = admin_password_change(admin_site_client, PASSWORD)

    assert page.status_code == 302
    assert page["Location"] == reverse("admin:password_change_done")
    assert User.objects.get(pk=admin_user.pk).check_password(NEW_PASSWORD)
    assert admin_site_client.get(reverse("admin:index")).status_code == 200  # still signed in


# --- Only a password check spends the budgets --------------------------------------


@IP_LIMIT
@pytest.mark.parametrize("method", ["options", "head", "get", "put", "patch", "delete"])
def test_a_login_path_asked_with_another_method_spends_no_login_budget(method):
    node = NodeFactory()
    client = APIClient()
    answers = {getattr(client, method)(LOGIN, REMOTE_ADDR="10.0.5.1").status_code for _ in range(5)}

    # Its own answer every time (OPTIONS 200, the others 405), never a 429 ...
    assert answers == ({200} if method == "options" else {405})
    # ... and the budget is whole: three logins from that address still go through.
    for _ in range(3):
        assert api_login(node.email, ip="10.0.5.1").status_code == 200
    assert_rate_limited(api_login(node.email, ip="10.0.5.1"))


@ACCOUNT_LIMIT
def test_update_password_asked_with_another_method_spends_no_login_budget(node, client_for):
    client = client_for(node)
    for _ in range(5):
        assert client.options(PASSWORD_URL).status_code == 200
        assert client.post(PASSWORD_URL, {}).status_code == 405

    # Three wrong old passwords are still allowed before the limit.
    for _ in range(3):
        wrong = client.put(PASSWORD_URL, {"oldPassword": "wrong", "newPassword": NEW_PASSWORD})
        assert wrong.status_code == 401
    limited = client.put(PASSWORD_URL, {"oldPassword": "wrong", "newPassword": NEW_PASSWORD})
    assert_rate_limited(limited)
