"""The user model and its manager: email logins, roles, who may use the admin site."""

import pytest
from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction

from accounts.models import Role, User
from tests.factories import PASSWORD, AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db


def test_create_user_makes_a_node_with_a_hashed_password_and_a_lower_case_email():
    user = User.objects.create_user(" Worker.One@Example.COM ", PASSWORD, name="Worker One")

    user.refresh_from_db()
    assert user.email == "worker.one@example.com"
    assert user.role == Role.NODE
    assert user.password != PASSWORD
    assert user.check_password(PASSWORD)
    assert user.is_active


def test_create_user_without_a_password_makes_an_account_that_cannot_log_in():
    user = User.objects.create_user("nopass@example.com", name="No Pass")

    assert not user.has_usable_password()
    assert authenticate(username="nopass@example.com", password="") is None


def test_create_superuser_makes_an_admin_who_may_use_the_admin_site():
    user = User.objects.create_superuser("Boss@Example.com", PASSWORD, name="Boss")

    assert user.role == Role.ADMIN
    assert user.email == "boss@example.com"
    assert user.is_staff and user.is_superuser
    assert user.has_perm("tasks.change_task")
    assert user.has_module_perms("tasks")


def test_createsuperuser_command_creates_an_admin(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)

    call_command("createsuperuser", "--noinput", email="Ops@Example.com", name="Ops", verbosity=0)

    user = User.objects.get(email="ops@example.com")
    assert user.role == Role.ADMIN
    assert user.check_password(PASSWORD)


@pytest.mark.parametrize("taken", ["dup@example.com", "DUP@example.com", " Dup@Example.Com"])
def test_an_email_is_unique_whatever_its_case(taken):
    User.objects.create_user("dup@example.com", PASSWORD, name="First")

    # The unique index decides, as it does for a race (the API answers 409).
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create_user(taken, PASSWORD, name="Second")

    assert list(User.objects.values_list("name", flat=True)) == ["First"]


def test_an_invalid_email_is_refused_and_nothing_is_saved():
    with pytest.raises(ValidationError) as error:
        User.objects.create_user("not-an-email", PASSWORD, name="Bad")

    assert "email" in error.value.message_dict
    assert not User.objects.exists()


def test_login_name_is_the_email_in_any_case():
    NodeFactory(email="node-login@example.com")

    assert authenticate(username="NODE-LOGIN@example.com", password=PASSWORD) is not None
    assert authenticate(username="node-login@example.com", password="wrong") is None


def test_saving_through_the_orm_stores_the_email_lower_case():
    user = NodeFactory()
    user.email = "Mixed.Case@Example.com"
    user.save()

    assert User.objects.filter(email="mixed.case@example.com").exists()


@pytest.mark.parametrize(
    ("role", "is_active", "staff"),
    [
        (Role.ADMIN, True, True),
        (Role.ADMIN, False, False),
        (Role.NODE, True, False),
        (Role.NODE, False, False),
    ],
)
def test_only_an_active_admin_is_staff(role, is_active, staff):
    user = NodeFactory(role=role, is_active=is_active)

    assert user.is_staff is staff
    assert user.is_superuser is staff
    assert user.has_perm("tasks.view_task") is staff
    assert user.has_module_perms("accounts") is staff


def test_deactivated_users_cannot_log_in():
    NodeFactory(email="gone@example.com", is_active=False)

    assert authenticate(username="gone@example.com", password=PASSWORD) is None


def test_role_helpers_name_the_role():
    admin, node = AdminFactory(), NodeFactory()

    assert admin.is_admin and not admin.is_node
    assert node.is_node and not node.is_admin


def test_a_node_holding_tasks_cannot_become_an_admin():
    task = TaskFactory()
    node = task.assigned_node
    node.role = Role.ADMIN

    with pytest.raises(ValidationError) as error:
        node.full_clean()

    assert "reassign them" in error.value.message_dict["role"][0]


def test_a_node_without_tasks_can_become_an_admin():
    node = NodeFactory()
    node.role = Role.ADMIN

    node.full_clean()
    node.save()

    assert User.objects.get(pk=node.pk).is_staff


def test_users_are_listed_by_name():
    NodeFactory(name="Zed")
    NodeFactory(name="Amy")

    assert list(User.objects.values_list("name", flat=True)) == ["Amy", "Zed"]
