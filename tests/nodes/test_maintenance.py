"""Maintenance windows (SPEC, Nodes: cordon, drain, maintenance windows): a node is
cordoned (or drained, deadline = startsAt) during its window and schedulable after,
derived when read, with no cron entry of its own: the sweep moves the work."""

import re
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from nodes import services
from nodes.models import MaintenanceWindow, Node, NodeEvent, NodeEventKind
from nodes.services import node_cordon
from tasks.models import FailureCause, Task, TaskHistory, TaskStatus
from tasks.services import tasks_fail_drained
from tests.api import assert_json_error
from tests.concurrency import at_once, pause_at
from tests.factories import AdminFactory, NodeFactory, TaskFactory
from tests.mariadb import row_lock_test

# A moment in the dashboard's Scheduling cell: whole on one line, however narrow the cell.
MOMENT = r'<span class="nowrap">\d{4}-\d\d-\d\d \d\d:\d\d UTC</span>'

pytestmark = pytest.mark.django_db


def at(minutes):
    return (timezone.now() + timedelta(minutes=minutes)).isoformat()


def plan(client, node, **body):
    return client.post(f"/api/nodes/{node.pk}/maintenance", body)


def window_now(node, *, drain=False):
    """A window under way (as if planned earlier: a new one may not start in the past)."""
    now = timezone.now()
    return MaintenanceWindow.objects.create(
        node=node,
        starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(hours=1),
        reason="rack move",
        drain=drain,
    )


def test_a_window_is_planned_listed_and_an_event(admin_client, admin_user, node):
    response = plan(admin_client, node, startsAt=at(60), endsAt=at(120), reason="rack move")

    assert response.status_code == 201, response.content
    window = response.json()
    assert (window["reason"], window["drain"], window["by"]) == (
        "rack move",
        False,
        str(admin_user.pk),
    )
    listed = admin_client.get(f"/api/nodes/{node.pk}/maintenance").json()["windows"]
    assert [w["id"] for w in listed] == [window["id"]]
    event = NodeEvent.objects.get()
    assert (event.kind, event.actor) == (NodeEventKind.MAINTENANCE_SCHEDULED, admin_user)
    # A coming window changes nothing yet.
    assert node in Node.objects.schedulable()


def test_during_a_window_the_node_is_cordoned_and_after_it_schedulable(
    admin_client, node, node_client
):
    window = window_now(node)

    beat = node_client.post("/api/nodes/heartbeat").json()
    assert (beat["schedulable"], beat["drainDeadline"]) == (False, None)
    (shown,) = [n for n in admin_client.get("/api/nodes").json()["nodes"]]
    assert (shown["state"], shown["cordonReason"]) == ("cordoned", "rack move")
    create = admin_client.post(
        "/api/tasks",
        {"taskName": "n", "taskDetails": "d", "assignedNode": str(node.pk), "lockedAt": at(90)},
    )
    assert_json_error(create, 409)

    MaintenanceWindow.objects.filter(pk=window.pk).update(
        ends_at=timezone.now() - timedelta(seconds=1)
    )
    assert node_client.post("/api/nodes/heartbeat").json()["schedulable"] is True
    assert node in Node.objects.schedulable()


def test_a_draining_window_moves_the_work_at_its_start_through_the_sweep(node, node_client):
    other = NodeFactory()
    User.objects.filter(pk__in=[node.pk, other.pk]).update(last_seen=timezone.now())
    pending = TaskFactory(assigned_node=node)
    running = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS, attempts=1)
    window = window_now(node, drain=True)

    beat = node_client.post("/api/nodes/heartbeat").json()
    assert beat["schedulable"] is False
    assert beat["drainDeadline"].startswith(window.starts_at.strftime("%Y-%m-%dT%H:%M"))
    assert node_client.post("/api/tasks/claim").status_code == 204

    call_command("collect_failed", verbosity=0)

    for task in (pending, running):
        task.refresh_from_db()
        assert (task.assigned_node_id, task.status) == (other.pk, TaskStatus.PENDING)
    failed = TaskHistory.objects.get(task=running, to_value=TaskStatus.FAILED)
    assert failed.cause == FailureCause.DRAINED


