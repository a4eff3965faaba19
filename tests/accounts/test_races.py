"""Writes of a user racing each other on MariaDB, in real transactions.

A request in flight across another change must not undo it, and a lost race
for a unique email answers exactly as a plain duplicate does.
"""

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import services
from accounts.models import User
from tests.api import assert_json_error
from tests.factories import PASSWORD, AdminFactory, NodeFactory
from tests.mariadb import WAIT, wait_until_blocked

ROW_LOCKS = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="needs row locks: SQLite runs one writer at a time"
)
# On SQLite the live server's request threads share the test's one in-memory
# connection, so their transactions would interleave on it: not a race between requests.
OWN_CONNECTIONS = pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="the live server's threads share one in-memory SQLite connection",
)
NEW_PASSWORD = "a-brand-new-long-passphrase"


def token_for(user) -> str:
    return str(RefreshToken.for_user(user).access_token)


def bearer(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def login(email, password):
    return APIClient().post("/api/auth/login", {"username": email, "password": password})


def in_flight_across(change, request):
    """`request` (in its own thread) reads the user before `change` commits and writes
    after: `change` runs in a transaction held open until the request waits for its lock."""
    changed, release = threading.Event(), threading.Event()
    answers = []

    def hold_change():
        try:
            with transaction.atomic():
                change()
                changed.set()
                release.wait(2 * WAIT)
        finally:
            connection.close()

    def send():
        try:
            answers.append(request())
        finally:
            connection.close()

    holder = threading.Thread(target=hold_change)
    holder.start()
    assert changed.wait(WAIT)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_until_blocked("UPDATE `accounts_user` SET %", answers=answers)
    finally:
        release.set()
        holder.join(WAIT)
        sender.join(WAIT)
    (answer,) = answers
    return answer


# --- A profile edit in flight across a password change or a deactivation ---------------


@pytest.mark.mysql
@ROW_LOCKS
@pytest.mark.django_db(transaction=True)
def test_a_profile_edit_in_flight_does_not_undo_a_password_change():
    node = NodeFactory()
    old_token = token_for(node)

    def change_password():
        services.user_change_password(user=User.objects.get(pk=node.pk), password=NEW_PASSWORD)

    def edit_profile():
        body = {"name": "Renamed", "email": node.email}
        return bearer(old_token).put("/api/auth/edit-profile", body)

    answer = in_flight_across(change_password, edit_profile)

    assert answer.status_code == 200
    assert User.objects.get(pk=node.pk).name == "Renamed"
    assert login(node.email, PASSWORD).status_code == 401
    assert bearer(old_token).get("/api/auth/profile").status_code == 401
    assert login(node.email, NEW_PASSWORD).status_code == 200


@pytest.mark.mysql
@ROW_LOCKS
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/auth/edit-profile", {"name": "Renamed", "email": "renamed@example.com"}),
        ("/api/auth/update-password", {"oldPassword": PASSWORD, "newPassword": NEW_PASSWORD}),
    ],
)
def test_a_write_in_flight_across_the_users_deletion_is_a_401_not_a_500(path, body):
    node = NodeFactory()
    token = token_for(node)

    def delete():
        User.objects.filter(pk=node.pk).delete()

    answer = in_flight_across(delete, lambda: bearer(token).put(path, body))

    assert assert_json_error(answer, 401)["message"] == "User not found"
    assert not User.objects.filter(pk=node.pk).exists()


@pytest.mark.mysql
@ROW_LOCKS
@pytest.mark.django_db(transaction=True)
def test_a_profile_edit_in_flight_does_not_undo_a_deactivation():
    node = NodeFactory()
    token = token_for(node)

    def deactivate():
        User.objects.filter(pk=node.pk).update(is_active=False)

    def edit_profile():
        return bearer(token).put("/api/auth/edit-profile", {"name": "Renamed", "email": node.email})

    in_flight_across(deactivate, edit_profile)

    assert not User.objects.get(pk=node.pk).is_active
    assert bearer(token).get("/api/auth/profile").status_code == 401
    assert login(node.email, PASSWORD).status_code == 403


