"""The signed-in user's own account: profile, edit-profile, update-password."""

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts.models import User
from tests.api import TASK_FIELDS, assert_json_error
from tests.factories import PASSWORD, NodeFactory, TaskFactory

PROFILE = "/api/auth/profile"
EDIT = "/api/auth/edit-profile"
PASSWORD_URL = "/api/auth/update-password"
NEW_PASSWORD = "a-brand-new-long-passphrase"

pytestmark = pytest.mark.django_db


def login(email, password=PASSWORD):
    return APIClient().post("/api/auth/login", {"username": email, "password": password})


def bearer(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def error_fields(response) -> list:
    return [error["field"] for error in assert_json_error(response, 400)["errors"]]


# --- Profile ----------------------------------------------------------------


def test_a_nodes_profile_lists_its_own_active_tasks_newest_first(node, node_client, other_node):
    older = TaskFactory(assigned_node=node, name="Older")
    newer = TaskFactory(assigned_node=node, name="Newer")
    TaskFactory(assigned_node=node, active=False)
    TaskFactory(assigned_node=other_node)

    response = node_client.get(PROFILE)

    assert response.status_code == 200
    body = response.json()
    assert body["userDetails"] == {
        "id": str(node.pk),
        "name": node.name,
        "email": node.email,
        "role": "node",
    }
    assert [task["id"] for task in body["tasks"]] == [str(newer.pk), str(older.pk)]
    assert set(body["tasks"][0]) == TASK_FIELDS
    assert body["tasks"][0]["assignedNode"] == str(node.pk)


def test_an_admins_profile_has_no_tasks_even_when_tasks_exist(admin_user, admin_client, node):
    TaskFactory(assigned_node=node)

    body = admin_client.get(PROFILE).json()

    assert body["userDetails"]["role"] == "admin"
    assert body["tasks"] == []


def test_a_nodes_profile_is_capped_at_max_page_size_with_a_cursor_for_the_rest(
    node, node_client, settings
):
    settings.MAX_PAGE_SIZE = 3
    tasks = [TaskFactory(assigned_node=node) for _ in range(5)]
    newest_first = [str(task.pk) for task in reversed(tasks)]

    first = node_client.get(PROFILE).json()
    rest = node_client.get(PROFILE, {"cursor": first["nextCursor"]}).json()

    assert [task["id"] for task in first["tasks"]] == newest_first[:3]
    assert [task["id"] for task in rest["tasks"]] == newest_first[3:]
    assert rest["nextCursor"] is None
    assert rest["userDetails"] == first["userDetails"]


def test_a_nodes_profile_takes_the_task_lists_limit_and_cursor(node, node_client):
    tasks = [TaskFactory(assigned_node=node) for _ in range(3)]

    page = node_client.get(PROFILE, {"limit": 2}).json()
    whole = node_client.get(PROFILE).json()

    assert [task["id"] for task in page["tasks"]] == [str(tasks[2].pk), str(tasks[1].pk)]
    assert page["nextCursor"] == node_client.get("/api/tasks", {"limit": 2}).json()["nextCursor"]
    assert len(whole["tasks"]) == 3 and whole["nextCursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
    ],
)
def test_a_bad_profile_limit_or_cursor_is_a_400_naming_it(node, node_client, query, field):
    TaskFactory(assigned_node=node)

    assert error_fields(node_client.get(PROFILE, query)) == [field]


# --- Edit profile -----------------------------------------------------------


def test_edit_profile_changes_name_and_email(node, node_client):
    response = node_client.put(EDIT, {"name": "Renamed", "email": "New.Address@Example.com"})

    assert response.status_code == 200
    body = response.json()
    assert body["userDetails"]["email"] == "new.address@example.com"
    node.refresh_from_db()
    assert (node.name, node.email) == ("Renamed", "new.address@example.com")
    assert login("new.address@example.com").status_code == 200


def test_edit_profile_keeping_ones_own_email_is_fine(node, node_client):
    response = node_client.put(EDIT, {"name": "Renamed", "email": node.email.upper()})

    assert response.status_code == 200


def test_edit_profile_to_another_users_email_in_any_case_is_a_409(node, node_client):
    NodeFactory(email="taken@example.com")

    response = node_client.put(EDIT, {"name": "Renamed", "email": "TAKEN@example.com"})

    assert_json_error(response, 409)
    node.refresh_from_db()
    assert node.name != "Renamed"