def test_a_coming_window_can_be_cancelled_a_started_one_cannot(admin_client, node):
    coming = plan(admin_client, node, startsAt=at(60), endsAt=at(120), reason="r").json()
    started = window_now(node)

    gone = admin_client.delete(f"/api/nodes/{node.pk}/maintenance/{coming['id']}")
    assert gone.status_code == 200
    assert not MaintenanceWindow.objects.filter(pk=coming["id"]).exists()
    assert NodeEvent.objects.filter(kind=NodeEventKind.MAINTENANCE_CANCELLED).count() == 1
    refused = admin_client.delete(f"/api/nodes/{node.pk}/maintenance/{started.pk}")
    assert_json_error(refused, 409)
    assert refused.json()["message"].endswith("this one is under way (uncordon ends it)")
    MaintenanceWindow.objects.filter(pk=started.pk).update(ends_at=timezone.now())
    refused = admin_client.delete(f"/api/nodes/{node.pk}/maintenance/{started.pk}")
    # It said "this one has started" of a window long over.
    assert refused.json()["message"].endswith("this one has ended")
    assert_json_error(admin_client.delete(f"/api/nodes/{node.pk}/maintenance/999999"), 404)
    assert_json_error(admin_client.delete(f"/api/nodes/{node.pk}/maintenance/abc"), 404)


@pytest.mark.parametrize("text", ["\u00b2", "\u2460", "\u2082", "\u1369"])
def test_a_window_id_of_digits_int_cannot_read_is_a_404(admin_client, node, text):
    # str.isdigit() let them through to int(): a 500.
    response = admin_client.delete(f"/api/nodes/{node.pk}/maintenance/{text}")

    assert_json_error(response, 404)


def test_a_window_id_in_other_scripts_digits_names_no_window(admin_client, node):
    # "\u0663" (Arabic-Indic three) was read as 3: that window was cancelled.
    window = plan(admin_client, node, startsAt=at(60), endsAt=at(120), reason="r").json()
    arabic = "".join(chr(0x0660 + int(digit)) for digit in str(window["id"]))

    response = admin_client.delete(f"/api/nodes/{node.pk}/maintenance/{arabic}")

    assert_json_error(response, 404)
    assert MaintenanceWindow.objects.filter(pk=window["id"]).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"startsAt": at(120), "endsAt": at(60), "reason": "r"}, "endsAt"),
        ({"startsAt": at(-120), "endsAt": at(-60), "reason": "r"}, "endsAt"),
        ({"startsAt": at(-120), "endsAt": at(60), "reason": "r"}, "startsAt"),
        ({"startsAt": at(60), "endsAt": at(120)}, "reason"),
        ({"startsAt": "tonight", "endsAt": at(120), "reason": "r"}, "startsAt"),
        ({"startsAt": at(60), "endsAt": at(120), "reason": "r", "drain": "maybe"}, "drain"),
        ({"startsAt": at(60), "endsAt": at(120), "reason": "r", "drain": "yes"}, "drain"),
        ({"startsAt": at(60), "endsAt": at(120), "reason": "r", "drain": "true"}, "drain"),
        ({"startsAt": at(60), "endsAt": at(120), "reason": "r", "drain": 1}, "drain"),
        ({"startsAt": at(60), "endsAt": at(120), "reason": "r", "drain": 0}, "drain"),
        ({"startsAt": at(60), "endsAt": at(120), "reason": "r", "drain": "false"}, "drain"),
        ({"startsAt": at(60), "endsAt": at(120), "reason": "r", "drain": None}, "drain"),
        ({"startsAt": at(60), "endsAt": at(120), "reason": "r", "drain": []}, "drain"),
    ],
)
def test_a_bad_window_is_a_400_naming_the_field_and_changes_nothing(
    admin_client, node, body, field
):
    error = assert_json_error(plan(admin_client, node, **body), 400)

    assert [e["field"] for e in error["errors"]] == [field]
    assert not MaintenanceWindow.objects.exists() and not NodeEvent.objects.exists()


def test_windows_are_an_admins_and_an_unknown_node_is_a_404(admin_client, node_client, node):
    assert_json_error(node_client.get(f"/api/nodes/{node.pk}/maintenance"), 403)
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_json_error(admin_client.get(f"/api/nodes/{unknown}/maintenance"), 404)
    assert Task.objects.count() == 0


