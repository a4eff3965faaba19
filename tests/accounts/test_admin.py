"""The admin site's user pages: list, add with a hashed password, edit, refuse nodes."""

import html
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role, User
from nodes.models import Liveness
from tests.factories import PASSWORD, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:accounts_user_changelist")
ADD = reverse("admin:accounts_user_add")
NEW_PASSWORD = "a-long-unusual-passphrase-42"


def add_form(**overrides):
    return {
        "email": "New.Node@Example.com",
        "name": "New Node",
        "role": Role.NODE,
        "password1": NEW_PASSWORD,
        "password2": NEW_PASSWORD,
    } | overrides


def edit_form(user, **overrides):
    fields = {"email": user.email, "name": user.name, "role": user.role, "is_active": "on"}
    return fields | overrides


def change_url(user):
    return reverse("admin:accounts_user_change", args=[user.pk])


def test_the_user_list_renders_with_role_and_active_filters(admin_site_client):
    NodeFactory(name="Listed Node")
    NodeFactory(name="Sleeping Node", is_active=False)

    response = admin_site_client.get(CHANGELIST)
    assert response.status_code == 200
    assert "Listed Node" in response.content.decode()

    nodes = admin_site_client.get(CHANGELIST, {"role__exact": "node", "is_active__exact": "1"})
    assert [user.name for user in nodes.context["cl"].result_list] == ["Listed Node"]


def test_the_user_list_searches_by_email_and_name(admin_site_client):
    NodeFactory(name="Findable", email="findable@example.com")
    NodeFactory(name="Other")

    for term in ("FINDABLE@example", "findable"):
        response = admin_site_client.get(CHANGELIST, {"q": term})
        assert [user.name for user in response.context["cl"].result_list] == ["Findable"]


def test_adding_a_user_hashes_the_password_and_lower_cases_the_email(admin_site_client):
    response = admin_site_client.post(ADD, add_form())

    assert response.status_code == 302
    user = User.objects.get(email="new.node@example.com")
    assert user.role == Role.NODE
    assert user.password != NEW_PASSWORD
    assert user.check_password(NEW_PASSWORD)


@pytest.mark.parametrize("email", ["taken@example.com", "TAKEN@Example.COM"])
def test_adding_a_user_with_a_taken_email_in_any_case_is_refused(admin_site_client, email):
    NodeFactory(email="taken@example.com", name="First")

    response = admin_site_client.post(ADD, add_form(email=email))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["email"] == [
        "User with this Email already exists."
    ]
    assert User.objects.filter(email="taken@example.com").count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"password2": "something-else-entirely"}, "password2"),
        ({"password1": "12345678", "password2": "12345678"}, "password2"),
        ({"email": "not-an-email"}, "email"),
        ({"role": "superhero"}, "role"),
    ],
)
def test_bad_input_on_the_add_form_is_explained_and_nothing_is_saved(
    admin_site_client, overrides, field
):
    users_before = User.objects.count()

    response = admin_site_client.post(ADD, add_form(**overrides))

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert User.objects.count() == users_before


def test_editing_a_user_to_a_taken_email_is_refused(admin_site_client):
    NodeFactory(email="taken@example.com")
    user = NodeFactory()

    response = admin_site_client.post(change_url(user), edit_form(user, email="Taken@Example.com"))

    assert response.status_code == 200
    assert "email" in response.context["adminform"].form.errors
    assert User.objects.get(pk=user.pk).email == user.email


def test_deactivating_a_user_in_the_admin(admin_site_client):
    user = NodeFactory()

    response = admin_site_client.post(change_url(user), edit_form(user, is_active=""))

    assert response.status_code == 302
    assert not User.objects.get(pk=user.pk).is_active


def test_an_admin_cannot_deactivate_or_demote_itself_on_its_own_page(admin_site_client, admin_user):
    """One untick or one choice logged the admin out for good (the last admin: everyone)."""
    page = admin_site_client.get(change_url(admin_user)).content.decode()
    assert 'name="is_active"' not in page and 'name="role"' not in page

    admin_site_client.post(change_url(admin_user), edit_form(admin_user, is_active="", role="node"))

    admin_user.refresh_from_db()
    assert admin_user.is_active and admin_user.role == Role.ADMIN
    assert admin_site_client.get(CHANGELIST).status_code == 200


