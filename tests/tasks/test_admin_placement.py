"""Placement in the admin site: tasks filtered by node label and by priority, the task
form's priority and selector, and "reassign by label" through placement."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from nodes.models import NodeLabels
from nodes.services import node_cordon
from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")


def labelled(labels, **fields):
    node = NodeFactory(**fields)
    NodeLabels.objects.create(node=node, labels=labels)
    return node


def listed(client, query) -> set:
    response = client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200
    return {task.pk for task in response.context["cl"].result_list}


def test_tasks_filter_by_their_nodes_label(admin_site_client):
    gpu, cpu = labelled({"gpu": "true"}), labelled({"gpu": "false", "region": "eu"})
    on_gpu, on_cpu = TaskFactory(assigned_node=gpu), TaskFactory(assigned_node=cpu)

    page = admin_site_client.get(CHANGELIST).content.decode()

    assert "gpu=true" in page and "region=eu" in page
    assert listed(admin_site_client, "node_label=gpu%3Dtrue") == {on_gpu.pk}
    assert listed(admin_site_client, "node_label=region%3Deu") == {on_cpu.pk}


def test_tasks_filter_by_priority_band(admin_site_client):
    high, default, low = (TaskFactory(priority=p) for p in (90, 50, 5))

    assert listed(admin_site_client, "priority_band=high") == {high.pk}
    assert listed(admin_site_client, "priority_band=default") == {default.pk}
    assert listed(admin_site_client, "priority_band=low") == {low.pk}


def test_reassign_by_label_spreads_tasks_over_the_matching_nodes(admin_site_client, admin_user):
    now = timezone.now()
    gpus = [labelled({"gpu": "true"}, last_seen=now) for _ in range(2)]
    labelled({"gpu": "false"}, last_seen=now)
    tasks = TaskFactory.create_batch(4, status=TaskStatus.FAILED)
    done = TaskFactory(status=TaskStatus.COMPLETED)

    response = admin_site_client.post(
        CHANGELIST,
        {
            "action": "reassign_by_label",
            "_selected_action": [t.pk for t in [*tasks, done]],
            "apply": "Reassign",
            "labels": "gpu=true",
            "locked_at": "2099-07-01T09:30",
        },
    )

    assert response.status_code == 302
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert messages == ["Reassigned 4 task(s). Skipped 1: 1 completed."]
    for task in tasks:
        task.refresh_from_db()
        assert task.status == TaskStatus.PENDING
        row = task.history.get(action=HistoryAction.ASSIGNEE_CHANGE)
        assert row.performed_by_id == admin_user.pk
    holders = sorted(str(t.assigned_node_id) for t in tasks)
    assert holders == sorted([str(n.pk) for n in gpus] * 2)


@pytest.mark.parametrize(
    ("labels", "message"), [("gpu=true", "no node matches"), ("GPU", "key=value")]
)
def test_reassign_by_label_with_no_match_or_bad_labels_moves_nothing(
    admin_site_client, labels, message
):
    task = TaskFactory(status=TaskStatus.FAILED)
    data = {
        "action": "reassign_by_label",
        "_selected_action": [task.pk],
        "apply": "Reassign",
        "labels": labels,
        "locked_at": "",
    }

    response = admin_site_client.post(CHANGELIST, data)

    assert message in response.content.decode() + " ".join(
        str(m) for m in get_messages(response.wsgi_request)
    )
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED


def test_reassign_by_label_says_when_every_node_with_the_labels_is_down(admin_site_client):
    labelled({"gpu": "true"}, last_seen=timezone.now() - timedelta(hours=1))
    task = TaskFactory(status=TaskStatus.FAILED)
    data = {
        "action": "reassign_by_label",
        "_selected_action": [task.pk],
        "apply": "Reassign",
        "labels": "gpu=true",
        "locked_at": "",
    }

    response = admin_site_client.post(CHANGELIST, data)

    said = response.content.decode() + " ".join(str(m) for m in get_messages(response.wsgi_request))
    assert "every schedulable node with these labels is down" in said
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED


BROADCAST = reverse("admin:tasks_task_broadcast")


# The confirmation page's button posts the form again with this.
CONFIRMED = {"confirm": "yes"}


def broadcast_form(labels="gpu=true", **overrides):
    return {
        "name": "upgrade",
        "details": "apt upgrade",
        "locked_at": "2099-07-01T09:30",
        "priority": "70",
        "labels": labels,
        **overrides,
    }


def test_a_deadline_passed_between_the_form_and_the_save_is_a_form_error(
    admin_site_client, monkeypatch
):
    """The form checks the deadline, then the service checks it again: a deadline that
    passes in between (the form's check stands in here for the earlier moment) is said
    on the form, nothing broadcast; it was a 500."""
    labelled({"gpu": "true"})
    monkeypatch.setattr("tasks.forms.validate_future", lambda value: None)

    response = admin_site_client.post(
        BROADCAST, broadcast_form(locked_at="2001-07-01T09:30") | CONFIRMED
    )

    assert response.status_code == 200
    assert "Nothing was broadcast: The deadline must be in the future." in response.content.decode()
    assert not Task.objects.exists()


def test_the_list_links_to_the_broadcast_page(admin_site_client):
    assert BROADCAST in admin_site_client.get(CHANGELIST).content.decode()


def test_an_admin_broadcasts_one_pinned_task_per_matching_node(admin_site_client, admin_user):
    gpus = [labelled({"gpu": "true"}) for _ in range(2)]
    labelled({"gpu": "false"})

    response = admin_site_client.post(BROADCAST, broadcast_form() | CONFIRMED)

    assert response.status_code == 302
    tasks = list(Task.objects.all())
    assert sorted(t.assigned_node_id for t in tasks) == sorted(n.pk for n in gpus)
    assert {(t.pinned, t.priority, str(t.node_selector)) for t in tasks} == {
        (True, 70, "{'gpu': 'true'}")
    }
    rows = TaskHistory.objects.filter(action=HistoryAction.INITIAL_ASSIGN)
    assert set(rows.values_list("performed_by", flat=True)) == {admin_user.pk}


def hidden_fields(page: str) -> dict:
    """What a confirmation page's button posts: its hidden inputs."""
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)
    return {name: html.unescape(value) for name, value in found}