def test_edit_profile_cannot_change_the_role(node, node_client):
    node_client.put(EDIT, {"name": "Sneaky", "email": node.email, "role": "admin"})

    node.refresh_from_db()
    assert node.role == "node"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"email": "someone@example.com"}, ["name"]),
        ({"name": "Someone"}, ["email"]),
        ({"name": "", "email": "not-an-email"}, ["name", "email"]),
        ({"name": "x" * 151, "email": "someone@example.com"}, ["name"]),
        ({"name": {"first": "A"}, "email": "someone@example.com"}, ["name"]),
        ({"name": 0, "email": True}, ["name", "email"]),
    ],
)
def test_edit_profile_with_bad_fields_is_a_400_naming_them(node_client, body, fields):
    assert error_fields(node_client.put(EDIT, body)) == fields


# --- Update password ---------------------------------------------------------


def change_password(client, old=PASSWORD, new=NEW_PASSWORD):
    return client.put(PASSWORD_URL, {"oldPassword": old, "newPassword": new})


def test_update_password_lets_the_user_log_in_with_the_new_one_only(node, node_client):
    response = change_password(node_client)

    assert response.status_code == 200
    assert "message" in response.json()
    assert login(node.email, NEW_PASSWORD).status_code == 200
    assert login(node.email, PASSWORD).status_code == 401


def test_update_password_revokes_the_earlier_access_and_refresh_tokens(node):
    first = login(node.email).json()
    second = login(node.email).json()
    client = bearer(first["token"])

    assert change_password(client).status_code == 200

    assert not OutstandingToken.objects.filter(user=node, blacklistedtoken__isnull=True).exists()
    for pair in (first, second):
        assert_json_error(bearer(pair["token"]).get(PROFILE), 401)
        assert_json_error(APIClient().post("/api/auth/refresh", {"refresh": pair["refresh"]}), 401)
    fresh = login(node.email, NEW_PASSWORD).json()
    assert bearer(fresh["token"]).get(PROFILE).status_code == 200
    assert APIClient().post("/api/auth/refresh", {"refresh": fresh["refresh"]}).status_code == 200


def test_update_password_leaves_other_users_tokens_alone(node, node_client, other_node):
    other = login(other_node.email).json()

    change_password(node_client)

    assert bearer(other["token"]).get(PROFILE).status_code == 200
    assert APIClient().post("/api/auth/refresh", {"refresh": other["refresh"]}).status_code == 200


def test_update_password_with_a_wrong_old_password_is_a_401_and_changes_nothing(node, node_client):
    assert_json_error(change_password(node_client, old="not-the-password"), 401)

    assert User.objects.get(pk=node.pk).check_password(PASSWORD)
    assert node_client.get(PROFILE).status_code == 200


def test_update_password_to_the_same_password_is_a_400(node_client):
    assert error_fields(change_password(node_client, new=PASSWORD)) == ["newPassword"]


@pytest.mark.parametrize(
    "make_weak",
    [
        lambda user: "Sh0rt!",
        lambda user: "20240611093015",
        lambda user: "password1234",
        lambda user: user.email,
    ],
    ids=["too-short", "all-numeric", "common", "like-the-email"],
)
def test_update_password_to_a_weak_password_is_a_400(node, node_client, make_weak):
    response = change_password(node_client, new=make_weak(node))

    assert error_fields(response)[0] == "newPassword"
    assert User.objects.get(pk=node.pk).check_password(PASSWORD)


def test_update_password_needs_both_fields(node_client):
    response = node_client.put(PASSWORD_URL, {"old_password": PASSWORD})

    assert error_fields(response) == ["oldPassword", "newPassword"]


def test_edit_profile_to_another_spelling_of_a_taken_email_is_a_409(node, node_client):
    NodeFactory(email="taken@example.com")

    response = node_client.put(EDIT, {"name": "Renamed", "email": "\uff34AKEN@example.com"})

    assert_json_error(response, 409)
    node.refresh_from_db()
    assert node.name != "Renamed"


def test_edit_profile_stores_the_canonical_form_of_the_email(node, node_client):
    response = node_client.put(EDIT, {"name": "Renamed", "email": "\uff2eew@Example.com"})

    assert response.json()["userDetails"]["email"] == "new@example.com"
    assert User.objects.get(pk=node.pk).email == "new@example.com"


def test_update_password_to_the_users_name_is_a_400(client_for):
    node = NodeFactory(name="Quartermaster Seven")

    response = change_password(client_for(node), new="quartermaster seven")

    assert error_fields(response) == ["newPassword"]
    assert User.objects.get(pk=node.pk).check_password(PASSWORD)
