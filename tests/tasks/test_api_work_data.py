"""Work data (SPEC, Work data): a task's JSON payload in, its JSON result out, and
progress with a checkpoint that survives reassignment; attempts as fencing tokens."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import User
from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tasks.services import tasks_fail_over, tasks_reassign
from tests.api import TASK_FIELDS, assert_json_error
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

PENDING, IN_PROGRESS = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
COMPLETED, FAILED = TaskStatus.COMPLETED, TaskStatus.FAILED

PAYLOAD = {"input": "s3://bucket/file.csv", "rows": [1, 2, 3], "options": {"dry": False}}


def future(days=1):
    return (timezone.now() + timedelta(days=days)).isoformat()


def create_body(node, **fields):
    return {
        "taskName": "Import",
        "taskDetails": "Import the file.",
        "assignedNode": str(node.pk),
        "lockedAt": future(),
        **fields,
    }


def raw_put(client, path, text):
    """A body sent as these exact bytes: JSON the test client would not build (\\ud800)."""
    return client.generic("PUT", path, text.encode(), content_type="application/json")


def raw_post(client, path, text):
    return client.generic("POST", path, text.encode(), content_type="application/json")


def progress(client, task, **fields):
    return client.put("/api/tasks/progress", {"taskId": str(task.pk), **fields})


def shift(client, task, status, **fields):
    return client.put(
        "/api/tasks/shift-status", {"taskId": str(task.pk), "taskStatus": status, **fields}
    )


def stored(task):
    """What the database holds of the task's work data and state."""
    return Task.objects.filter(pk=task.pk).values(
        "payload",
        "result",
        "progress_percent",
        "progress_message",
        "progress_updated_at",
        "checkpoint",
        "status",
        "attempts",
    )[0]


def edit_rows(task):
    return list(
        TaskHistory.objects.filter(task=task, action=HistoryAction.EDIT).values_list(
            "to_value", flat=True
        )
    )


# --- payload ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [PAYLOAD, [1, "two", None], "text", 42, 1.5, True, None])
def test_a_task_is_created_with_any_json_payload_and_shows_it_everywhere(
    admin_client, node_client, node, payload
):
    response = admin_client.post("/api/tasks", create_body(node, payload=payload), format="json")

    assert response.status_code == 201, response.content
    task = response.json()["task"]
    assert set(task) == TASK_FIELDS
    assert task["payload"] == payload
    assert Task.objects.get(pk=task["id"]).payload == payload
    assert admin_client.get(f"/api/tasks/{task['id']}").json()["task"]["payload"] == payload
    for path in ("/api/tasks/all", "/api/tasks/filter/pending"):
        assert admin_client.get(path).json()["tasks"][0]["payload"] == payload
    for path in ("/api/tasks", "/api/tasks/node", "/api/tasks/filter/all"):
        assert node_client.get(path).json()["tasks"][0]["payload"] == payload
    assert node_client.get("/api/auth/profile").json()["tasks"][0]["payload"] == payload


def test_a_task_created_without_a_payload_has_null_and_no_result_progress_or_checkpoint(
    admin_client, node
):
    task = admin_client.post("/api/tasks", create_body(node)).json()["task"]

    assert (task["payload"], task["result"], task["progress"], task["checkpoint"]) == (
        None,
        None,
        None,
        None,
    )
    assert (task["attempt"], task["attempts"]) == (0, 0)


def test_the_payload_limit_counts_compact_json_bytes(admin_client, node, settings):
    settings.TASK_PAYLOAD_MAX_BYTES = 20
    at_limit = {"k": "é" * 7}  # {"k":"ééééééé"} is 8 + 14 bytes: over 20
    fits = {"k": "x" * 12}  # 20 bytes

    assert admin_client.post("/api/tasks", create_body(node, payload=fits)).status_code == 201
    body = assert_json_error(
        admin_client.post("/api/tasks", create_body(node, payload=at_limit)), 400
    )

    assert body["errors"][0]["field"] == "payload"
    assert "at most 20 bytes" in body["errors"][0]["message"]
    assert Task.objects.count() == 1


@pytest.mark.parametrize(
    "payload_text",
    [
        '"\\u0000"',  # NUL
        '{"a\\u0000": 1}',  # NUL in a key
        '["\\ud800"]',  # a lone surrogate
        '{"\\udfff": 1}',
        "1e400",  # infinity once parsed
    ],
)
def test_a_payload_with_nul_a_lone_surrogate_or_infinity_is_a_400_naming_it(
    admin_client, node, payload_text
):
    body = dict(create_body(node))
    text = json.dumps(body)[:-1] + f', "payload": {payload_text}}}'

    error = assert_json_error(raw_post(admin_client, "/api/tasks", text), 400)

    assert [e["field"] for e in error["errors"]] == ["payload"]
    assert not Task.objects.exists()


