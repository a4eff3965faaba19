"""Reading tasks: one task, the lists, the status filter and keyset pages."""

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskmgmt.fields import iso_utc
from taskmgmt.pagination import decode_cursor, encode_cursor
from tasks.models import FailureCause, Task, TaskStatus
from tasks.selectors import TASK_COLUMNS, task_rows
from tasks.serializers import TaskSerializer
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db


def ids(response) -> list[str]:
    return [task["id"] for task in response.json()["tasks"]]


def newest_first(tasks) -> list[str]:
    """The tasks by created_at, then id, descending, as one database query orders them.

    Ties go by the database's own id order: MariaDB's native UUID type does
    not sort like the hex strings SQLite stores.
    """
    ordered = Task.objects.filter(pk__in=[task.pk for task in tasks]).order_by("-created_at", "-id")
    return [str(pk) for pk in ordered.values_list("pk", flat=True)]


def walk(client, path: str, limit: int) -> tuple[list[str], int]:
    """Follow nextCursor to the end; the ids seen, in order, and the page count."""
    seen, pages, cursor = [], 0, None
    while True:
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, query)
        assert response.status_code == 200
        seen += ids(response)
        pages += 1
        cursor = response.json()["nextCursor"]
        if cursor is None:
            return seen, pages


# --- GET /api/tasks/{taskId} ----------------------------------------------------


def test_admin_reads_any_task(admin_client, node):
    task = TaskFactory(assigned_node=node)

    response = admin_client.get(f"/api/tasks/{task.pk}")

    assert response.status_code == 200
    shown = response.json()["task"]
    assert shown["id"] == str(task.pk)
    assert shown["assignedNode"] == str(node.pk)


def test_the_assigned_node_reads_its_task(node_client, node):
    task = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)

    response = node_client.get(f"/api/tasks/{task.pk}")

    assert response.status_code == 200
    assert response.json()["task"]["status"] == "in_progress"


def test_node_cannot_read_another_nodes_task(client_for, node, other_node):
    task = TaskFactory(assigned_node=node)

    response = client_for(other_node).get(f"/api/tasks/{task.pk}")

    assert response.status_code == 403
    assert set(response.json()) == {"title", "message"}
    assert task.name not in response.content.decode()


@pytest.mark.parametrize("task_id", [str(uuid.UUID(int=1)), "not-a-uuid", "1", "null"])
def test_an_unknown_or_malformed_task_id_is_404(admin_client, task_id):
    response = admin_client.get(f"/api/tasks/{task_id}")

    assert response.status_code == 404
    assert set(response.json()) == {"title", "message"}


def test_a_task_reads_the_same_in_a_list_and_alone(admin_client, node):
    task = TaskFactory(assigned_node=node, locked_at=timezone.now() + timedelta(hours=5))

    alone = admin_client.get(f"/api/tasks/{task.pk}").json()["task"]
    listed = admin_client.get("/api/tasks/all").json()["tasks"]

    assert listed == [alone]


def test_the_lean_task_output_is_what_drf_fields_would_give(node):
    whole_second = timezone.now().replace(microsecond=0) + timedelta(days=1)
    task = TaskFactory(
        assigned_node=node,
        locked_at=whole_second,
        status=TaskStatus.FAILED,
        attempts=2,
        failure_cause=FailureCause.NODE_REPORTED,
        failure_reason="disk full",
    )
    (row,) = task_rows(Task.objects.filter(pk=task.pk))
    serializer = TaskSerializer()
    # One field per column up to the work data, whose progress combines three.
    columns = TASK_COLUMNS[: TASK_COLUMNS.index("payload")]
    fields = list(serializer.fields.items())[: len(columns)]
    drf = {
        name: field.to_representation(getattr(task, source))
        for (name, field), source in zip(fields, columns, strict=True)
    }
    drf |= {
        "payload": None,
        "result": None,
        "progress": None,
        "checkpoint": None,
        "attempt": 2,
        "priority": 50,
        "nodeSelector": None,
        "pinned": False,
        "cancelRequestedAt": None,
        "cancelReason": None,
    }

    assert serializer.to_representation(task) == drf
    assert serializer.to_representation(row) == drf


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.IN_PROGRESS])
def test_a_failure_cause_shows_only_on_a_failed_task(admin_client, node, status):
    # A task given out again may still hold its last failure's cause.
    task = TaskFactory(
        assigned_node=node, status=status, failure_cause=FailureCause.NODE_LOST, attempts=1
    )

    shown = admin_client.get(f"/api/tasks/{task.pk}").json()["task"]

    assert (shown["attempts"], shown["failureCause"], shown["failureReason"]) == (1, None, None)


