"""taskmgmt.sql: plain statements that must read and write exactly what the ORM does."""

import time
import uuid
from datetime import datetime, timedelta

import pytest
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.models import DateTimeField, F, Q, UUIDField, Value
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_ratelimit.core import get_usage

from accounts.models import User
from taskmgmt.sql import (
    _params,
    count_rows,
    driver_rows,
    get_one,
    insert_rows,
    insert_select,
    page_rows,
    rate_window,
    ratelimit_key,
    select_one,
    tagged_rows,
    update_rows,
    update_then_select,
    with_ids,
)
from tasks.models import CLAIM_INDEX, HistoryAction, Task, TaskHistory, TaskStatus
from tasks.selectors import TASK_COLUMNS
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


def test_a_count_is_the_orm_s_count_for_every_lookup(node, other_node):
    now = timezone.now()
    soon, later = now + timedelta(hours=1), now + timedelta(hours=2)
    TaskFactory(assigned_node=node, locked_at=soon)
    TaskFactory(assigned_node=node, locked_at=later)
    TaskFactory(assigned_node=node, locked_at=later, active=False)
    TaskFactory(assigned_node=node, locked_at=later, status=TaskStatus.IN_PROGRESS)
    TaskFactory(assigned_node=other_node, locked_at=later)

    for lookups in (
        {"assigned_node": node.pk},
        {"assigned_node": node.pk, "status": TaskStatus.PENDING, "active": True},
        {"assigned_node": node.pk, "locked_at__gt": soon},
        {"assigned_node": node.pk, "locked_at__lt": later},
    ):
        assert count_rows(Task, **lookups) == Task.objects.filter(**lookups).count() > 0
    assert Task.objects.claimable_count(node, now) == Task.objects.claimable_by(node, now).count()


def test_a_named_index_is_forced_on_mariadb_and_changes_no_answer(node):
    now = timezone.now()
    first = TaskFactory(assigned_node=node, locked_at=now + timedelta(hours=1))
    TaskFactory(assigned_node=node, locked_at=now + timedelta(hours=2))

    with CaptureQueriesContext(connection) as queries:
        count = Task.objects.claimable_count(node, now)
        with transaction.atomic():
            picked = Task.objects.claimable_first(node, now)

    assert (count, picked.pk) == (2, first.pk)
    hinted = [q["sql"] for q in queries if f"FORCE INDEX (`{CLAIM_INDEX}`)" in q["sql"]]
    assert len(hinted) == (2 if connection.vendor == "mysql" else 0), queries


def test_an_update_writes_the_orm_s_values_to_the_matching_rows_only(node, other_node):
    seen = timezone.now().replace(microsecond=123456)

    assert update_rows(User, {"last_seen": seen}, id=node.pk) == 1

    node.refresh_from_db()
    other_node.refresh_from_db()
    assert (node.last_seen, other_node.last_seen) == (seen, None)


def test_an_update_pinned_by_its_primary_key_reads_the_row_through_it(node, other_node):
    """MariaDB's single-table UPDATE weighs every index its guard columns could use
    (the progress report's node, status and active) unless told the key pins the row."""
    task = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)
    guard = {"id": task.pk, "assigned_node": node.pk, "status": TaskStatus.IN_PROGRESS}

    with CaptureQueriesContext(connection) as queries:
        refused = update_rows(
            Task, {"progress_percent": 10.0}, **{**guard, "assigned_node": other_node.pk}
        )
        updated = update_rows(Task, {"progress_percent": 20.0}, **guard)
        by_node = update_rows(Task, {"progress_message": "x"}, assigned_node=node.pk, id=task.pk)

    task.refresh_from_db()
    assert (refused, updated, by_node, task.progress_percent) == (0, 1, 1, 20.0)
    hinted = [q["sql"] for q in queries if "FORCE INDEX (`PRIMARY`)" in q["sql"]]
    assert len(hinted) == (3 if connection.vendor == "mysql" else 0), queries
    unpinned = CaptureQueriesContext(connection)
    with unpinned:
        update_rows(User, {"last_seen": timezone.now()}, email=node.email)
    assert "FORCE INDEX" not in unpinned[0]["sql"]


def history_values(row) -> list:
    columns = [
        field.attname for field in TaskHistory._meta.concrete_fields if field.attname != "id"
    ]
    # A str where there was a UUID, or a naive time, compares unequal.
    return [(name, getattr(row, name)) for name in columns]


