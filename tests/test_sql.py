"""taskmgmt.sql: plain SELECTs that must read exactly what the ORM reads."""

import uuid

import pytest
from django.db import connection, transaction

from accounts.models import User
from taskmgmt.sql import get_one, select_one
from tasks.models import Task
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def field_values(task):
    """Each field's name, value and type: a str where the ORM has a UUID must fail."""
    values = [(field.attname, getattr(task, field.attname)) for field in Task._meta.concrete_fields]
    return [(name, type(value), value) for name, value in values]


def test_a_task_read_is_the_orm_s_instance_value_for_value_and_type(node):
    task = TaskFactory(assigned_node=node)

    ours = get_one(Task, id=task.pk)
    orm = Task.objects.get(pk=task.pk)

    assert field_values(ours) == field_values(orm)
    assert ours.saved_values == orm.saved_values
    assert not ours._state.adding


def test_a_user_read_loads_the_asked_columns_and_the_rest_on_access(
    node, django_assert_num_queries
):
    user = get_one(User, ("id", "email", "role"), id=node.pk)

    assert user.get_deferred_fields() >= {"name", "password", "is_active"}
    assert (user.pk, user.email, user.role) == (node.pk, node.email, node.role)
    with django_assert_num_queries(1):
        assert user.name == node.name


def test_no_matching_row_is_none(node):
    task = TaskFactory(assigned_node=node, active=False)

    assert get_one(Task, id=uuid.uuid4()) is None
    assert get_one(Task, id=task.pk, active=True) is None
    assert select_one(Task, ("id",), id=task.pk, active=True) is None


def test_select_one_gives_the_driver_s_values(node):
    task = TaskFactory(assigned_node=node)

    (task_id,) = select_one(Task, ("id",), id=task.pk)

    assert str(task_id).replace("-", "") == task.pk.hex


@pytest.mark.django_db(transaction=True)
def test_for_update_asks_for_a_row_lock_where_the_database_has_them(node):
    task = TaskFactory(assigned_node=node)

    with transaction.atomic(), connection.execute_wrapper(record := SqlRecorder()):
        assert get_one(Task, for_update=True, id=task.pk) is not None

    locked = connection.features.has_select_for_update
    assert record.sql[-1].endswith(" FOR UPDATE") is locked


class SqlRecorder:
    def __init__(self):
        self.sql = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)
