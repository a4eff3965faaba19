"""Node labels (SPEC, Placement): set by an admin through PUT /api/nodes/{id} and the
admin site, shown in GET /api/nodes, the node page and the dashboard."""

import uuid

import pytest
from django.urls import reverse

from nodes.models import NodeEvent, NodeEventKind, NodeLabels, labels_errors, labels_match
from tests.api import assert_json_error
from tests.concurrency import at_once
from tests.factories import AdminFactory, NodeFactory
from tests.mariadb import row_lock_test

pytestmark = pytest.mark.django_db


def put_labels(client, node_id, labels):
    return client.put(f"/api/nodes/{node_id}", {"labels": labels}, format="json")


def test_an_admin_sets_a_nodes_labels_and_the_node_list_shows_them(admin_client, node):
    response = put_labels(admin_client, node.pk, {"gpu": "true", "region": "eu-west"})

    assert response.status_code == 200, response.content
    assert response.json()["node"]["labels"] == {"gpu": "true", "region": "eu-west"}
    assert response.json()["node"]["nodeId"] == str(node.pk)
    listed = {n["nodeId"]: n for n in admin_client.get("/api/nodes").json()["nodes"]}
    assert listed[str(node.pk)]["labels"] == {"gpu": "true", "region": "eu-west"}


def test_labels_replace_the_old_ones_and_a_node_without_any_shows_an_empty_object(
    admin_client, node, other_node
):
    put_labels(admin_client, node.pk, {"gpu": "true"})
    put_labels(admin_client, node.pk, {"region": "eu"})

    listed = {n["nodeId"]: n for n in admin_client.get("/api/nodes").json()["nodes"]}
    assert listed[str(node.pk)]["labels"] == {"region": "eu"}
    assert listed[str(other_node.pk)]["labels"] == {}


def test_a_labels_change_is_a_node_event(admin_client, node, admin_user):
    put_labels(admin_client, node.pk, {"gpu": "true"})
    put_labels(admin_client, node.pk, {"gpu": "true"})  # no change: no event

    events = NodeEvent.objects.filter(node=node, kind=NodeEventKind.LABELS_CHANGE)
    assert len(events) == 1
    assert events[0].actor == admin_user
    assert events[0].detail == "gpu=true"
    answer = admin_client.get(f"/api/nodes/{node.pk}/events")
    assert [event["kind"] for event in answer.json()["events"]] == ["labels_change"]


@pytest.mark.parametrize(
    "labels",
    [
        [],
        "gpu=true",
        None,
        {"GPU": "true"},
        {"-gpu": "true"},
        {"gpu-": "true"},
        {"": "x"},
        {"a" * 64: "x"},
        {"gpu": True},
        {"gpu": 1},
        {"gpu": None},
        {"gpu": {"a": "b"}},
        {"gpu": "x" * 64},
        {"gpu": "a\x00b"},
        {f"k{i}": "v" for i in range(33)},
    ],
)
def test_bad_labels_are_a_400_naming_the_field_and_change_nothing(admin_client, node, labels):
    put_labels(admin_client, node.pk, {"ok": "yes"})

    body = assert_json_error(put_labels(admin_client, node.pk, labels), 400)

    assert [error["field"] for error in body["errors"]] == ["labels"]
    assert NodeLabels.objects.get(node=node).labels == {"ok": "yes"}


def test_the_label_rules_accept_what_kubernetes_style_keys_look_like():
    good = {"gpu": "true", "kubernetes.io/arch": "amd64", "a": "", "x" * 63: "y" * 63}
    assert labels_errors(good) == []
    assert labels_errors({f"k{i}": "v" for i in range(32)}) == []


def test_a_selector_matches_a_node_with_every_key_at_that_value():
    labels = {"gpu": "true", "region": "eu"}
    assert labels_match(labels, {})
    assert labels_match(labels, None)
    assert labels_match(labels, {"gpu": "true"})
    assert labels_match(labels, {"gpu": "true", "region": "eu"})
    assert not labels_match(labels, {"gpu": "false"})
    assert not labels_match(labels, {"arch": "arm64"})


def test_only_admins_set_labels_and_only_on_an_active_node(admin_client, node_client, node):
    assert_json_error(put_labels(node_client, node.pk, {"gpu": "true"}), 403)
    assert_json_error(put_labels(admin_client, uuid.uuid4(), {"gpu": "true"}), 404)
    assert_json_error(put_labels(admin_client, "not-an-id", {"gpu": "true"}), 404)
    assert_json_error(put_labels(admin_client, AdminFactory().pk, {"gpu": "true"}), 404)
    gone = NodeFactory(is_active=False)
    assert_json_error(put_labels(admin_client, gone.pk, {"gpu": "true"}), 404)
    assert not NodeLabels.objects.exists()


def test_the_node_page_and_the_dashboard_show_the_labels(admin_site_client, admin_client, node):
    put_labels(admin_client, node.pk, {"gpu": "true", "region": "eu"})

    page = admin_site_client.get(reverse("admin:node", args=[node.pk])).content.decode()
    dashboard = admin_site_client.get(reverse("admin:index")).content.decode()

    assert "<code>gpu=true</code>, <code>region=eu</code>" in page
    assert "gpu=true, region=eu" in dashboard


