"""POST /api/tasks/broadcast (SPEC, Placement): one task for every schedulable node that
matches, pinned to it, in one transaction; Idempotency-Key makes a retry, or a
concurrent duplicate, one set."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from nodes.models import NodeLabels
from nodes.services import node_cordon
from tasks.models import HistoryAction, Task, TaskHistory
from tests.api import TASK_FIELDS, assert_json_error
from tests.factories import AdminFactory, NodeFactory
from tests.test_idempotency import WAIT, http_post, on_mariadb

pytestmark = pytest.mark.django_db

BROADCAST = "/api/tasks/broadcast"


def body(**fields):
    return {
        "taskName": "upgrade",
        "taskDetails": "apt upgrade",
        "lockedAt": (timezone.now() + timedelta(days=1)).isoformat(),
        **fields,
    }


def labelled(labels, **fields):
    node = NodeFactory(**fields)
    NodeLabels.objects.create(node=node, labels=labels)
    return node


def broadcast(client, data, **headers):
    return client.post(BROADCAST, data, format="json", headers=headers)


def test_one_pinned_task_for_every_matching_node_whatever_its_liveness(admin_client, admin_user):
    seen_long_ago = timezone.now() - timedelta(days=1)
    gpus = [labelled({"gpu": "true"}), labelled({"gpu": "true"}, last_seen=seen_long_ago)]
    labelled({"gpu": "false"})
    labelled({"gpu": "true"}, is_active=False)

    response = broadcast(admin_client, body(nodeSelector={"gpu": "true"}, priority=90))

    assert response.status_code == 201, response.content
    tasks = response.json()["tasks"]
    assert sorted(t["assignedNode"] for t in tasks) == sorted(str(n.pk) for n in gpus)
    assert all(set(t) == TASK_FIELDS for t in tasks)
    assert {(t["pinned"], t["priority"], str(t["nodeSelector"])) for t in tasks} == {
        (True, 90, "{'gpu': 'true'}")
    }
    rows = TaskHistory.objects.filter(action=HistoryAction.INITIAL_ASSIGN)
    assert sorted(rows.values_list("to_value", flat=True)) == sorted(str(n.pk) for n in gpus)
    assert set(rows.values_list("performed_by", flat=True)) == {admin_user.pk}


def test_an_empty_selector_is_every_active_node(admin_client, node, other_node):
    tasks = broadcast(admin_client, body()).json()["tasks"]
    assert sorted(t["assignedNode"] for t in tasks) == sorted([str(node.pk), str(other_node.pk)])
    assert {t["nodeSelector"] for t in tasks} == {None}


def test_a_null_selector_is_every_active_node_as_on_create(admin_client, node, other_node):
    response = broadcast(admin_client, body(nodeSelector=None))

    assert response.status_code == 201, response.content
    tasks = response.json()["tasks"]
    assert sorted(t["assignedNode"] for t in tasks) == sorted([str(node.pk), str(other_node.pk)])
    assert {t["nodeSelector"] for t in tasks} == {None}


def test_with_no_selector_and_no_schedulable_node_the_409_names_no_labels(
    admin_client, admin_user, node
):
    node_cordon(node_id=node.pk, reason="maintenance", actor=admin_user)

    body_ = assert_json_error(broadcast(admin_client, body()), 409)

    assert body_["message"] == "no node matches: no node is schedulable"
    assert not Task.objects.exists()


def test_no_matching_node_is_a_409_and_creates_nothing(admin_client, node):
    body_ = assert_json_error(broadcast(admin_client, body(nodeSelector={"gpu": "true"})), 409)
    # API clients read the field they sent, in the API's own words (the admin's differ).
    assert body_["message"] == (
        "no node matches: no schedulable node has the nodeSelector's labels"
    )
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"nodeSelector": {"Bad Key": "x"}}, "nodeSelector"),
        ({"nodeSelector": "gpu=true"}, "nodeSelector"),
        ({"priority": 1000}, "priority"),
        ({"lockedAt": "2001-01-01T00:00:00Z"}, "lockedAt"),
        ({"taskName": None}, "taskName"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(admin_client, node, fields, field):
    response = broadcast(admin_client, body(**fields))
    assert [e["field"] for e in assert_json_error(response, 400)["errors"]] == [field]
    assert not Task.objects.exists()


def test_a_retry_with_the_same_key_is_the_same_set(admin_client, node, other_node):
    data = body()
    first = broadcast(admin_client, data, **{"Idempotency-Key": "b-1"})
    again = broadcast(admin_client, data, **{"Idempotency-Key": "b-1"})

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert Task.objects.count() == 2


def test_only_admins_broadcast(node_client):
    assert_json_error(broadcast(node_client, body()), 403)


@pytest.mark.django_db(transaction=True)
@pytest.mark.mysql
@on_mariadb
def test_concurrent_broadcasts_with_one_key_create_one_set(live_server):
    admin = AdminFactory()
    NodeFactory.create_batch(3)
    token = str(RefreshToken.for_user(admin).access_token)
    data, start = body(), threading.Barrier(4)

    def client():
        start.wait(WAIT)
        for _ in range(100):
            status, _headers, content = http_post(f"{live_server.url}{BROADCAST}", data, token, "k")
            if status != 409:
                return status, content
        pytest.fail("the key stayed in flight")

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client(), range(4)))

    assert {status for status, _ in answers} == {201}
    assert len({content for _, content in answers}) == 1
    assert Task.objects.count() == 3