def confirmation_changes(page: str) -> str:
    return html.unescape(page.split('class="tm-confirm-changes"')[1].split("</ul>")[0])


def test_a_broadcast_asks_first_naming_its_nodes_and_makes_nothing_until_confirmed(
    admin_site_client,
):
    for email in ("b@example.com", "a@example.com"):
        labelled({"gpu": "true"}, email=email, last_seen=timezone.now())
    labelled({"gpu": "true"}, email="down@example.com", last_seen=timezone.now() - timedelta(1))
    labelled({"gpu": "false"}, email="c@example.com")
    # Typed over lines, as in the form's box: posted again as it was.
    payload = '{\n  "packages": ["openssl"],\n  "note": "<b>&\'quoted\'"\n}'

    asked = admin_site_client.post(BROADCAST, broadcast_form(payload=payload))

    assert asked.status_code == 200
    page = asked.content.decode()
    changes = confirmation_changes(page)
    assert (
        "3 task(s) are created now, one per node: a@example.com, b@example.com, "
        "down@example.com." in changes
    )
    assert (
        "Each: “upgrade”, due 2099-07-01 09:30 UTC, priority 70, node labels gpu=true, "
        "the payload given." in changes
    )
    assert "1 of these node(s) are down: down@example.com;" in changes
    assert 'value="Broadcast 3 task(s)"' in page
    assert not Task.objects.exists()

    done = admin_site_client.post(BROADCAST, hidden_fields(page))

    assert done.status_code == 302
    assert Task.objects.count() == 3
    assert {str(task.payload) for task in Task.objects.all()} == {
        str({"packages": ["openssl"], "note": "<b>&'quoted'"})
    }


def test_the_broadcast_confirmations_way_back_shows_the_form_as_it_was_filled_in(
    admin_site_client,
):
    labelled({"gpu": "true"})
    page = admin_site_client.post(BROADCAST, broadcast_form()).content.decode()

    back = admin_site_client.post(BROADCAST, {**hidden_fields(page), "back": "No, take me back"})

    assert back.status_code == 200
    assert back.templates[0].name == "admin/tasks/task/broadcast.html"
    assert back.context["form"]["name"].value() == "upgrade"
    assert back.context["form"]["labels"].value() == "gpu=true"
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (broadcast_form(), "no node matches"),
        (broadcast_form(labels="gpu"), "key=value"),
        # It kept the last value, and broadcast to the gpu=false node.
        (broadcast_form(labels="gpu=true, gpu=false"), "is given twice"),
        (broadcast_form(locked_at="2001-01-01T00:00"), "must be in the future"),
        (broadcast_form(priority="0"), "greater than or equal to 1"),
    ],
)
def test_a_broadcast_that_cannot_be_done_creates_nothing(admin_site_client, form, message):
    labelled({"gpu": "false"})

    response = admin_site_client.post(BROADCAST, form)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Task.objects.exists()


def test_a_broadcast_says_how_many_tasks_it_made_and_names_their_nodes(admin_site_client):
    for email in ("b@example.com", "a@example.com"):
        labelled({"gpu": "true"}, email=email)
    labelled({"gpu": "false"}, email="c@example.com")

    response = admin_site_client.post(BROADCAST, broadcast_form() | CONFIRMED)

    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert messages == ["Broadcast 2 task(s), one per node: a@example.com, b@example.com."]