def test_the_node_page_links_to_where_its_labels_are_edited(admin_site_client, node):
    page = admin_site_client.get(reverse("admin:node", args=[node.pk])).content.decode()

    labels_row = page.split('id="tm-node-labels"')[1].split("</tr>")[0]
    assert f'href="{reverse("admin:accounts_user_change", args=[node.pk])}#' in labels_row


def node_form(node, labels: str) -> dict:
    """The admin's change form of `node`, with `labels` typed in its labels box."""
    return {
        "email": node.email,
        "name": node.name,
        "role": node.role,
        "is_active": "on",
        "node_labels-TOTAL_FORMS": "1",
        "node_labels-INITIAL_FORMS": "0",
        "node_labels-MIN_NUM_FORMS": "0",
        "node_labels-MAX_NUM_FORMS": "1",
        "node_labels-0-labels": labels,
        "node_labels-0-node": str(node.pk),
    }


def test_the_admin_site_sets_labels_through_the_same_service(admin_site_client, node, admin_user):
    url = reverse("admin:accounts_user_change", args=[node.pk])
    form = admin_site_client.get(url).context["adminform"].form
    data = node_form(node, '{"gpu": "true"}')
    assert form is not None
    response = admin_site_client.post(url, data)

    assert response.status_code == 302, response.context and response.context["errors"]
    assert NodeLabels.objects.get(node=node).labels == {"gpu": "true"}
    (event,) = NodeEvent.objects.filter(node=node, kind=NodeEventKind.LABELS_CHANGE)
    assert event.detail == "gpu=true"

    data["node_labels-INITIAL_FORMS"] = "1"
    data["node_labels-0-labels"] = '{"GPU": 1}'
    response = admin_site_client.post(url, data)
    assert response.status_code == 200
    assert "must be 1-63 of a-z" in response.content.decode()
    assert NodeLabels.objects.get(node=node).labels == {"gpu": "true"}


@pytest.mark.parametrize(
    "raw",
    [
        r'{"labels": {"region": "a\ud800"}}',  # a lone surrogate in a value
        r'{"labels": {"region": "\udfff"}}',
        r'{"labels": {"a\ud800": "x"}}',  # and in a key
        r'{"labels": {"region": "a\u0000b"}}',
        r'{"labels": {"a\u0000": "x"}}',
    ],
)
def test_a_lone_surrogate_or_nul_in_a_label_is_a_400_not_a_500(admin_client, node, raw):
    response = admin_client.generic(
        "PUT", f"/api/nodes/{node.pk}", raw, content_type="application/json"
    )

    body = assert_json_error(response, 400)
    assert [error["field"] for error in body["errors"]] == ["labels"]
    assert not NodeLabels.objects.exists()
    assert not NodeEvent.objects.exists()


def test_the_admin_site_refuses_a_lone_surrogate_in_a_label_with_a_form_error(
    admin_site_client, node
):
    url = reverse("admin:accounts_user_change", args=[node.pk])
    data = node_form(node, r'{"region": "a\ud800"}')

    response = admin_site_client.post(url, data)

    assert response.status_code == 200
    assert "lone surrogate" in response.content.decode()
    assert not NodeLabels.objects.exists()


@row_lock_test
def test_concurrent_label_changes_of_a_node_without_labels_all_answer_200():
    # Each looked for the node's labels row FOR UPDATE, found none (a gap lock on
    # MariaDB), then inserted it: two at once deadlocked, a 503 "database unavailable".
    node, admin = NodeFactory(), AdminFactory()
    workers = 8

    def send(value):
        return lambda client: put_labels(client, node.pk, {"rack": value}).status_code

    answers = at_once(admin, [send(str(i)) for i in range(workers)])

    assert answers == [200] * workers
    assert NodeLabels.objects.filter(node=node).count() == 1
    changes = NodeEvent.objects.filter(node=node, kind=NodeEventKind.LABELS_CHANGE).count()
    assert 1 <= changes <= workers


def test_the_admin_site_refuses_a_lone_surrogate_in_a_label_of_a_node_with_labels(
    admin_site_client, node
):
    """A node that has labels already: its box is the row's form, not an extra one."""
    NodeLabels.objects.create(node=node, labels={"gpu": "true"})
    url = reverse("admin:accounts_user_change", args=[node.pk])
    data = {**node_form(node, r'{"a": "\ud800"}'), "node_labels-INITIAL_FORMS": "1"}

    response = admin_site_client.post(url, data)

    assert response.status_code == 200
    assert "lone surrogate" in response.content.decode()
    assert NodeLabels.objects.get(node=node).labels == {"gpu": "true"}


def test_the_labels_box_says_what_labels_are(admin_site_client, node):
    page = admin_site_client.get(reverse("admin:accounts_user_change", args=[node.pk]))

    assert 'a JSON object of strings, e.g. {"gpu": "true"}' in page.content.decode()


@pytest.mark.parametrize(
    "typed",
    ["[" * 50_000 + "]" * 50_000, '{"a": 1' + "0" * 5_000 + "}"],
    ids=["nested too deeply for Python", "a number too long to read"],
)
def test_labels_python_cannot_read_are_a_form_error_not_a_500(admin_site_client, node, typed):
    url = reverse("admin:accounts_user_change", args=[node.pk])

    response = admin_site_client.post(url, node_form(node, typed))

    assert response.status_code == 200
    assert "nested too deeply or holds a number too long" in response.content.decode()
    assert not NodeLabels.objects.exists()
