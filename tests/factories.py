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


def fleet() -> dict:
    """A small fleet for the dashboard: three nodes (alive, down, never seen), tasks in
    every status on two of them, two overdue, one due within the hour, failures of
    two causes and one completed task an hour and a half ago."""
    now = timezone.now()
    alive = NodeFactory(name="Alpha", last_seen=now - timedelta(seconds=3))
    down = NodeFactory(name="Bravo", last_seen=now - timedelta(minutes=10))
    never = NodeFactory(name="Charlie")
    later = now + timedelta(days=1)
    tasks = {
        "pending": TaskFactory.create_batch(3, assigned_node=alive, locked_at=later),
        "in_progress": TaskFactory.create_batch(
            2, assigned_node=alive, status=TaskStatus.IN_PROGRESS, locked_at=later
        ),
        "overdue": TaskFactory.create_batch(2, assigned_node=down, locked_at=later),
        "due_soon": [
            TaskFactory(
                assigned_node=down,
                status=TaskStatus.IN_PROGRESS,
                locked_at=now + timedelta(minutes=20),
            )
        ],
        "completed": TaskFactory.create_batch(
            4, assigned_node=alive, status=TaskStatus.COMPLETED, locked_at=later
        ),
        "deadline": TaskFactory.create_batch(
            2, assigned_node=down, status=TaskStatus.FAILED, failure_cause="deadline"
        ),
        "node_reported": [
            TaskFactory(
                assigned_node=alive, status=TaskStatus.FAILED, failure_cause="node_reported"
            )
        ],
        "deleted": [TaskFactory(assigned_node=alive, active=False)],
    }
    # Deadlines in the past and finishing times: set after the save, as time would.
    Task.objects.filter(pk__in=[t.pk for t in tasks["overdue"]]).update(
        locked_at=now - timedelta(minutes=5)
    )
    Task.objects.filter(pk=tasks["completed"][0].pk).update(updated_at=now - timedelta(minutes=90))
    Task.objects.filter(pk__in=[t.pk for t in tasks["in_progress"]]).update(
        updated_at=now - timedelta(seconds=600)
    )
    return {"alive": alive, "down": down, "never": never, "tasks": tasks, "now": now}