@pytest.mark.parametrize(("depth", "status"), [(31, 201), (32, 400), (900, 400)])
def test_a_payload_nests_at_most_31_arrays_or_objects_deep(admin_client, node, depth, status):
    # MariaDB's JSON_VALID (the column's CHECK) refuses a 32nd level: a 400, not a 500.
    nested = "[" * (depth - 1) + '{"k": 1}' + "]" * (depth - 1)
    text = json.dumps(create_body(node))[:-1] + f', "payload": {nested}}}'

    response = raw_post(admin_client, "/api/tasks", text)

    assert response.status_code == status, response.content
    assert Task.objects.count() == (status == 201)


def test_editing_the_payload_writes_an_edit_row_naming_it(admin_client, node):
    task = TaskFactory(assigned_node=node, payload={"a": 1, "b": 2})
    body = create_body(node, taskId=str(task.pk), taskName=task.name, taskDetails=task.details)
    body["lockedAt"] = task.locked_at.isoformat()

    same = admin_client.put("/api/tasks", {**body, "payload": {"b": 2, "a": 1}}, format="json")
    assert same.status_code == 200, same.content
    assert edit_rows(task) == []  # the same value in another key order is no change

    changed = admin_client.put("/api/tasks", {**body, "payload": {"a": 1.0, "b": 2}}, format="json")
    assert changed.json()["task"]["payload"] == {"a": 1.0, "b": 2}
    assert edit_rows(task) == ["payload"]  # 1 became 1.0: a change for JSON's readers

    kept = admin_client.put("/api/tasks", {**body, "taskName": "Renamed"}, format="json")
    assert kept.json()["task"]["payload"] == {"a": 1.0, "b": 2}  # left out: kept
    assert edit_rows(task) == ["taskName", "payload"]

    body["taskName"] = "Renamed"
    cleared = admin_client.put("/api/tasks", {**body, "payload": None}, format="json")
    assert cleared.json()["task"]["payload"] is None
    assert stored(task)["payload"] is None
    # Newest first; the value itself is never copied into history.
    assert edit_rows(task) == ["payload", "taskName", "payload"]


def test_an_edit_with_a_payload_over_the_limit_changes_nothing(admin_client, node, settings):
    settings.TASK_PAYLOAD_MAX_BYTES = 10
    task = TaskFactory(assigned_node=node, payload=[1])
    body = create_body(node, taskId=str(task.pk), taskName="New name", payload="x" * 20)

    error = assert_json_error(admin_client.put("/api/tasks", body, format="json"), 400)

    assert error["errors"][0]["field"] == "payload"
    task.refresh_from_db()
    assert (task.name, task.payload) == (task.name, [1])
    assert edit_rows(task) == []


# --- result ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [COMPLETED, FAILED])
def test_the_node_sends_a_result_with_its_final_status(node_client, node, status):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    result = {"rows": 1200, "output": "s3://bucket/out.csv"}

    response = shift(node_client, task, status, result=result, attempt=1)

    assert response.status_code == 200, response.content
    assert response.json()["task"]["result"] == result
    assert stored(task)["result"] == result


def test_a_result_is_null_until_the_final_status_and_never_changes_after(node_client, node):
    task = TaskFactory(assigned_node=node, status=PENDING)

    started = shift(node_client, task, IN_PROGRESS, result={"ignored": True})
    assert started.json()["task"]["result"] is None
    shift(node_client, task, COMPLETED, result={"first": 1})
    again = shift(node_client, task, COMPLETED, result={"second": 2})

    assert again.status_code == 200
    assert again.json()["task"]["result"] == {"first": 1}
    assert stored(task)["result"] == {"first": 1}


@pytest.mark.parametrize("result_text", ['"x\\u0000"', '["\\ud800"]', '"' + "x" * 40 + '"'])
def test_a_bad_result_is_a_400_and_the_status_does_not_change(
    node_client, node, settings, result_text
):
    settings.TASK_RESULT_MAX_BYTES = 32
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    text = f'{{"taskId": "{task.pk}", "taskStatus": "completed", "result": {result_text}}}'

    error = assert_json_error(raw_put(node_client, "/api/tasks/shift-status", text), 400)

    assert [e["field"] for e in error["errors"]] == ["result"]
    assert (stored(task)["status"], stored(task)["result"]) == (IN_PROGRESS, None)