def test_a_failed_task_without_a_reason_shows_a_null_reason(admin_client, node):
    task = TaskFactory(assigned_node=node, status=TaskStatus.FAILED, failure_cause="deadline")

    listed = admin_client.get("/api/tasks/all").json()["tasks"]

    assert [(t["failureCause"], t["failureReason"]) for t in listed] == [("deadline", None)]
    assert listed[0]["id"] == str(task.pk)


def test_datetimes_are_iso_8601_in_utc(admin_client, node):
    task = TaskFactory(assigned_node=node)

    shown = admin_client.get(f"/api/tasks/{task.pk}").json()["task"]

    for field in ("lockedAt", "createdAt", "updatedAt"):
        assert shown[field].endswith("Z")
    assert shown["lockedAt"] == task.locked_at.isoformat().replace("+00:00", "Z")


# --- The lists --------------------------------------------------------------------


def test_admin_lists_every_active_task_newest_first(admin_client, node, other_node):
    tasks = [TaskFactory(assigned_node=n) for n in (node, other_node, node)]
    TaskFactory(assigned_node=node, active=False)

    response = admin_client.get("/api/tasks/all")

    assert response.status_code == 200
    assert ids(response) == newest_first(tasks)
    assert response.json()["nextCursor"] is None


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/node"])
def test_a_node_lists_only_its_own_tasks(client_for, node, other_node, path):
    own = [TaskFactory(assigned_node=node) for _ in range(3)]
    TaskFactory(assigned_node=other_node)
    TaskFactory(assigned_node=node, active=False)

    response = client_for(node).get(path)

    assert response.status_code == 200
    assert ids(response) == newest_first(own)


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/node"])
def test_an_admin_asking_for_node_tasks_is_sent_to_all(admin_client, path):
    response = admin_client.get(path)

    assert response.status_code == 403
    assert "/api/tasks/all" in response.json()["message"]


def test_a_node_cannot_list_every_task(node_client):
    assert node_client.get("/api/tasks/all").status_code == 403


@pytest.mark.parametrize("path", ["/api/tasks/all", "/api/tasks/filter/all"])
def test_an_empty_list_is_200_with_no_tasks(admin_client, path):
    response = admin_client.get(path, {"limit": 10})

    assert response.status_code == 200
    assert response.json() == {"tasks": [], "nextCursor": None}


# --- GET /api/tasks/filter/{status} -------------------------------------------------


@pytest.fixture
def one_task_per_status(node, other_node):
    return {
        (owner, status): TaskFactory(assigned_node=owner, status=status)
        for owner in (node, other_node)
        for status in TaskStatus.values
    }


@pytest.mark.parametrize("status", TaskStatus.values)
def test_admin_filters_every_task_by_status(
    admin_client, node, other_node, one_task_per_status, status
):
    response = admin_client.get(f"/api/tasks/filter/{status}")

    assert response.status_code == 200
    expected = [one_task_per_status[(owner, status)] for owner in (node, other_node)]
    assert ids(response) == newest_first(expected)


@pytest.mark.parametrize("status", TaskStatus.values)
def test_a_node_filters_only_its_own_tasks(client_for, node, one_task_per_status, status):
    response = client_for(node).get(f"/api/tasks/filter/{status}")

    assert response.status_code == 200
    assert ids(response) == [str(one_task_per_status[(node, status)].pk)]


def test_filter_all_is_every_visible_task(client_for, admin_client, node, one_task_per_status):
    node_tasks = [task for (owner, _), task in one_task_per_status.items() if owner == node]

    assert ids(client_for(node).get("/api/tasks/filter/all")) == newest_first(node_tasks)
    everyone = admin_client.get("/api/tasks/filter/all")
    assert ids(everyone) == newest_first(one_task_per_status.values())


def test_a_filter_status_is_read_in_any_case_as_the_original_read_it(
    admin_client, node, other_node, one_task_per_status
):
    # The original's MySQL comparison ignored case: `PENDING` was a 400 here.
    expected = [one_task_per_status[(owner, "pending")] for owner in (node, other_node)]

    assert ids(admin_client.get("/api/tasks/filter/PENDING")) == newest_first(expected)
    assert admin_client.get("/api/tasks/filter/In_Progress").status_code == 200
    assert admin_client.get("/api/tasks/filter/ALL").status_code == 200


