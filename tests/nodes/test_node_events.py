"""`GET /api/nodes/{nodeId}/events` in pages, as the task lists are (SPEC, Pagination):
newest first, keyset on (created_at, id), `limit` and `cursor`, `nextCursor`."""

import base64
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from nodes.models import NodeEvent, NodeEventKind
from taskmgmt.pagination import decode_cursor
from tests.api import assert_json_error
from tests.factories import NodeFactory

pytestmark = pytest.mark.django_db


def add_events(node, count: int, *, ties: int = 1) -> list[int]:
    """`count` events of `node`, `ties` at each moment; their ids newest first."""
    now = timezone.now()
    events = NodeEvent.objects.bulk_create(
        NodeEvent(
            node=node,
            kind=NodeEventKind.CORDON,
            reason=f"event {number}",
            created_at=now - timedelta(seconds=number // ties),
        )
        for number in range(count)
    )
    newest_first = sorted(events, key=lambda event: (event.created_at, event.pk), reverse=True)
    return [event.pk for event in newest_first]


def events_of(node):
    return f"/api/nodes/{node.pk}/events"


def walk(client, node, limit: int) -> tuple[list[int], int]:
    """Every event id a walk of pages of `limit` sees, in order, and the pages it took."""
    seen, pages, cursor = [], 0, None
    while True:
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(events_of(node), query)
        assert response.status_code == 200, response.content
        pages += 1
        seen += [event["id"] for event in response.json()["events"]]
        cursor = response.json()["nextCursor"]
        if cursor is None:
            return seen, pages


def test_a_walk_of_pages_sees_every_event_once_newest_first(admin_client, node):
    # Three events at each moment: the id orders those, so no page boundary drops one.
    expected = add_events(node, 11, ties=3)
    add_events(NodeFactory(), 4)  # another node's, never in this node's pages

    seen, pages = walk(admin_client, node, limit=2)

    assert seen == expected
    assert pages == 6


def test_the_last_full_page_has_no_next_cursor(admin_client, node):
    add_events(node, 4)

    response = admin_client.get(events_of(node), {"limit": 4})

    assert len(response.json()["events"]) == 4
    assert response.json()["nextCursor"] is None


@pytest.mark.parametrize("query", [{}, {"limit": ""}, {"limit": "", "cursor": ""}])
def test_without_a_limit_every_event_comes_as_before(admin_client, node, settings, query):
    settings.MAX_PAGE_SIZE = 3
    expected = add_events(node, 5)

    body = admin_client.get(events_of(node), query).json()

    assert [event["id"] for event in body["events"]] == expected
    assert body["nextCursor"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "1.5", " 5", "٣", "9" * 4000])
def test_a_limit_outside_1_to_max_page_size_is_400(admin_client, node, limit):
    response = admin_client.get(events_of(node), {"limit": limit})

    body = assert_json_error(response, 400)
    assert [error["field"] for error in body["errors"]] == ["limit"]


def raw_cursor(text: str) -> str:
    """A cursor of the served form (URL-safe base64, unpadded) around any text."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        raw_cursor("not a cursor"),
        # A task's cursor: its id is a UUID, an event's an integer.
        raw_cursor("2026-12-07T21:45:30Z|c0000000-0000-4000-8000-000000000001"),
        raw_cursor(f"2026-12-07T21:45:30Z|{2**63}"),  # past any BigAutoField id
        raw_cursor(f"2026-12-07T21:45:30Z|{2**70}"),
        raw_cursor("2026-12-07T21:45:30Z|-1"),
        raw_cursor("2026-12-07T21:45:30Z|1.5"),
        raw_cursor("2026-12-07T21:45:30Z|"),
        raw_cursor("2026-12-07T21:45:30Z|١٢"),  # digits, but not ASCII ones
        raw_cursor("2026-12-07T21:45:30|12"),  # no offset
    ],
)
def test_a_malformed_cursor_is_400(admin_client, node, cursor):
    add_events(node, 3)

    response = admin_client.get(events_of(node), {"limit": 1, "cursor": cursor})

    body = assert_json_error(response, 400)
    assert [error["field"] for error in body["errors"]] == ["cursor"]


def test_an_events_cursor_is_refused_by_the_task_lists(admin_client, node):
    add_events(node, 3)
    cursor = admin_client.get(events_of(node), {"limit": 1}).json()["nextCursor"]

    response = admin_client.get("/api/tasks/all", {"limit": 1, "cursor": cursor})

    assert [error["field"] for error in assert_json_error(response, 400)["errors"]] == ["cursor"]


def test_an_events_cursor_names_the_last_event_sent(admin_client, node):
    newest, second, *_ = add_events(node, 3)
    body = admin_client.get(events_of(node), {"limit": 2}).json()

    created_at, event_id = decode_cursor(body["nextCursor"], int)

    assert event_id == second
    assert created_at == NodeEvent.objects.get(pk=second).created_at
    assert [event["id"] for event in body["events"]] == [newest, second]


def test_a_page_costs_the_same_queries_however_many_events(admin_client, node):
    def queries(query):
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(events_of(node), query).status_code == 200
        return len(captured)

    add_events(node, 3)
    few = [queries({}), queries({"limit": 1}), queries({"limit": 50})]
    add_events(node, 60)
    cursor = admin_client.get(events_of(node), {"limit": 5}).json()["nextCursor"]
    many = [queries({}), queries({"limit": 1}), queries({"limit": 50})]

    # The token's user, the node, its page.
    assert few == many == [3, 3, 3]
    assert queries({"limit": 5, "cursor": cursor}) == 3


def test_the_schema_documents_the_events_pages():
    patterns = [path("api/", include("nodes.urls"))]
    schema = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)
    operation = schema["paths"]["/api/nodes/{nodeId}/events"]["get"]

    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert {"limit", "cursor"} <= set(parameters)
    assert not parameters["limit"].get("required") and not parameters["cursor"].get("required")
    assert "400" in operation["responses"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    component = schema["components"]["schemas"][answer["$ref"].rsplit("/", 1)[1]]
    assert set(component["properties"]) == {"events", "nextCursor"}
    assert component["properties"]["nextCursor"]["nullable"] is True


def explained(sql: str) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        columns = [column[0].lower() for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor == "sqlite", reason="EXPLAIN plans are checked on MariaDB")
@pytest.mark.django_db(transaction=True)  # ANALYZE TABLE commits.
def test_a_page_of_events_is_one_range_of_node_event_time_in_index_order(admin_client):
    """Many nodes with many events, so the planner has a real choice: a page, first or
    later, walks `node_event_time` (node, created_at; InnoDB appends the id) from the
    cursor, newest first, and stops: no scan of the node's events, no sort."""
    nodes = NodeFactory.create_batch(10)
    for node in nodes:
        add_events(node, 500, ties=2)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE nodes_nodeevent")
        cursor.fetchall()
    node = nodes[0]
    cursor = admin_client.get(events_of(node), {"limit": 50}).json()["nextCursor"]

    for query in ({"limit": 50}, {"limit": 50, "cursor": cursor}):
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(events_of(node), query).status_code == 200
        (page,) = [q["sql"] for q in captured if "nodes_nodeevent" in q["sql"]]
        plans = [row for row in explained(page) if row["table"] == "nodes_nodeevent"]
        assert [(row["key"], row["type"] in ("ref", "range")) for row in plans] == [
            ("node_event_time", True)
        ]
        assert "filesort" not in (plans[0]["extra"] or "")