@pytest.mark.mysql
@ROW_LOCKS
@pytest.mark.django_db(transaction=True)
def test_a_password_change_in_flight_across_another_is_refused_not_made_too():
    # Both answered 200 and the later write won: the other client was told its password
    # was one it was not.
    node = NodeFactory()
    token = token_for(node)
    first = "the-first-new-passphrase"

    def change_password():
        services.user_change_password(user=User.objects.get(pk=node.pk), password=first)

    def update_password():
        body = {"oldPassword": PASSWORD, "newPassword": NEW_PASSWORD}
        return bearer(token).put("/api/auth/update-password", body)

    answer = in_flight_across(change_password, update_password)

    assert assert_json_error(answer, 401)["message"] == "The old password is wrong."
    assert login(node.email, NEW_PASSWORD).status_code == 401
    assert login(node.email, first).status_code == 200


@pytest.mark.mysql
@ROW_LOCKS
@pytest.mark.django_db(transaction=True)
def test_an_admin_edit_in_flight_does_not_undo_a_password_change(admin_site_client):
    node = NodeFactory()
    form = {"email": node.email, "name": "Renamed", "role": node.role, "is_active": "on"}

    def change_password():
        services.user_change_password(user=User.objects.get(pk=node.pk), password=NEW_PASSWORD)

    def edit_in_admin():
        return admin_site_client.post(f"/admin/accounts/user/{node.pk}/change/", form)

    answer = in_flight_across(change_password, edit_in_admin)

    assert answer.status_code == 302
    assert User.objects.get(pk=node.pk).name == "Renamed"
    assert login(node.email, PASSWORD).status_code == 401
    assert login(node.email, NEW_PASSWORD).status_code == 200


# --- Concurrent requests for one email: one wins, the others are the plain duplicate's 409 ----


def concurrent_puts_or_posts(base_url, requests):
    """Sends (method, path, token, body) all at once; returns [(status, body)]."""
    start = threading.Barrier(len(requests))

    def send(method, path, token, body):
        request = urllib.request.Request(
            base_url + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        start.wait(WAIT)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda args: send(*args), requests))


@pytest.mark.mysql
@OWN_CONNECTIONS
@pytest.mark.django_db(transaction=True)
# Argon2, as in production: the losers used to learn of the winner after their hash.
@override_settings(PASSWORD_HASHERS=settings.PRODUCTION_PASSWORD_HASHERS)
def test_six_concurrent_signups_of_one_email_are_one_201_and_five_409s(live_server):
    token = token_for(AdminFactory())
    body = {"name": "New Node", "email": "racer@example.com", "password": NEW_PASSWORD}

    answers = concurrent_puts_or_posts(
        live_server.url, [("POST", "/api/auth/signup", token, body)] * 6
    )

    assert sorted(status for status, _ in answers) == [201] + [409] * 5
    assert {body["message"] for status, body in answers if status == 409} == {
        "A user with this email already exists."
    }
    assert User.objects.filter(email="racer@example.com").count() == 1


@pytest.mark.mysql
@OWN_CONNECTIONS
@pytest.mark.django_db(transaction=True)
def test_six_concurrent_edits_to_one_free_email_are_one_200_and_five_409s(live_server):
    nodes = [NodeFactory() for _ in range(6)]
    requests = [
        ("PUT", "/api/auth/edit-profile", token_for(node), {"name": node.name, "email": "x@y.io"})
        for node in nodes
    ]

    answers = concurrent_puts_or_posts(live_server.url, requests)

    assert sorted(status for status, _ in answers) == [200] + [409] * 5
    assert {body["message"] for status, body in answers if status == 409} == {
        "A user with this email already exists."
    }
    assert User.objects.filter(email="x@y.io").count() == 1