@pytest.mark.parametrize("status", ["done", "in-progress", "%20", "PENDINGS"])
def test_an_unknown_filter_status_is_400(admin_client, status):
    response = admin_client.get(f"/api/tasks/filter/{status}")

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["status"]


# --- Keyset pages -------------------------------------------------------------------


def test_a_walk_over_tasks_with_equal_created_at_has_no_duplicates_and_no_gaps(admin_client):
    same_moment = timezone.now() - timedelta(minutes=1)
    tasks = [TaskFactory(created_at=same_moment) for _ in range(23)]
    tasks += [TaskFactory() for _ in range(4)]

    seen, pages = walk(admin_client, "/api/tasks/all", limit=5)

    assert len(seen) == len(set(seen)) == 27
    assert seen == newest_first(tasks)
    assert pages == 6


def test_a_node_walk_through_a_filter_stays_within_its_tasks(client_for, node, other_node):
    same_moment = timezone.now() - timedelta(minutes=1)
    own = [TaskFactory(assigned_node=node, created_at=same_moment) for _ in range(7)]
    for _ in range(5):
        TaskFactory(assigned_node=other_node, created_at=same_moment)

    seen, _ = walk(client_for(node), "/api/tasks/filter/pending", limit=2)

    assert seen == newest_first(own)


def test_tasks_added_during_a_walk_do_not_shift_the_pages(admin_client):
    earlier = timezone.now() - timedelta(hours=1)
    tasks = [TaskFactory(created_at=earlier) for _ in range(6)]
    first = admin_client.get("/api/tasks/all", {"limit": 3})

    TaskFactory()  # newer than everything already listed
    rest = admin_client.get("/api/tasks/all", {"limit": 3, "cursor": first.json()["nextCursor"]})

    assert ids(first) + ids(rest) == newest_first(tasks)
    assert rest.json()["nextCursor"] is None


def test_the_last_full_page_has_no_next_cursor(admin_client):
    for _ in range(4):
        TaskFactory()

    response = admin_client.get("/api/tasks/all", {"limit": 4})

    assert len(ids(response)) == 4
    assert response.json()["nextCursor"] is None


@pytest.mark.parametrize("query", [{}, {"limit": ""}, {"limit": "", "cursor": ""}])
def test_no_limit_returns_every_task(admin_client, query):
    tasks = [TaskFactory() for _ in range(12)]

    response = admin_client.get("/api/tasks/all", query)

    assert ids(response) == newest_first(tasks)
    assert response.json()["nextCursor"] is None


# A longer URI than 4094 bytes is refused (414) before any view reads it.
@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "1.5", "1e3", " 5", "٣", "9" * 4000])
def test_a_limit_outside_1_to_max_page_size_is_400(admin_client, limit):
    response = admin_client.get("/api/tasks/all", {"limit": limit})

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["limit"]


def test_the_largest_limit_is_max_page_size(admin_client, settings):
    settings.MAX_PAGE_SIZE = 3
    for _ in range(4):
        TaskFactory()

    assert len(ids(admin_client.get("/api/tasks/all", {"limit": 3}))) == 3
    assert admin_client.get("/api/tasks/all", {"limit": 4}).status_code == 400


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "é",
        _b64("no separator"),
        _b64(f"2024-01-01T00:00:00|{uuid.UUID(int=1).hex}"),
        _b64(f"not a time|{uuid.UUID(int=1).hex}"),
        _b64("2024-01-01T00:00:00+00:00|not-a-uuid"),
        _b64(f"0001-01-01T00:00:00+05:00|{uuid.UUID(int=1).hex}"),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_malformed_cursor_is_400(admin_client, cursor):
    response = admin_client.get("/api/tasks/all", {"limit": 2, "cursor": cursor})

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["cursor"]


def test_a_cursor_outside_its_documented_form_is_400_even_where_base64_would_read_it(
    admin_client,
):
    """The schema gives the form (pattern, maxLength); base64 skipped stray characters."""
    for _ in range(3):
        TaskFactory()
    cursor = admin_client.get("/api/tasks/all", {"limit": 1}).json()["nextCursor"]
    created_at, task_id = decode_cursor(cursor)
    # UUID() drops hyphens, so this names the same task, in more than 128 characters.
    padded = f"{iso_utc(created_at)}|{'-' * 60}{task_id}"
    too_long = base64.urlsafe_b64encode(padded.encode()).decode().rstrip("=")

    for variant in (f"{cursor[:8]}!{cursor[8:]}", f" {cursor}", f"{cursor}\n", too_long):
        response = admin_client.get("/api/tasks/all", {"limit": 1, "cursor": variant})
        assert response.status_code == 400, variant
        assert [error["field"] for error in response.json()["errors"]] == ["cursor"]
    assert admin_client.get("/api/tasks/all", {"limit": 1, "cursor": cursor}).status_code == 200