def test_the_node_list_shows_each_nodes_window_under_way_else_its_next(admin_client, node):
    coming_only = NodeFactory(name="coming")
    NodeFactory(name="without")
    now = timezone.now()
    MaintenanceWindow.objects.create(  # ended: shown nowhere
        node=node, starts_at=now - timedelta(hours=3), ends_at=now - timedelta(hours=2), reason="o"
    )
    under_way = window_now(node, drain=True)
    MaintenanceWindow.objects.create(
        node=node, starts_at=now + timedelta(hours=2), ends_at=now + timedelta(hours=3), reason="x"
    )
    later = plan(admin_client, coming_only, startsAt=at(180), endsAt=at(240), reason="later")
    sooner = plan(admin_client, coming_only, startsAt=at(60), endsAt=at(120), reason="sooner")

    listed = {n["name"]: n for n in admin_client.get("/api/nodes").json()["nodes"]}

    assert listed[node.name]["maintenanceWindow"] == {
        "id": under_way.pk,
        "startsAt": under_way.starts_at.isoformat().replace("+00:00", "Z"),
        "endsAt": under_way.ends_at.isoformat().replace("+00:00", "Z"),
        "reason": "rack move",
        "drain": True,
        "underWay": True,
    }
    shown = listed["coming"]["maintenanceWindow"]
    assert later.status_code == 201
    assert (shown["id"], shown["reason"], shown["underWay"], shown["drain"]) == (
        sooner.json()["id"],
        "sooner",
        False,
        False,
    )
    assert (shown["startsAt"], shown["endsAt"]) == (
        sooner.json()["startsAt"],
        sooner.json()["endsAt"],
    )
    assert listed["without"]["maintenanceWindow"] is None
    # PUT /api/nodes/{id} answers the same shape.
    put = admin_client.put(f"/api/nodes/{coming_only.pk}", {"labels": {}}, format="json")
    assert put.json()["node"]["maintenanceWindow"]["id"] == sooner.json()["id"]


def test_the_node_page_and_the_dashboard_show_the_window_under_way_or_the_next(
    admin_site_client, node
):
    coming = NodeFactory(name="coming")
    window_now(node, drain=True)
    now = timezone.now()
    MaintenanceWindow.objects.create(
        node=coming,
        starts_at=now + timedelta(hours=1),
        ends_at=now + timedelta(hours=2),
        reason="psu",
    )

    dashboard = admin_site_client.get(reverse("admin:index")).content.decode()
    under_way = admin_site_client.get(reverse("admin:node", args=[node.pk])).content.decode()
    next_one = admin_site_client.get(reverse("admin:node", args=[coming.pk])).content.decode()

    cell = r'class="tm-schedule" data-node="{}"[^>]*>{}<br><span class="tm-window[^>]*>{}</span>'
    assert re.search(
        cell.format(node.pk, "draining", rf"maintenance until {MOMENT} \(drain\)"), dashboard
    )
    assert re.search(
        cell.format(coming.pk, "schedulable", rf"maintenance {MOMENT} \u2013 {MOMENT}"), dashboard
    )
    under_way_cell = r'id="tm-node-windows">\s*now, until [^<]+: <bdi>rack move</bdi> \(drain\)'
    assert re.search(under_way_cell, under_way)
    assert re.search(r'id="tm-node-windows">\s*[^<]+ \u2013 [^<]+: <bdi>psu</bdi>', next_one)


@pytest.mark.parametrize("hand_cordon", [False, True])
def test_uncordon_ends_a_window_under_way_early(
    admin_client, admin_user, node, node_client, hand_cordon
):
    window = window_now(node, drain=True)
    coming = plan(admin_client, node, startsAt=at(120), endsAt=at(180), reason="later").json()
    if hand_cordon:
        admin_client.post(f"/api/nodes/{node.pk}/cordon", {"reason": "fan"})
    before = timezone.now()

    response = admin_client.post(f"/api/nodes/{node.pk}/uncordon", {"reason": "done early"})

    assert response.status_code == 200, response.content
    assert (response.json()["state"], response.json()["schedulable"]) == ("schedulable", True)
    assert node_client.post("/api/nodes/heartbeat").json()["schedulable"] is True
    window.refresh_from_db()
    assert before <= window.ends_at <= timezone.now()
    listed = admin_client.get(f"/api/nodes/{node.pk}/maintenance").json()["windows"]
    assert [w["id"] for w in listed] == [window.pk, coming["id"]]  # kept, as ended early
    (shown,) = admin_client.get("/api/nodes").json()["nodes"]
    assert (shown["state"], shown["maintenanceWindow"]["id"]) == ("schedulable", coming["id"])
    event = NodeEvent.objects.filter(node=node).first()
    assert (event.kind, event.actor, event.reason) == (
        NodeEventKind.UNCORDON,
        admin_user,
        "done early",
    )
    assert event.detail == f"ended maintenance window {window.pk} early"
    # Nothing is left to end; a started window is still not cancelled by DELETE.
    assert_json_error(admin_client.post(f"/api/nodes/{node.pk}/uncordon"), 409)
    assert_json_error(admin_client.delete(f"/api/nodes/{node.pk}/maintenance/{window.pk}"), 409)


