"""POST /api/tasks/bulk (SPEC, Placement): many tasks in one request, all or nothing,
each with its initial_assign row, errors naming the item's index and field."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from nodes.models import MaintenanceWindow, NodeLabels
from nodes.services import node_cordon
from tasks import services
from tasks.models import HistoryAction, Task, TaskHistory
from tasks.services import BULK_INSERT_BATCH
from tests.api import TASK_FIELDS, assert_json_error
from tests.factories import AdminFactory, NodeFactory

pytestmark = pytest.mark.django_db


def item(node=None, **fields):
    body = {
        "taskName": "render",
        "taskDetails": "a frame",
        "lockedAt": (timezone.now() + timedelta(days=1)).isoformat(),
        **fields,
    }
    if node is not None:
        body["assignedNode"] = str(node.pk)
    return body


def bulk(client, tasks, **headers):
    return client.post("/api/tasks/bulk", {"tasks": tasks}, format="json", headers=headers)


def test_bulk_creates_every_task_in_order_with_its_initial_assign_row(
    admin_client, admin_user, node, other_node
):
    items = [item(node, taskName=f"t{i}", priority=i + 1) for i in range(5)]
    items.append(item(other_node, taskName="last", payload={"frame": 9}))

    response = bulk(admin_client, items)

    assert response.status_code == 201, response.content
    tasks = response.json()["tasks"]
    assert [t["taskName"] for t in tasks] == [f"t{i}" for i in range(5)] + ["last"]
    assert all(set(t) == TASK_FIELDS for t in tasks)
    assert [t["priority"] for t in tasks] == [1, 2, 3, 4, 5, 50]
    assert tasks[-1]["payload"] == {"frame": 9}
    rows = TaskHistory.objects.filter(action=HistoryAction.INITIAL_ASSIGN)
    assert sorted(rows.values_list("task_id", "to_value", "performed_by_id")) == sorted(
        (uuid.UUID(t["id"]), t["assignedNode"], admin_user.pk) for t in tasks
    )
    assert TaskHistory.objects.count() == 6


def test_items_with_a_selector_are_spread_over_the_matching_nodes(admin_client):
    gpus = NodeFactory.create_batch(2, last_seen=timezone.now())
    for node in gpus:
        NodeLabels.objects.create(node=node, labels={"gpu": "true"})
    NodeFactory(last_seen=timezone.now())

    tasks = bulk(admin_client, [item(nodeSelector={"gpu": "true"}) for _ in range(4)]).json()

    placed = [t["assignedNode"] for t in tasks["tasks"]]
    assert sorted(placed) == sorted([str(n.pk) for n in gpus] * 2)


def test_a_null_node_beside_a_selector_is_left_to_placement(admin_client, node):
    NodeLabels.objects.create(node=node, labels={"gpu": "true"})

    response = bulk(admin_client, [item(assignedNode=None, nodeSelector={"gpu": "true"})])

    assert response.status_code == 201, response.content
    assert response.json()["tasks"][0]["assignedNode"] == str(node.pk)


def test_a_null_node_without_a_selector_is_still_a_400(admin_client, node):
    body = assert_json_error(bulk(admin_client, [item(node), item(assignedNode=None)]), 400)

    assert body["errors"] == [
        {"field": "tasks[1].assignedNode", "message": "This field may not be null."}
    ]


def test_a_thousand_tasks_cost_a_fixed_number_of_queries(admin_client, node, other_node):
    few = [item(node) for _ in range(3)]
    many = [item(node if i % 2 else other_node) for i in range(1000)]

    with CaptureQueriesContext(connection) as small:
        assert bulk(admin_client, few).status_code == 201
    with CaptureQueriesContext(connection) as large:
        assert bulk(admin_client, many).status_code == 201

    def reads(captured):
        return [q["sql"] for q in captured if not q["sql"].startswith("INSERT")]

    # Only the INSERTs grow with the count (by the database's batch size), never a read.
    assert len(reads(large)) == len(reads(small))
    inserts = len(large) - len(reads(large))
    fields = Task._meta.concrete_fields
    batch = min(BULK_INSERT_BATCH, connection.ops.bulk_batch_size(fields, many))
    assert inserts <= 2 * -(-1000 // batch)
    assert Task.objects.count() == 1003


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "tasks"),
        ({"tasks": None}, "tasks"),
        ({"tasks": {"taskName": "x"}}, "tasks"),
        ({"tasks": "x"}, "tasks"),
        ({"tasks": []}, "tasks"),
    ],
)
def test_a_body_that_is_not_a_list_of_one_to_the_limit_is_a_400(admin_client, body, field):
    response = admin_client.post("/api/tasks/bulk", body, format="json")
    body = assert_json_error(response, 400)
    assert [e["field"] for e in body["errors"]] == [field]


def test_over_the_limit_is_a_400_and_creates_nothing(admin_client, node, settings):
    settings.BULK_MAX_TASKS = 3
    body = assert_json_error(bulk(admin_client, [item(node)] * 4), 400)
    assert "1 to 3" in body["errors"][0]["message"]
    assert not Task.objects.exists()


def test_bad_items_are_named_by_index_and_field_and_nothing_is_created(admin_client, node):
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    items = [
        item(node),
        item(node, lockedAt=past),
        "not an object",
        item(node, priority=0, nodeSelector={"BAD": "x"}),
        item(),
        item(node),
    ]

    body = assert_json_error(bulk(admin_client, items), 400)

    fields = sorted(e["field"] for e in body["errors"])
    assert fields == [
        "tasks[1].lockedAt",
        "tasks[2]",
        "tasks[3].nodeSelector",
        "tasks[3].priority",
        "tasks[4].assignedNode",
    ]
    assert not Task.objects.exists()
    assert not TaskHistory.objects.exists()


def test_bad_nodes_are_named_by_index_and_nothing_is_created(admin_client, node):
    gone, admin = NodeFactory(is_active=False), AdminFactory()
    items = [
        item(node),
        item(gone),
        item(admin),
        item(assignedNode=str(uuid.uuid4())),
        item(node, nodeSelector={"gpu": "true"}),
    ]

    body = assert_json_error(bulk(admin_client, items), 400)

    assert {e["field"]: e["message"] for e in body["errors"]} == {
        "tasks[1].assignedNode": "Tasks can only be assigned to an active node.",
        "tasks[2].assignedNode": "Tasks can only be assigned to a node, not an admin.",
        "tasks[3].assignedNode": "No user has this id.",
        "tasks[4].assignedNode": "This node does not match the task's nodeSelector.",
    }
    assert not Task.objects.exists()


def test_one_answer_names_every_bad_item_field_errors_and_node_errors_alike(admin_client, node):
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    admin, gpu = AdminFactory(), {"gpu": "true"}
    items = [
        item(node),
        item(node, lockedAt=past),
        item(node, priority=0),
        item(admin),
        item(admin, taskName=""),
        item(node, nodeSelector=gpu, lockedAt=past),
        item(node, nodeSelector={"BAD": "x"}),
        item(assignedNode="not an id"),
        item(lockedAt=past),
    ]

    body = assert_json_error(bulk(admin_client, items), 400)

    assert [e["field"] for e in body["errors"]] == [
        "tasks[1].lockedAt",
        "tasks[2].priority",
        "tasks[3].assignedNode",
        "tasks[4].taskName",
        "tasks[4].assignedNode",
        "tasks[5].lockedAt",
        "tasks[5].assignedNode",
        "tasks[6].nodeSelector",
        "tasks[7].assignedNode",
        "tasks[8].lockedAt",
        "tasks[8].assignedNode",
    ]
    assert body["errors"][2]["message"] == "Tasks can only be assigned to a node, not an admin."
    assert body["errors"][6]["message"] == "This node does not match the task's nodeSelector."
    assert body["message"].endswith("(and 10 more)")
    assert not Task.objects.exists()


def test_an_item_no_node_matches_is_a_409_and_nothing_is_created(admin_client, node):
    response = bulk(admin_client, [item(node), item(nodeSelector={"gpu": "true"})])

    body = assert_json_error(response, 409)
    assert "tasks[1]" in body["message"]
    assert not Task.objects.exists()


HOUR = timedelta(hours=1)


def cordoned(node):
    node_cordon(node_id=node.pk, reason="disk swap", actor=None)


def draining(node):
    node_cordon(
        node_id=node.pk, reason="disk swap", actor=None, drain_deadline=timezone.now() + HOUR
    )


def in_maintenance(node):
    now = timezone.now()
    MaintenanceWindow.objects.create(
        node=node, starts_at=now - HOUR, ends_at=now + HOUR, reason="rack move"
    )


@pytest.mark.parametrize("unschedulable", [cordoned, draining, in_maintenance])
def test_an_item_naming_an_unschedulable_node_is_a_409_and_nothing_is_created(
    admin_client, node, other_node, unschedulable
):
    unschedulable(other_node)

    response = bulk(admin_client, [item(node), item(other_node), item(node)])

    body = assert_json_error(response, 409)
    assert body["title"] == "Node is cordoned"
    assert body["message"].startswith("node is cordoned: tasks[1]'s assignedNode")
    assert not Task.objects.exists()
    assert not TaskHistory.objects.exists()


def test_a_retry_with_the_same_idempotency_key_creates_nothing_more(admin_client, node):
    items = [item(node) for _ in range(3)]

    first = bulk(admin_client, items, **{"Idempotency-Key": "bulk-1"})
    again = bulk(admin_client, items, **{"Idempotency-Key": "bulk-1"})

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert Task.objects.count() == 3


def test_only_admins_bulk_create(node_client, node):
    assert_json_error(bulk(node_client, [item(node)]), 403)
    assert not Task.objects.exists()


# --- The body: up to BULK_MAX_BODY_BYTES, where other routes stop at 1 MiB ------------


def payload_items(node, count, size):
    return [item(node, taskName=f"t{i}", payload={"blob": "x" * size}) for i in range(count)]


def test_a_thousand_tasks_with_2_kib_payloads_are_one_bulk(admin_client, node):
    """2.2 MB: over DATA_UPLOAD_MAX_MEMORY_SIZE (1 MiB), which refused it with a 413."""
    items = payload_items(node, 1000, 2048)

    response = bulk(admin_client, items)

    assert response.status_code == 201, response.content[:300]
    assert Task.objects.count() == 1000
    assert Task.objects.filter(payload__blob="x" * 2048).count() == 1000


def test_only_the_bulk_route_takes_the_larger_body(admin_client, node, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 20_000
    settings.BULK_MAX_BODY_BYTES = 200_000

    assert bulk(admin_client, payload_items(node, 50, 1000)).status_code == 201
    one = item(node, payload={"blob": "x" * 25_000})
    body = assert_json_error(admin_client.post("/api/tasks", one, format="json"), 413)
    assert "20000 bytes" in body["message"]
    assert Task.objects.count() == 50


def test_a_bulk_body_over_its_limit_is_a_413_and_creates_nothing(admin_client, node, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 20_000
    settings.BULK_MAX_BODY_BYTES = 30_000

    body = assert_json_error(bulk(admin_client, payload_items(node, 50, 1000)), 413)

    assert "30000 bytes" in body["message"]
    assert not Task.objects.exists()


def test_a_general_limit_above_the_bulk_one_counts_for_bulk_too(admin_client, node, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    settings.BULK_MAX_BODY_BYTES = 10_000

    assert bulk(admin_client, payload_items(node, 50, 1000)).status_code == 201


def test_an_idempotent_retry_of_a_large_body_is_the_same_answer(admin_client, node, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 20_000
    items = payload_items(node, 50, 1000)

    first = bulk(admin_client, items, **{"Idempotency-Key": "big-1"})
    again = bulk(admin_client, items, **{"Idempotency-Key": "big-1"})

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert Task.objects.count() == 50


def test_inserts_are_split_by_the_bytes_of_their_tasks(admin_client, node, monkeypatch):
    monkeypatch.setattr(services, "BULK_INSERT_BYTES", 5_000)

    with CaptureQueriesContext(connection) as captured:
        assert bulk(admin_client, payload_items(node, 10, 2000)).status_code == 201

    task_inserts = [q for q in captured if q["sql"].startswith('INSERT INTO "tasks_task"')]
    task_inserts += [q for q in captured if q["sql"].startswith("INSERT INTO `tasks_task`")]
    assert len(task_inserts) == 5  # two tasks of ~2 KB a statement
    assert Task.objects.count() == 10


def test_tasks_whose_escaped_text_outgrows_one_packet_are_inserted(admin_client, node, settings):
    """Quotes double when escaped for SQL: 170 payloads of 64 KB are ~22 MB of INSERT,
    past MariaDB's max_allowed_packet (16 MiB) as one statement (SQLite has no such
    bound; on MariaDB this failed with the tasks in one INSERT)."""
    settings.BULK_MAX_BODY_BYTES = 12 * 1024 * 1024
    items = [item(node, payload='"' * 32_000) for _ in range(170)]

    response = bulk(admin_client, items)

    assert response.status_code == 201, response.content[:300]
    assert Task.objects.filter(payload='"' * 32_000).count() == 170