def test_a_task_cursor_handed_out_before_node_events_had_pages_still_reads():
    """The cursor's form stayed as it was when the keyset code was shared with node
    events (integer ids): a client's saved task cursor still names the same task."""
    handed_out = (
        "MjAyNi0xMi0wN1QyMTo0NTozMC4xMjM0NTZafGMwMDAwMDAwLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMQ"
    )
    task_id = uuid.UUID("c0000000-0000-4000-8000-000000000001")
    created_at = datetime(2026, 12, 7, 21, 45, 30, 123456, tzinfo=UTC)

    assert decode_cursor(handed_out) == (created_at, task_id)
    assert encode_cursor(created_at, task_id) == handed_out
    assert encode_cursor(created_at, task_id.hex) == handed_out  # a driver's text, as SQLite's


def test_a_cursor_past_the_oldest_task_gives_an_empty_page(admin_client):
    TaskFactory()
    cursor = encode_cursor(timezone.now() - timedelta(days=365), uuid.uuid4())

    response = admin_client.get("/api/tasks/all", {"limit": 2, "cursor": cursor})

    assert response.json() == {"tasks": [], "nextCursor": None}


# --- Query budgets ------------------------------------------------------------------


def queries_for(client, path, query) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path, query).status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("admin", "/api/tasks/all"),
        ("admin", "/api/tasks/filter/pending"),
        ("node", "/api/tasks"),
        ("node", "/api/tasks/node"),
        ("node", "/api/tasks/filter/all"),
    ],
)
def test_a_page_costs_the_same_queries_whatever_its_size(
    client_for, admin_user, node, django_assert_max_num_queries, who, path
):
    for _ in range(60):
        TaskFactory(assigned_node=node)
    client = client_for(admin_user if who == "admin" else node)
    cursor = client.get(path, {"limit": 5}).json()["nextCursor"]

    # One query for the token's user, one for the page.
    with django_assert_max_num_queries(2):
        client.get(path, {"limit": 50, "cursor": cursor})
    one = queries_for(client, path, {"limit": 1})
    assert one == queries_for(client, path, {"limit": 60}) == queries_for(client, path, {})


def test_reading_one_task_costs_two_queries(node_client, node, django_assert_max_num_queries):
    task = TaskFactory(assigned_node=node)

    with django_assert_max_num_queries(2):
        assert node_client.get(f"/api/tasks/{task.pk}").status_code == 200


def test_tasks_of_many_nodes_are_listed_without_extra_queries(
    admin_client, django_assert_max_num_queries
):
    for _ in range(20):
        TaskFactory(assigned_node=NodeFactory())

    with django_assert_max_num_queries(2):
        response = admin_client.get("/api/tasks/all")

    assert len(ids(response)) == 20


@pytest.mark.parametrize(
    ("who", "path", "index"),
    [
        ("admin", "/api/tasks/all", "task_page"),
        ("admin", "/api/tasks/filter/pending", "task_status_page"),
        ("node", "/api/tasks", "task_node_page"),
        ("node", "/api/tasks/filter/all", "task_node_page"),
        ("node", "/api/tasks/filter/pending", "task_node_status_page"),
    ],
)
def test_a_page_is_read_through_its_named_index_on_mariadb(
    who, path, index, node, admin_client, node_client
):
    """MariaDB's planner walked task_page for a node's filtered page at 100,000 tasks
    (750 rows read for 51): the index is named, on MariaDB only (SQLite has no FORCE)."""
    TaskFactory(assigned_node=node)
    client = admin_client if who == "admin" else node_client

    with CaptureQueriesContext(connection) as captured:
        assert client.get(path, {"limit": 50}).status_code == 200

    pages = [query["sql"] for query in captured if "ORDER BY" in query["sql"]]
    forced = f"FORCE INDEX ({connection.ops.quote_name(index)})"
    assert len(pages) == 1
    assert (forced in pages[0]) is (connection.vendor == "mysql")