def test_inserted_rows_read_back_as_what_bulk_create_writes(node):
    task = TaskFactory(assigned_node=node)

    def rows():
        return [
            TaskHistory(task=task, action=HistoryAction.STATUS_CHANGE, from_value="pending",
                        to_value="in_progress", performed_by=node),
            TaskHistory(task=task, action=HistoryAction.STATUS_CHANGE, from_value="in_progress",
                        to_value="failed", performed_by=None, cause="node_reported"),
        ]  # fmt: skip

    ours, theirs = rows(), rows()
    insert_rows(TaskHistory, ours)
    TaskHistory.objects.bulk_create(theirs)

    stored = task.history.filter(action=HistoryAction.STATUS_CHANGE).order_by("id")
    assert [history_values(row) for row in stored] == [
        history_values(row) for row in [*ours, *theirs]
    ]


def test_the_first_claimable_task_is_the_orm_s_first(node, other_node):
    now = timezone.now()
    soon, later = now + timedelta(hours=1), now + timedelta(hours=2)
    TaskFactory(assigned_node=other_node, locked_at=soon)
    TaskFactory(assigned_node=node, locked_at=soon, status=TaskStatus.IN_PROGRESS)
    TaskFactory(assigned_node=node, locked_at=later)
    TaskFactory(assigned_node=node, locked_at=soon)  # the earliest deadline wins, not age
    TaskFactory(assigned_node=node, locked_at=soon)
    TaskFactory(assigned_node=node, locked_at=later, priority=70)  # priority first, descending
    TaskFactory(assigned_node=node, locked_at=soon, priority=10)

    while (orm := Task.objects.claimable_by(node, now).first()) is not None:
        assert field_values(Task.objects.claimable_first(node, now)) == field_values(orm)
        Task.objects.filter(pk=orm.pk).update(status=TaskStatus.IN_PROGRESS)
    assert Task.objects.claimable_first(node, now) is None


@pytest.mark.django_db(transaction=True)
def test_for_update_asks_for_a_row_lock_where_the_database_has_them(node):
    task = TaskFactory(assigned_node=node)

    with transaction.atomic(), connection.execute_wrapper(record := SqlRecorder()):
        assert get_one(Task, for_update=True, id=task.pk) is not None

    locked = connection.features.has_select_for_update
    assert record.sql[-1].endswith(" FOR UPDATE") is locked


@pytest.mark.django_db(transaction=True)
def test_a_claim_s_read_skips_locked_rows_where_the_database_has_them(node):
    TaskFactory(assigned_node=node)

    with transaction.atomic(), connection.execute_wrapper(record := SqlRecorder()):
        assert Task.objects.claimable_first(node, timezone.now()) is not None

    skips = connection.features.has_select_for_update_skip_locked
    assert record.sql[-1].endswith(" FOR UPDATE SKIP LOCKED") is skips


class SqlRecorder:
    def __init__(self):
        self.sql = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)


def test_with_ids_takes_the_driver_s_ids_and_narrows_to_exactly_those_rows(node):
    first, second, _other = TaskFactory.create_batch(3, assigned_node=node)
    ids = [row.pk for row in driver_rows(Task.objects.filter(pk__in=[first.pk, second.pk]), "pk")]

    narrowed = with_ids(Task.objects.order_by(), ids)

    assert set(narrowed.values_list("pk", flat=True)) == {first.pk, second.pk}
    assert narrowed.update(name="renamed") == 2
    assert set(Task.objects.filter(name="renamed").values_list("pk", flat=True)) == {
        first.pk,
        second.pk,
    }


def test_insert_select_writes_one_row_per_selected_row_as_the_orm_reads_them(node):
    tasks = TaskFactory.create_batch(2, assigned_node=node)
    now = timezone.now()
    rows = Task.objects.filter(pk__in=[task.pk for task in tasks]).values_list(
        "id",
        Value(HistoryAction.STATUS_CHANGE),
        "status",
        Value(TaskStatus.FAILED),
        Value(node.pk, output_field=UUIDField()),
        Value("deadline"),
        Value(now, output_field=DateTimeField()),
    )
    fields = ("task", "action", "from_value", "to_value", "performed_by", "cause", "created_at")

    with CaptureQueriesContext(connection) as queries:
        insert_select(TaskHistory, fields, rows)

    assert len(queries) == 1
    written = TaskHistory.objects.filter(task__in=tasks, cause="deadline").values_list(
        "task_id", "action", "from_value", "to_value", "performed_by_id", "cause", "created_at"
    )
    assert sorted(written) == sorted(
        (
            task.pk,
            HistoryAction.STATUS_CHANGE,
            task.status,
            TaskStatus.FAILED,
            node.pk,
            "deadline",
            now,
        )
        for task in tasks
    )


