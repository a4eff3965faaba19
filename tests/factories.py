"""Test data, in one place. Factories save through the ORM, so signals run."""

from datetime import timedelta

import factory
from django.utils import timezone

from accounts.models import Role, User
from tasks.models import Task, TaskStatus

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"node{n}@example.com")
    name = factory.Sequence(lambda n: f"Node {n}")
    role = Role.NODE
    is_active = True

    @factory.post_generation
    def password(user, create, extracted, **kwargs):
        user.set_password(extracted or PASSWORD)
        if create:
            user.save(update_fields=["password"])


class NodeFactory(UserFactory):
    pass


class AdminFactory(UserFactory):
    email = factory.Sequence(lambda n: f"admin{n}@example.com")
    name = factory.Sequence(lambda n: f"Admin {n}")
    role = Role.ADMIN


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    name = factory.Sequence(lambda n: f"Task {n}")
    details = "Process the batch."
    assigned_node = factory.SubFactory(NodeFactory)
    status = TaskStatus.PENDING
    locked_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=1))