@pytest.mark.parametrize(
    ("failover", "then"),
    [
        (
            "reassign",
            "the sweep's failover fails their tasks for a human (a broadcast's task is pinned"
            " to its node, never moved).",
        ),
        ("off", "their tasks wait until they beat again (FAILOVER is off)."),
    ],
)
def test_a_broadcast_to_a_down_node_says_so(admin_site_client, settings, failover, then):
    """As a task added for, or reassigned to, a down node: said when it is made, not
    found out when the sweep fails it (a broadcast's task is never moved)."""
    settings.FAILOVER = failover
    labelled({"gpu": "true"}, email="alive@example.com", last_seen=timezone.now())
    labelled({"gpu": "true"}, email="new@example.com", last_seen=None)
    labelled(
        {"gpu": "true"},
        email="down@example.com",
        last_seen=timezone.now() - timedelta(hours=1),
    )

    response = admin_site_client.post(BROADCAST, broadcast_form() | CONFIRMED)

    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert messages == [
        "Broadcast 3 task(s), one per node: alive@example.com, down@example.com, new@example.com.",
        f"1 of these node(s) are down: down@example.com; {then}",
    ]


def test_a_broadcast_to_many_nodes_names_the_first_few_and_counts_the_rest(admin_site_client):
    for letter in "gfedcba":
        labelled({"gpu": "true"}, email=f"{letter}@example.com")

    response = admin_site_client.post(BROADCAST, broadcast_form() | CONFIRMED)

    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert messages == [
        "Broadcast 7 task(s), one per node: a@example.com, b@example.com, c@example.com, "
        "d@example.com, e@example.com and 2 more."
    ]


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        ("gpu=true", "Nothing was broadcast: no node matches these node labels"),
        ("", "Nothing was broadcast: no node matches (none is active and schedulable)"),
    ],
)
def test_a_broadcast_with_no_match_says_so_in_the_forms_own_words(admin_site_client, labels, said):
    """The form's field is "Node labels": the API's nodeSelector means nothing there."""
    node_cordon(node_id=labelled({"gpu": "false"}).pk, reason="disk swap", actor=None)

    page = admin_site_client.post(BROADCAST, broadcast_form(labels=labels)).content.decode()

    assert said in html.unescape(page)
    assert "nodeSelector" not in page
    assert not Task.objects.exists()


def test_the_dashboard_groups_its_status_by_node_table_by_a_label(admin_site_client):
    eu = [labelled({"region": "eu"}) for _ in range(2)]
    us = labelled({"region": "us"})
    bare = NodeFactory()
    for node in [*eu, us, bare]:
        TaskFactory(assigned_node=node)
    TaskFactory(assigned_node=eu[0], status=TaskStatus.IN_PROGRESS)

    response = admin_site_client.get(reverse("admin:index") + "?group=region")

    rows = {
        row["name"]: {status: (count, url) for status, count, url in row["cells"]}
        for row in response.context["group_rows"]
    }
    assert list(rows) == ["region=eu", "region=us", "no region label"]
    assert rows["region=eu"]["pending"][0] == 2
    assert rows["region=eu"]["in_progress"][0] == 1
    assert rows["no region label"]["pending"][0] == 1
    for name, expected in (("region=eu", 2), ("region=us", 1), ("no region label", 1)):
        assert len(listed(admin_site_client, rows[name]["pending"][1].split("?", 1)[1])) == expected
    assert '<a href="?group=region">' not in response.content.decode()  # chosen: not a link


def test_metrics_carry_no_label_values_however_many_labels_nodes_have(client, settings):
    from tests.test_metrics import TOKEN, scrape

    settings.METRICS_TOKEN, settings.DASHBOARD_CACHE_SECONDS = TOKEN, 0
    for i in range(5):
        TaskFactory(assigned_node=labelled({"rack": f"rack-{i}-unique", "gpu": "true"}))

    samples = scrape(client)

    label_values = {value for _, labels in samples for _, value in labels}
    assert not {value for value in label_values if "rack-" in value or value == "true"}
    label_names = {name for _, labels in samples for name, _ in labels}
    assert not label_names & {"rack", "gpu"}


def test_the_broadcast_deadline_is_typed_in_the_one_format_its_zone_named(admin_site_client):
    page = admin_site_client.get(BROADCAST).content.decode()

    assert 'type="datetime-local"' not in page
    assert 'placeholder="YYYY-MM-DD HH:MM"' in page and "Deadline (UTC)" in page


def test_the_down_nodes_of_a_broadcast_are_found_in_queries_that_do_not_grow(settings):
    """One read of the liveness cutoffs for all the nodes, not one per node."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tasks.admin import broadcast_down_warning

    settings.FAILOVER = "off"
    long_ago = timezone.now() - timedelta(days=1)
    few = [node.pk for node in NodeFactory.create_batch(2, last_seen=long_ago)]
    many = [node.pk for node in NodeFactory.create_batch(20, last_seen=long_ago)]

    with CaptureQueriesContext(connection) as for_few:
        assert broadcast_down_warning(few).startswith("2 of these node(s) are down")
    with CaptureQueriesContext(connection) as for_many:
        assert broadcast_down_warning(many).startswith("20 of these node(s) are down")

    assert len(for_many) == len(for_few)