def test_the_original_clients_shift_status_is_unchanged(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)

    response = shift(node_client, task, FAILED, reason="disk full")

    task_shape = response.json()["task"]
    assert (task_shape["status"], task_shape["failureReason"], task_shape["result"]) == (
        FAILED,
        "disk full",
        None,
    )


# --- attempts as fencing tokens --------------------------------------------------------


def test_a_claim_and_a_start_each_count_an_attempt_shown_as_attempt(node_client, node):
    claimed_task = TaskFactory(assigned_node=node, attempts=2)
    claimed = node_client.post("/api/tasks/claim").json()["task"]
    assert claimed["id"] == str(claimed_task.pk)
    assert (claimed["attempt"], claimed["attempts"]) == (3, 3)

    started_task = TaskFactory(assigned_node=node)
    started = shift(node_client, started_task, IN_PROGRESS, attempt=7).json()["task"]
    assert (started["attempt"], started["attempts"]) == (1, 1)  # a start makes a new attempt


@pytest.mark.parametrize("status", [COMPLETED, FAILED, IN_PROGRESS])
def test_a_report_for_a_stale_attempt_is_a_409_and_changes_nothing(node_client, node, status):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=2)
    history_before = TaskHistory.objects.count()

    response = shift(node_client, task, status, attempt=1, result={"late": True})

    body = assert_json_error(response, 409)
    assert body["title"] == "Stale attempt"
    assert "stale attempt" in body["message"]
    assert (stored(task)["status"], stored(task)["result"]) == (IN_PROGRESS, None)
    assert TaskHistory.objects.count() == history_before


@pytest.mark.parametrize("attempt", ["1", 1.0, True, -1, None])
def test_an_attempt_that_is_not_a_non_negative_integer_is_a_400(node_client, node, attempt):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)

    error = assert_json_error(shift(node_client, task, COMPLETED, attempt=attempt), 400)

    assert [e["field"] for e in error["errors"]] == ["attempt"]
    assert stored(task)["status"] == IN_PROGRESS


# The attempts column is a PositiveIntegerField: Django's portable bound is 2**31 - 1.
ATTEMPTS_COLUMN_MAX = 2**31 - 1


def report(client, task, path, attempt):
    if path == "progress":
        return progress(client, task, attempt=attempt, percent=5)
    return shift(client, task, COMPLETED, attempt=attempt)


@pytest.mark.parametrize("path", ["progress", "shift-status"])
@pytest.mark.parametrize("attempt", [ATTEMPTS_COLUMN_MAX + 1, 2**63 - 1, 2**63, 2**64, 10**30])
def test_an_attempt_the_attempts_column_cannot_hold_is_a_400_naming_it(
    node_client, node, path, attempt
):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)

    error = assert_json_error(report(node_client, task, path, attempt), 400)

    assert [e["field"] for e in error["errors"]] == ["attempt"]
    assert (stored(task)["status"], stored(task)["progress_updated_at"]) == (IN_PROGRESS, None)


@pytest.mark.parametrize("path", ["progress", "shift-status"])
def test_the_largest_attempt_the_column_holds_is_judged_as_any_other(node_client, node, path):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)

    body = assert_json_error(report(node_client, task, path, ATTEMPTS_COLUMN_MAX), 409)

    assert body["title"] == "Stale attempt"


# --- progress --------------------------------------------------------------------------


def test_the_node_reports_progress_and_the_task_shows_the_latest(node_client, node, admin_client):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    history_before = TaskHistory.objects.count()
    updated_before = stored(task)

    first = progress(node_client, task, attempt=1, percent=10, message="reading", checkpoint=[1])
    second = progress(node_client, task, percent=42.5, message="row 425 of 1000")

    assert first.status_code == 200, first.content
    shown = second.json()["task"]
    assert set(shown) == TASK_FIELDS
    assert shown["progress"]["percent"] == 42.5
    assert shown["progress"]["message"] == "row 425 of 1000"
    assert shown["checkpoint"] == [1]  # not sent: the last one stays
    assert admin_client.get(f"/api/tasks/{task.pk}").json()["task"]["progress"] == shown["progress"]
    assert TaskHistory.objects.count() == history_before  # progress is not an audit event
    task.refresh_from_db()
    assert task.updated_at == Task.objects.get(pk=task.pk).updated_at
    assert stored(task)["status"] == updated_before["status"]