def test_the_node_page_uncordons_a_node_in_its_window(admin_site_client, node):
    window = window_now(node)

    response = admin_site_client.post(
        reverse("admin:node", args=[node.pk]), {"action": "uncordon", "uncordon-reason": ""}
    )

    assert response.status_code == 302
    window.refresh_from_db()
    assert window.ends_at <= timezone.now()
    assert node in Node.objects.schedulable()


@pytest.mark.parametrize("drain", [True, False, None])
def test_a_windows_drain_is_json_true_false_or_absent(admin_client, node, drain):
    body = {"startsAt": at(60), "endsAt": at(120), "reason": "r"}
    if drain is not None:
        body["drain"] = drain

    response = plan(admin_client, node, **body)

    assert response.status_code == 201, response.content
    assert response.json()["drain"] is bool(drain)


def test_a_hand_cordon_during_a_draining_window_still_tells_the_node_it_drains(
    admin_client, node, node_client
):
    window = window_now(node, drain=True)
    admin_client.post(f"/api/nodes/{node.pk}/cordon", {"reason": "and keep it out"})
    TaskFactory(assigned_node=node)

    beat = node_client.post("/api/nodes/heartbeat").json()

    # Its claims answer 204 (the window drains): the answer must say it drains, and when.
    assert node_client.post("/api/tasks/claim").status_code == 204
    assert beat["schedulable"] is False
    assert beat["drainDeadline"] is not None
    assert beat["drainDeadline"].startswith(window.starts_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert beat["pendingCount"] == 0
    # The node list says the same: draining, with the hand cordon's reason.
    (shown,) = [
        n for n in admin_client.get("/api/nodes").json()["nodes"] if n["nodeId"] == str(node.pk)
    ]
    assert (shown["state"], shown["cordonReason"]) == ("draining", "and keep it out")
    assert shown["drainDeadline"] == beat["drainDeadline"]


@pytest.mark.parametrize("field", ["startsAt", "endsAt"])
def test_a_window_moment_with_a_nul_is_a_400_naming_it(admin_client, node, field):
    body = {"startsAt": at(60), "endsAt": at(120), "reason": "rack move"}
    body[field] = body[field].replace("+00:00", "\x00+00:00")

    response = admin_client.post(f"/api/nodes/{node.pk}/maintenance", body)

    assert_json_error(response, 400)
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert not MaintenanceWindow.objects.exists()


def test_the_dashboard_shows_a_hand_cordon_during_a_draining_window_as_draining(
    admin_client, admin_site_client, node
):
    window_now(node, drain=True)
    admin_client.post(f"/api/nodes/{node.pk}/cordon", {"reason": "and keep it out"})

    dashboard = admin_site_client.get(reverse("admin:index")).content.decode()

    # As the node list, the heartbeat and the sweep have it (one rule: state_name).
    assert re.search(rf'class="tm-schedule" data-node="{node.pk}"[^>]*>draining<', dashboard)


@pytest.mark.parametrize("draining_first", [True, False])
def test_of_two_overlapping_windows_under_way_a_draining_one_decides(
    admin_client, node, node_client, draining_first
):
    """Overlapping windows are accepted; the sweep drains a node in any draining window
    under way, so the node list, its page and the heartbeat must say draining too."""
    now = timezone.now()
    for drain in (True, False) if draining_first else (False, True):
        MaintenanceWindow.objects.create(
            node=node,
            starts_at=now - timedelta(minutes=10 if drain == draining_first else 5),
            ends_at=now + timedelta(hours=1),
            reason="drain" if drain else "keep",
            drain=drain,
        )

    (shown,) = [
        n for n in admin_client.get("/api/nodes").json()["nodes"] if n["nodeId"] == str(node.pk)
    ]
    beat = node_client.post("/api/nodes/heartbeat").json()

    assert (shown["state"], shown["cordonReason"]) == ("draining", "drain")
    assert Node.objects.with_schedule().get(pk=node.pk).schedule_state()["state"] == "draining"
    assert beat["drainDeadline"] is not None and beat["schedulable"] is False


@row_lock_test
def test_a_window_cancelled_while_its_node_is_uncordoned_is_no_deadlock(monkeypatch):
    # The cancel locked the window, the uncordon locked the node and waited for the
    # window (it reads the node's windows FOR UPDATE), then the cancel's event needed
    # the node's row: a deadlock, a 503 "database unavailable" to one of them.
    node, admin = NodeFactory(), AdminFactory()
    node_cordon(node_id=node.pk, reason="r", actor=None)
    window = MaintenanceWindow.objects.create(
        node=node,
        starts_at=timezone.now() + timedelta(hours=1),
        ends_at=timezone.now() + timedelta(hours=2),
        reason="m",
    )
    # The cancel's event, before it is recorded; the uncordon waits for the cancel once fixed.
    pause = pause_at(
        monkeypatch,
        services,
        "node_event_record",
        before=True,
        when=lambda **event: event["kind"] == NodeEventKind.MAINTENANCE_CANCELLED,
    )
    uncordon = pause.then(lambda client: client.post(f"/api/nodes/{node.pk}/uncordon"))
    cancel = lambda client: client.delete(f"/api/nodes/{node.pk}/maintenance/{window.pk}")  # noqa: E731

    cancelled, uncordoned = at_once(admin, [cancel, uncordon])

    assert pause.paused.is_set()
    assert (cancelled.status_code, uncordoned.status_code) == (200, 200)
    assert not MaintenanceWindow.objects.filter(pk=window.pk).exists()
    assert Node.objects.schedulable().filter(pk=node.pk).exists()


@row_lock_test
def test_a_window_planned_while_its_node_is_uncordoned_is_no_deadlock(monkeypatch):
    # The uncordon locked the node; the plan inserted its window, then waited for the
    # node's row (the window's foreign key); the uncordon read the node's windows FOR
    # UPDATE and waited for the new one: a deadlock, a 503 to one of them.
    node, admin = NodeFactory(), AdminFactory()
    node_cordon(node_id=node.pk, reason="r", actor=None)
    pause = pause_at(monkeypatch, services, "_lock_node")  # the uncordon's, the first
    uncordon = lambda client: client.post(f"/api/nodes/{node.pk}/uncordon")  # noqa: E731

    def plan_window(client):
        pause.paused.wait(timeout=5)
        threading.Timer(0.5, pause.go_on.set).start()  # the plan blocks on the node meanwhile
        return plan(client, node, startsAt=at(60), endsAt=at(120), reason="m")

    uncordoned, planned = at_once(admin, [uncordon, plan_window])

    assert pause.paused.is_set()
    assert (uncordoned.status_code, planned.status_code) == (200, 201)
    assert MaintenanceWindow.objects.filter(node=node).count() == 1


@row_lock_test
def test_a_window_cancelled_at_its_start_has_its_nodes_work_left_alone(monkeypatch):
    # The cancel came just before the window's start (200), the sweep just after it:
    # the sweep had read the node as drained before the cancel committed, and failed
    # its running task (cause drained), an answer neither order gives.
    node, other, admin = NodeFactory(), NodeFactory(), AdminFactory()
    User.objects.filter(pk__in=[node.pk, other.pk]).update(last_seen=timezone.now())
    running = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS, attempts=1)
    starts = timezone.now() + timedelta(seconds=30)
    window = MaintenanceWindow.objects.create(
        node=node, starts_at=starts, ends_at=starts + timedelta(hours=1), reason="m", drain=True
    )
    # The drained nodes read, before the cancel commits.
    pause = pause_at(monkeypatch, type(Task.objects), "open_of", before=True, wait=5)

    def sweep(client):  # a run whose clock read the window's start
        return tasks_fail_drained(batch_size=100, now=starts + timedelta(seconds=1))

    cancel = pause.then(
        lambda client: client.delete(f"/api/nodes/{node.pk}/maintenance/{window.pk}")
    )

    counts, answer = at_once(admin, [sweep, cancel])

    assert pause.seen[1] == [node.pk]  # (the manager, the drained nodes): the race ran
    assert answer.status_code == 200, answer.content
    running.refresh_from_db()
    assert (running.assigned_node_id, running.status) == (node.pk, TaskStatus.IN_PROGRESS)
    assert (counts.failed, counts.reassigned) == (0, 0)