def test_a_rate_window_counts_under_django_ratelimit_s_own_key(settings):
    """The throttles count where django-ratelimit's decorator does: an upgrade that
    changes its private helpers must fail here, not split the counts silently."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.9")

    # A window ends on a whole second: counting across its end would split the counts
    # between two windows, so count again in the next one.
    for _ in range(3):
        started = time.time()
        window = rate_window("test-group", "5/m", ratelimit_key("ip", request))
        for _ in range(3):
            get_usage(request, group="test-group", key="ip", rate="5/m", increment=True)
        if rate_window("test-group", "5/m", ratelimit_key("ip", request)) == window:
            break
        caches["default"].clear()

    assert ratelimit_key("ip", request) == "203.0.113.9"
    assert window.limit == 5
    assert caches["default"].get(window.cache_key) == 3
    # django-ratelimit's window may end within the very second it was asked in (its
    # jitter equal to the time's remainder): one run in sixty failed a strict `>`.
    assert window.ends_at >= int(started)


def test_tagged_rows_are_what_the_orm_would_read_part_by_part(node, other_node):
    TaskFactory.create_batch(3, assigned_node=node)
    started = TaskFactory.create_batch(2, assigned_node=node, status=TaskStatus.IN_PROGRESS)
    TaskFactory(assigned_node=other_node, status=TaskStatus.IN_PROGRESS)
    count = {"assigned_node": node.pk, "status": TaskStatus.PENDING}
    ids = {"assigned_node": node.pk, "status": TaskStatus.IN_PROGRESS}

    (total,), found, names = tagged_rows(
        (Task, "COUNT(*)", count, CLAIM_INDEX),
        (Task, "id", ids, CLAIM_INDEX),
        (User, "name", {"id": node.pk}, None),
    )

    assert int(total) == Task.objects.filter(**count).count() == 3
    assert sorted(uuid.UUID(value) for value in found) == sorted(task.pk for task in started)
    assert names == [node.name]
    none = {**ids, "status": "x"}
    assert tagged_rows((Task, "COUNT(*)", none, None), (Task, "id", none, None)) == [["0"], []]


def test_a_pick_unless_another_table_has_a_row_is_the_orm_s_exclude_exists(node, other_node):
    from django.db.models import Exists, OuterRef

    from nodes.models import Cordon

    for owner in (node, other_node):
        TaskFactory(assigned_node=owner)
    Cordon.objects.create(node=other_node, reason="r")

    picked = [
        select_one(Task, ("id",), unless=((Cordon, {"node": owner.pk}),), assigned_node=owner.pk)
        for owner in (node, other_node)
    ]

    cordoned = Cordon.objects.filter(node=OuterRef("assigned_node"))
    expected = Task.objects.exclude(Exists(cordoned)).values_list("id", flat=True)
    assert [row is not None for row in picked] == [True, False]
    assert list(expected) == [Task.objects.get(assigned_node=node).pk]


# Values of each kind the shortcuts in `_preparer` take, and the ones they leave to Django.
PREPARED_VALUES = {
    "id": [uuid.uuid4(), str(uuid.uuid4()), uuid.uuid4().hex, None],
    "assigned_node": [uuid.uuid4(), str(uuid.uuid4()), None],
    "status": ["pending", "", "ü\u00e9", None, 3],
    "active": [True, False, 1, 0, None],
    "locked_at": [
        timezone.now(),
        timezone.now().astimezone(timezone.get_fixed_timezone(120)),
        timezone.now().replace(microsecond=0),
        None,
    ],
    "attempts": [3, "4", None],
}


@pytest.mark.parametrize("name", list(PREPARED_VALUES))
def test_parameters_are_adapted_as_the_field_adapts_them(name):
    """`_params`'s shortcuts give Django's `get_db_prep_value` answer, value and type."""
    real = connections[DEFAULT_DB_ALIAS]
    field = Task._meta.get_field(name)
    for value in PREPARED_VALUES[name]:
        ours = _params(Task, {name: value}, real)[0]
        django = field.get_db_prep_value(value, real)
        assert (type(ours), ours) == (type(django), django), value


def test_a_naive_datetime_parameter_is_adapted_as_django_adapts_it_with_its_warning():
    real = connections[DEFAULT_DB_ALIAS]
    naive = datetime(2030, 1, 2, 3, 4, 5, 6)
    with pytest.warns(RuntimeWarning, match="naive datetime"):
        ours = _params(Task, {"locked_at__gt": naive}, real)[0]
    with pytest.warns(RuntimeWarning, match="naive datetime"):
        assert ours == Task._meta.get_field("locked_at").get_db_prep_value(naive, real)


def orm_page(queryset, after, limit):
    """The keyset page as the ORM builds it (taskmgmt.pagination's queryset reader)."""
    if after is not None:
        created_at, task_id = after
        queryset = queryset.filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=task_id)
        )
    rows = driver_rows(queryset.order_by("-created_at", "-id"), *TASK_COLUMNS)
    return [tuple(row) for row in (rows if limit is None else rows[:limit])]