def test_a_node_holding_tasks_cannot_be_made_an_admin_in_the_admin(admin_site_client):
    node = TaskFactory().assigned_node

    response = admin_site_client.post(change_url(node), edit_form(node, role=Role.ADMIN))

    assert response.status_code == 200
    assert "role" in response.context["adminform"].form.errors
    assert User.objects.get(pk=node.pk).role == Role.NODE


def test_the_password_change_page_sets_a_new_hashed_password(admin_site_client):
    user = NodeFactory()
    url = reverse("admin:auth_user_password_change", args=[user.pk])

    response = admin_site_client.post(url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert response.status_code == 302
    assert User.objects.get(pk=user.pk).check_password(NEW_PASSWORD)


def api_login(email, password):
    body = {"username": email, "password": password}
    return Client().post("/api/auth/login", body, content_type="application/json")


def test_the_add_user_page_offers_no_way_to_disable_password_logins(admin_site_client):
    page = admin_site_client.get(ADD)

    assert "usable_password" not in page.context["adminform"].form.fields
    assert "Password-based authentication" not in page.content.decode()


def test_adding_a_user_with_usable_password_false_still_makes_one_who_can_log_in(
    admin_site_client,
):
    """There is no SSO here: "Disabled" locked the new user out of the API and the admin."""
    response = admin_site_client.post(ADD, add_form(usable_password="false"))

    assert response.status_code == 302
    user = User.objects.get(email="new.node@example.com")
    assert user.has_usable_password()
    assert api_login(user.email, NEW_PASSWORD).status_code == 200


def test_adding_a_user_without_a_password_is_a_form_error(admin_site_client):
    response = admin_site_client.post(
        ADD, add_form(usable_password="false", password1="", password2="")
    )

    assert response.status_code == 200
    assert set(response.context["adminform"].form.errors) == {"password1", "password2"}
    assert not User.objects.filter(email="new.node@example.com").exists()


def test_the_password_change_page_offers_no_way_to_disable_password_logins(admin_site_client):
    user = NodeFactory()
    url = reverse("admin:auth_user_password_change", args=[user.pk])

    page = admin_site_client.get(url)

    shown = page.content.decode()
    assert "usable_password" not in page.context["form"].fields
    assert "Password-based authentication" not in shown
    assert 'name="unset-password"' not in shown


def test_posting_usable_password_false_to_the_password_change_page_sets_the_password(
    admin_site_client,
):
    user = NodeFactory()
    url = reverse("admin:auth_user_password_change", args=[user.pk])

    response = admin_site_client.post(
        url,
        {
            "usable_password": "false",
            "unset-password": "1",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )

    assert response.status_code == 302
    assert User.objects.get(pk=user.pk).check_password(NEW_PASSWORD)
    assert api_login(user.email, NEW_PASSWORD).status_code == 200


def test_the_password_change_page_without_a_new_password_is_a_form_error(admin_site_client):
    user = NodeFactory()
    url = reverse("admin:auth_user_password_change", args=[user.pk])

    response = admin_site_client.post(url, {"usable_password": "false", "unset-password": "1"})

    assert response.status_code == 200
    assert set(response.context["form"].errors) == {"password1", "password2"}
    assert User.objects.get(pk=user.pk).check_password(PASSWORD)


def test_a_user_who_holds_tasks_cannot_be_deleted(admin_site_client):
    node = TaskFactory().assigned_node
    url = reverse("admin:accounts_user_delete", args=[node.pk])

    page = admin_site_client.get(url)
    assert page.status_code == 200
    assert page.context["protected"]

    admin_site_client.post(url, {"post": "yes"})
    assert User.objects.filter(pk=node.pk).exists()


def test_a_user_that_cannot_be_deleted_is_told_to_deactivate_it_instead(admin_site_client):
    """Django's page lists the protected rows and stops there: no way forward."""
    node = TaskFactory().assigned_node
    change = reverse("admin:accounts_user_change", args=[node.pk])

    one = admin_site_client.get(reverse("admin:accounts_user_delete", args=[node.pk]))
    selected = admin_site_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [str(node.pk)]}
    )

    for page in (one, selected):
        assert page.context["protected"] or page.context["perms_lacking"]
        shown = page.content.decode()
        assert "Deactivate it instead" in shown
        assert f'href="{change}"' in shown


