"""Admin-only user endpoints: signup (creates nodes) and the user list."""

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import User
from tests.factories import AdminFactory, NodeFactory

SIGNUP = "/api/auth/signup"
USERS = "/api/auth/users"
GOOD_PASSWORD = "a-long-enough-passphrase"

pytestmark = pytest.mark.django_db


def signup(client, **overrides):
    body = {"name": "New Node", "email": "new@example.com", "password": GOOD_PASSWORD}
    return client.post(SIGNUP, {**body, **overrides})


def error_fields(response) -> list:
    assert response.status_code == 400, response.content
    return [error["field"] for error in response.json()["errors"]]


# --- Signup -----------------------------------------------------------------


def test_signup_creates_an_active_node_that_can_log_in(admin_client):
    response = signup(admin_client, email="New@Example.com")

    assert response.status_code == 201
    body = response.json()
    user = User.objects.get(email="new@example.com")
    assert body["userDetails"] == {
        "id": str(user.pk),
        "name": "New Node",
        "email": "new@example.com",
        "role": "node",
    }
    assert "message" in body
    assert user.is_active
    login = APIClient().post(
        "/api/auth/login", {"username": "new@example.com", "password": GOOD_PASSWORD}
    )
    assert login.status_code == 200


def test_signup_ignores_a_role_in_the_body_and_never_creates_an_admin(admin_client):
    response = signup(admin_client, role="admin")

    assert response.json()["userDetails"]["role"] == "node"
    assert User.objects.get(email="new@example.com").role == "node"


def test_signup_with_a_taken_email_in_any_case_is_a_409(admin_client):
    NodeFactory(email="taken@example.com")

    response = signup(admin_client, email="TAKEN@example.com")

    assert response.status_code == 409
    assert set(response.json()) == {"title", "message"}
    assert User.objects.filter(email="taken@example.com").count() == 1


@pytest.mark.parametrize(
    "password",
    ["Sh0rt!", "20240611093015", "password1234", "new@example.com"],
    ids=["too-short", "all-numeric", "common", "like-the-email"],
)
def test_signup_with_a_weak_password_is_a_400_and_creates_nobody(admin_client, password):
    assert error_fields(signup(admin_client, password=password)) == ["password"]
    assert not User.objects.filter(email="new@example.com").exists()


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"name": ""}, ["name"]),
        ({"email": "not-an-email"}, ["email"]),
        ({"email": ["new@example.com"]}, ["email"]),
        ({"password": None}, ["password"]),
        ({"password": 1.5e300}, ["password"]),
        ({"name": 7}, ["name"]),
        ({"name": "x" * 151, "email": "@"}, ["name", "email"]),
    ],
)
def test_signup_with_bad_fields_is_a_400_naming_them(admin_client, overrides, fields):
    assert error_fields(signup(admin_client, **overrides)) == fields


# --- User list --------------------------------------------------------------


def test_users_lists_every_active_user_admins_too_by_name(admin_client, admin_user):
    zed = NodeFactory(name="Zed")
    amy = NodeFactory(name="Amy")
    boss = AdminFactory(name="Boss")
    NodeFactory(name="Gone", is_active=False)

    response = admin_client.get(USERS)

    assert response.status_code == 200
    users = response.json()["usersList"]
    expected = sorted([zed, amy, boss, admin_user], key=lambda user: (user.name, user.email))
    assert [user["nodeId"] for user in users] == [str(user.pk) for user in expected]
    assert {"nodeId": str(amy.pk), "name": "Amy", "email": amy.email, "role": "node"} in users


def test_signup_stores_the_canonical_form_of_the_email(admin_client):
    # NFKC folds the fullwidth letters, casefold the case: one spelling per address.
    response = signup(admin_client, email=" \uff2eew.Node@Example.COM ")

    assert response.status_code == 201
    assert response.json()["userDetails"]["email"] == "new.node@example.com"
    assert User.objects.filter(email="new.node@example.com").exists()


def test_signup_of_another_spelling_of_a_taken_email_is_a_409(admin_client):
    NodeFactory(email="taken@example.com")

    response = signup(admin_client, email="\uff54aken@EXAMPLE.com")

    assert response.status_code == 409
    assert response.json()["message"] == "A user with this email already exists."
    assert User.objects.filter(name="New Node").count() == 0


def test_signup_with_a_password_equal_to_the_name_is_a_400(admin_client):
    response = signup(admin_client, name="Quartermaster Seven", password="Quartermaster Seven")

    assert error_fields(response) == ["password"]
    assert "name" in response.json()["errors"][0]["message"]
    assert not User.objects.filter(name="Quartermaster Seven").exists()


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor == "sqlite", reason="needs MariaDB's _ci collations")
def test_on_mariadb_an_accented_look_alike_of_a_taken_email_is_a_409(admin_client):
    # The collation (and so the unique index) treats it as the same address.
    NodeFactory(email="node3@example.com")

    response = signup(admin_client, email="node3@ex\u00e1mple.com")

    assert response.status_code == 409
    assert User.objects.count() == 2  # the admin and node3