def test_a_page_reads_the_rows_and_values_the_orm_s_keyset_query_reads(node, other_node):
    now = timezone.now().replace(microsecond=500000)
    tied = now - timedelta(seconds=5)  # several tasks at one instant: the id breaks the tie
    for index in range(12):
        created = tied if index % 3 == 0 else now - timedelta(seconds=index, microseconds=index)
        task = TaskFactory(
            assigned_node=node if index % 2 else other_node,
            status=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS][index % 2 and index % 4 == 1],
            payload={"row": index} if index % 5 == 0 else None,
        )
        Task.objects.filter(pk=task.pk).update(created_at=created)
    Task.objects.filter(pk=task.pk).update(active=False)
    middle = Task.objects.order_by("-created_at", "-id")[5]
    positions = [None, (middle.created_at, middle.pk), (tied, uuid.UUID(int=2**128 - 1))]
    cases = [
        ({"active": True}, "task_page"),
        ({"active": True, "assigned_node": node.pk}, "task_node_page"),
        ({"active": True, "assigned_node": node.pk, "status": TaskStatus.PENDING}, None),
        ({"active": True, "status": TaskStatus.IN_PROGRESS}, "task_status_page"),
    ]

    for where, index in cases:
        for after in positions:
            for limit in (None, 1, 4, 50):
                expected = orm_page(Task.objects.filter(**where), after, limit)
                page = page_rows(Task, TASK_COLUMNS, after=after, limit=limit, index=index, **where)
                assert [tuple(row) for row in page] == expected, (where, after, limit)
    assert len(orm_page(Task.objects.filter(active=True), None, None)) == 11


def test_an_update_then_a_select_write_and_read_what_the_two_statements_do(node, other_node):
    task = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)
    guard = {"id": task.pk, "assigned_node": node.pk, "status": TaskStatus.IN_PROGRESS}
    columns = ("id", "progress_percent", "checkpoint", "assigned_node_id")
    values = {"progress_percent": 30.0, "checkpoint": {"row": 3}}

    with CaptureQueriesContext(connection) as queries:
        updated, row = update_then_select(
            Task, values, columns, select_where={"id": task.pk, "active": True}, **guard
        )
    refused, unchanged = update_then_select(
        Task,
        {"progress_percent": 99.0},
        columns,
        select_where={"id": task.pk, "active": True},
        **{**guard, "assigned_node": other_node.pk},
    )
    missing = update_then_select(
        Task, values, columns, select_where={"id": uuid.uuid4(), "active": True}, id=uuid.uuid4()
    )

    expected = select_one(Task, columns, id=task.pk, active=True)
    assert (updated, row) == (1, expected)
    assert (refused, unchanged) == (0, expected)
    assert missing == (0, None)
    task.refresh_from_db()
    assert (task.progress_percent, task.checkpoint) == (30.0, {"row": 3})
    assert len(queries) == (1 if connection.vendor == "mysql" else 2), queries
    assert connection.is_usable()  # every result of the two-statement query was read
    assert select_one(Task, ("id",), id=task.pk) == expected[:1]


def test_a_task_s_save_writes_what_django_s_own_update_writes(node, other_node):
    """Task._do_update sends taskmgmt.sql's UPDATE (update_saved): every value ends as
    Django's update compiler leaves it; expressions still go Django's way."""
    ours, theirs = TaskFactory(assigned_node=node), TaskFactory(assigned_node=node)
    changes = {
        "name": "renamed ✓",
        "payload": {"a": [1, None, "ü", 2.5]},
        "locked_at": timezone.now().replace(microsecond=654321) + timedelta(days=3),
        "assigned_node": other_node,
        "node_selector": {"zone": "b"},
        "priority": 90,
        "checkpoint": "plain text",
        "progress_percent": 12.5,
        "result": None,
        "failure_reason": "",
    }
    for name, value in changes.items():
        setattr(ours, name, value)

    with CaptureQueriesContext(connection) as queries:
        ours.save()
    Task.objects.filter(pk=theirs.pk).update(**changes)

    (update,) = [q["sql"] for q in queries if q["sql"].startswith("UPDATE `tasks_task`")] or [
        q["sql"] for q in queries if q["sql"].startswith('UPDATE "tasks_task"')
    ]
    assert ("FORCE INDEX" in update) == (connection.vendor == "mysql")
    ours.refresh_from_db()
    theirs.refresh_from_db()
    skipped = {"id", "created_at", "updated_at"}
    assert [v for v in field_values(ours) if v[0] not in skipped] == [
        v for v in field_values(theirs) if v[0] not in skipped
    ]
    assert ours.updated_at > ours.created_at  # auto_now, as save() always sets it

    ours.attempts = F("attempts") + 1  # an expression: Django's own UPDATE
    ours.save(update_fields=["attempts"])
    ours.refresh_from_db()
    assert ours.attempts == theirs.attempts + 1

    ours.pk = uuid.uuid4()  # a row the table does not have: nothing matched, as Django says
    with pytest.raises(DatabaseError, match="did not affect any rows"):
        ours.save(update_fields=["name"])