def test_progress_without_percent_or_message_clears_them(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    progress(node_client, task, percent=50, message="half")

    shown = progress(node_client, task, checkpoint={"offset": 500}).json()["task"]

    assert (shown["progress"]["percent"], shown["progress"]["message"]) == (None, None)
    assert shown["checkpoint"] == {"offset": 500}


def test_progress_costs_one_update_and_one_read(node_client, node, django_assert_num_queries):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)

    # The token's user, the conditional UPDATE, the task read back for the answer: on
    # MariaDB the UPDATE and the read go in one query (taskmgmt.sql.update_then_select).
    with django_assert_num_queries(2 if connection.vendor == "mysql" else 3) as captured:
        response = progress(node_client, task, attempt=1, percent=5, checkpoint={"i": 5})

    assert response.status_code == 200
    writes = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith("SELECT")]
    assert len(writes) == 1 and writes[0].startswith("UPDATE"), writes


def test_progress_on_another_nodes_task_is_a_403_and_changes_nothing(node_client, other_node):
    task = TaskFactory(assigned_node=other_node, status=IN_PROGRESS, attempts=1)

    assert_json_error(progress(node_client, task, percent=5, checkpoint=[1]), 403)

    assert (stored(task)["progress_updated_at"], stored(task)["checkpoint"]) == (None, None)


@pytest.mark.parametrize("status", [PENDING, COMPLETED, FAILED])
def test_progress_on_a_task_not_in_progress_is_a_409(node_client, node, status):
    task = TaskFactory(assigned_node=node, status=status)

    assert_json_error(progress(node_client, task, percent=5), 409)

    assert stored(task)["progress_updated_at"] is None


def test_progress_for_a_stale_attempt_is_a_409_and_changes_nothing(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=3)

    body = assert_json_error(progress(node_client, task, attempt=2, checkpoint=[2]), 409)

    assert body["title"] == "Stale attempt"
    assert (stored(task)["progress_updated_at"], stored(task)["checkpoint"]) == (None, None)


@pytest.mark.parametrize("task_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid", None])
def test_progress_on_an_unknown_or_missing_task_is_a_4xx(node_client, task_id):
    response = node_client.put("/api/tasks/progress", {"taskId": task_id}, format="json")

    assert_json_error(response, 404 if task_id and task_id[0] == "0" else 400)


def test_progress_on_a_soft_deleted_task_is_a_404(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, active=False)

    assert_json_error(progress(node_client, task, percent=1), 404)


def test_an_admin_cannot_report_progress(admin_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS)

    assert_json_error(progress(admin_client, task, percent=1), 403)


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("percent", "-0.1"),
        ("percent", "100.01"),
        ("percent", '"50"'),
        ("percent", "true"),
        ("percent", "1e400"),
        ("percent", "[50]"),
        ("message", '"' + "x" * 201 + '"'),
        ("message", "5"),
        ("message", '"a\\u0000b"'),
        ("message", '"\\ud800"'),
        ("checkpoint", '"\\u0000"'),
        ("checkpoint", '{"k": "\\udc00"}'),
        ("checkpoint", '"' + "x" * 16_400 + '"'),
        ("attempt", '"1"'),
    ],
)
def test_bad_progress_is_a_400_naming_the_field_and_stores_nothing(node_client, node, field, text):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)
    body = f'{{"taskId": "{task.pk}", "{field}": {text}}}'

    error = assert_json_error(raw_put(node_client, "/api/tasks/progress", body), 400)

    assert [e["field"] for e in error["errors"]] == [field]
    assert (stored(task)["progress_updated_at"], stored(task)["checkpoint"]) == (None, None)


@pytest.mark.parametrize("text", ["[1]", "null", '"x"', "{}"])
def test_a_progress_body_that_is_not_an_object_or_lacks_the_task_is_a_400(node_client, text):
    body = assert_json_error(raw_put(node_client, "/api/tasks/progress", text), 400)

    assert body.get("errors")


def test_a_message_of_200_characters_and_the_percent_bounds_are_taken(node_client, node):
    task = TaskFactory(assigned_node=node, status=IN_PROGRESS, attempts=1)

    for percent in (0, 100, 99.9):
        assert progress(node_client, task, percent=percent, message="é" * 200).status_code == 200

    assert stored(task)["progress_message"] == "é" * 200


# --- reassignment keeps the checkpoint, forgets progress and result --------------------


def reported(node, status=IN_PROGRESS):
    task = TaskFactory(
        assigned_node=node,
        status=status,
        attempts=1,
        progress_percent=60.0,
        progress_message="row 600",
        progress_updated_at=timezone.now(),
        checkpoint={"offset": 600},
        result={"error": "trace"} if status == FAILED else None,
    )
    return task