def test_a_node_cannot_open_the_user_pages(node):
    client = Client()
    client.force_login(node)

    for url in (CHANGELIST, ADD, change_url(node)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_a_node_cannot_log_in_to_the_admin_site(node):
    client = Client()

    response = client.post(reverse("admin:login"), {"username": node.email, "password": PASSWORD})

    assert response.status_code == 200
    assert client.get(CHANGELIST).status_code == 302


def test_a_node_at_the_admin_login_is_told_that_node_accounts_use_the_api(node):
    response = Client().post(reverse("admin:login"), {"username": node.email, "password": PASSWORD})

    page = response.content.decode()
    assert "Node accounts use the API" in page
    assert "staff account" not in page


def test_a_wrong_password_at_the_admin_login_says_nothing_of_node_accounts(node):
    response = Client().post(reverse("admin:login"), {"username": node.email, "password": "x"})

    assert "Node accounts" not in response.content.decode()


def test_a_wrong_password_at_the_admin_login_says_the_email_is_not_case_sensitive(admin_user):
    """Django's message asks for "a staff account" and says both fields may be
    case-sensitive: the email is not (an admin logs in as ADMIN@EXAMPLE.COM too)."""
    response = Client().post(
        reverse("admin:login"), {"username": admin_user.email.upper(), "password": "x"}
    )

    page = html.unescape(response.content.decode())
    assert "the correct email and password for an admin account" in page
    assert "The password is case-sensitive; the email is not." in page
    assert "staff account" not in page and "both fields may be case-sensitive" not in page


# --- Liveness ------------------------------------------------------------------------------


def seen(user, seconds_ago):
    last_seen = timezone.now() - timedelta(seconds=seconds_ago)
    User.objects.filter(pk=user.pk).update(last_seen=last_seen)
    return last_seen


@pytest.fixture
def fleet(settings):
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    nodes = {name: NodeFactory(name=name) for name in ("up", "late", "gone", "new")}
    seen(nodes["up"], 1)
    seen(nodes["late"], 20)
    seen(nodes["gone"], 300)
    return nodes


def test_the_user_list_shows_each_nodes_liveness_and_last_seen(admin_site_client, fleet):
    response = admin_site_client.get(CHANGELIST, {"role__exact": "node"})

    shown = {user.name: user.liveness for user in response.context["cl"].result_list}
    assert shown == {
        "up": Liveness.ALIVE,
        "late": Liveness.STALE,
        "gone": Liveness.DOWN,
        "new": Liveness.NEVER_SEEN,
    }
    page = response.content.decode()
    assert "Never seen" in page and "Stale" in page
    assert "column-liveness" in page and "column-last_seen" in page


@pytest.mark.parametrize(
    ("liveness", "expected"),
    [
        (Liveness.ALIVE, ["up"]),
        (Liveness.STALE, ["late"]),
        (Liveness.DOWN, ["gone"]),
        (Liveness.NEVER_SEEN, ["new"]),  # the admin has never beaten either, but has no liveness
    ],
)
def test_the_user_list_filters_by_liveness(admin_site_client, fleet, liveness, expected):
    response = admin_site_client.get(CHANGELIST, {"liveness": liveness})

    assert response.status_code == 200
    assert [user.name for user in response.context["cl"].result_list] == expected


def test_an_unknown_liveness_filter_is_no_error(admin_site_client, fleet):
    response = admin_site_client.get(CHANGELIST, {"liveness": "zombie"})

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 5


def test_the_change_page_shows_last_seen_and_liveness_read_only(admin_site_client, fleet):
    node = fleet["late"]

    response = admin_site_client.get(change_url(node))

    page = response.content.decode()
    assert "Stale" in page
    assert 'name="last_seen"' not in page and 'name="liveness"' not in page
    assert "Heartbeat" in page
    before = User.objects.get(pk=node.pk).last_seen
    admin_site_client.post(change_url(node), edit_form(node, last_seen="2000-01-01 00:00:00"))
    assert User.objects.get(pk=node.pk).last_seen == before