def assert_checkpoint_kept_progress_cleared(task):
    data = stored(task)
    assert data["checkpoint"] == {"offset": 600}
    assert (data["progress_percent"], data["progress_message"], data["result"]) == (None,) * 3
    assert data["progress_updated_at"] is None


@pytest.mark.parametrize("status", [IN_PROGRESS, FAILED])
def test_a_manual_reassignment_keeps_the_checkpoint_and_clears_progress(
    admin_client, node, other_node, status
):
    task = reported(node, status)

    response = admin_client.put(
        "/api/tasks/assign", {"taskId": str(task.pk), "nodeId": str(other_node.pk)}
    )

    shown = response.json()["task"]
    assert (shown["progress"], shown["checkpoint"], shown["result"]) == (
        None,
        {"offset": 600},
        None,
    )
    assert_checkpoint_kept_progress_cleared(task)


def test_a_bulk_reassignment_keeps_the_checkpoint_and_clears_progress(node, other_node):
    task = reported(node, FAILED)

    tasks_reassign(task_ids=[task.pk], node=other_node)

    assert_checkpoint_kept_progress_cleared(task)


def test_failover_keeps_the_checkpoint_and_clears_progress(settings, node, other_node):
    settings.FAILOVER, settings.NODE_DOWN_AFTER = "reassign", 30
    User.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    User.objects.filter(pk=other_node.pk).update(last_seen=timezone.now())
    task = reported(node)

    assert tasks_fail_over(batch_size=10).reassigned == 1

    assert stored(task)["status"] == PENDING
    assert_checkpoint_kept_progress_cleared(task)


def test_the_next_attempt_on_another_node_reads_the_checkpoint_back(
    client_for, node, other_node, admin_client
):
    task = TaskFactory(assigned_node=node, payload={"n": 3})
    first = client_for(node)
    claimed = first.post("/api/tasks/claim").json()["task"]
    progress(first, task, attempt=claimed["attempt"], percent=33, checkpoint={"done": 1})
    admin_client.put("/api/tasks/assign", {"taskId": str(task.pk), "nodeId": str(other_node.pk)})

    second = client_for(other_node)
    resumed = second.post("/api/tasks/claim").json()["task"]
    late = progress(first, task, attempt=claimed["attempt"], percent=66)
    done = shift(second, task, COMPLETED, attempt=resumed["attempt"], result={"sum": 6})

    assert (resumed["payload"], resumed["checkpoint"], resumed["attempt"]) == (
        {"n": 3},
        {"done": 1},
        2,
    )
    assert late.status_code == 403  # the first node's report comes too late
    assert done.json()["task"]["result"] == {"sum": 6}


def test_lists_with_payloads_cost_what_they_did(admin_client, node, django_assert_max_num_queries):
    for number in range(30):
        TaskFactory(assigned_node=node, payload={"blob": "x" * 4096, "n": number})

    with django_assert_max_num_queries(2):
        tasks = admin_client.get("/api/tasks/all", {"limit": 50}).json()["tasks"]

    assert sorted(task["payload"]["n"] for task in tasks) == list(range(30))


def test_another_node_sees_nothing_of_the_work_data(client_for, node):
    other = client_for(NodeFactory())
    task = TaskFactory(assigned_node=node, payload={"secret": 1})

    assert_json_error(other.get(f"/api/tasks/{task.pk}"), 403)
    assert other.get("/api/tasks/filter/all").json()["tasks"] == []


def test_a_result_sent_with_cancelled_is_kept_and_the_schema_says_so(
    anon_client, node_client, node
):
    # shift-status keeps a result sent with cancelled (a node acknowledging a cancel
    # request: what the work had done when it stopped), as docs/api.md says; the schema
    # said "kept with completed or failed, ignored otherwise".
    task = TaskFactory(
        assigned_node=node,
        status=TaskStatus.IN_PROGRESS,
        attempts=1,
        cancel_requested_at=timezone.now(),
    )

    response = shift(node_client, task, "cancelled", result={"done": 3})

    assert response.status_code == 200, response.content
    assert stored(task)["result"] == {"done": 3}
    schema = anon_client.get("/api/schema/", {"format": "json"}).json()
    described = schema["components"]["schemas"]["TaskStatusRequest"]["properties"]["result"]
    assert "cancelled" in described["description"]
    assert "ignored otherwise" not in described["description"]
