"""One node's admin page: its liveness, tasks, history, failure rate and the two actions."""

import html
import re
import threading
import uuid
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from accounts.services import user_deactivate
from nodes.models import MaintenanceWindow
from nodes.services import node_cordon, node_drain, node_uncordon
from tasks import node_work
from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tests.concurrency import at_once
from tests.factories import AdminFactory, NodeFactory, TaskFactory, fleet
from tests.mariadb import row_lock_test

pytestmark = pytest.mark.django_db


def node_url(user) -> str:
    return reverse("admin:node", args=[user.pk])


def future_form(target) -> dict:
    deadline = timezone.now() + timedelta(days=2)
    return {
        "action": "reassign",
        "node": target.pk,
        "locked_at": deadline.strftime("%Y-%m-%dT%H:%M"),
    }


CONFIRMED = {"confirm": "yes"}


def test_an_unknown_id_or_an_admin_is_a_404(admin_site_client, admin_user):
    assert admin_site_client.get(reverse("admin:node", args=[uuid.uuid4()])).status_code == 404
    assert admin_site_client.get(node_url(admin_user)).status_code == 404


@pytest.mark.parametrize("who", ["anonymous", "node"])
def test_only_admins_reach_a_node_page(who):
    node = NodeFactory()
    client = Client()
    if who == "node":
        client.force_login(node)
    response = client.post(node_url(node), {"action": "deactivate"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    node.refresh_from_db()
    assert node.is_active


def test_the_page_shows_liveness_counts_linked_and_the_failure_rate(admin_site_client):
    data = fleet()
    response = admin_site_client.get(node_url(data["alive"]))
    page = response.content.decode()

    assert response.status_code == 200
    assert ">Alive<" in page
    assert re.search(r"UTC \(\d+ s ago\)", page)  # the duration filter's reading
    shown = {
        status: (html.unescape(url), int(n))
        for status, url, n in re.findall(
            r'<a class="tm-count" data-status="(\w+)" href="([^"]+)">(\d+)', page
        )
    }
    assert {status: n for status, (_, n) in shown.items()} == {
        "pending": 3,
        "in_progress": 2,
        "completed": 4,
        "failed": 1,
        "cancelled": 0,
    }
    for _, (url, n) in shown.items():
        assert admin_site_client.get(url).context["cl"].result_count == n
    # Four completed and one failed in the last 24 h.
    assert re.search(r'id="tm-failure-rate">20 %', page)


def test_cancelled_tasks_are_shown_apart_and_left_out_of_the_failure_rate(admin_site_client):
    node = NodeFactory()
    TaskFactory(assigned_node=node, status=TaskStatus.COMPLETED)
    TaskFactory.create_batch(2, assigned_node=node, status=TaskStatus.FAILED)
    TaskFactory.create_batch(2, assigned_node=node, status=TaskStatus.CANCELLED)

    page = admin_site_client.get(node_url(node)).content.decode()

    panel = page.split('id="tm-node-failure-rate"')[1].split("</div>")[0]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", panel)).split())
    # Two failed of three completed or failed: the cancelled ones did no work to fail.
    assert "Completed 1, failed 2, cancelled 2: failure rate 67 %" in text
    assert re.search(r'id="tm-failure-rate">67 %', page)
    cancelled = re.search(r'id="tm-node-cancelled" href="([^"]+)">(\d+)<', panel)
    assert cancelled.group(2) == "2"
    assert admin_site_client.get(html.unescape(cancelled.group(1))).context["cl"].result_count == 2


def test_its_history_lists_what_it_did_newest_first(admin_site_client, node_client, node):
    first, second = TaskFactory.create_batch(2, assigned_node=node)
    for task in (first, second):
        response = node_client.put(
            "/api/tasks/shift-status", {"taskId": str(task.pk), "taskStatus": "in_progress"}
        )
        assert response.status_code == 200
    page = admin_site_client.get(node_url(node)).content.decode()
    history = page.split('id="tm-node-history"')[1]
    assert history.index(second.name) < history.index(first.name)
    assert history.count("Status change") == 2
    assert history.count("In progress") == 2 and "in_progress" not in history  # labels


def test_reassign_moves_every_open_task_with_history_rows_in_one_go(admin_site_client, admin_user):
    data = fleet()
    source, target = data["alive"], data["never"]
    open_ids = set(
        Task.objects.filter(
            assigned_node=source, active=True, status__in=["pending", "in_progress"]
        ).values_list("pk", flat=True)
    )
    form = future_form(target)
    response = admin_site_client.post(node_url(source), form | CONFIRMED)

    assert response.status_code == 302
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert messages == [
        f"Reassigned {len(open_ids)} open task(s) from {source} to {target}, back to pending. "
        f"Set {len(open_ids)} deadline(s) to {form['locked_at'].replace('T', ' ')} UTC."
    ]
    moved = Task.objects.filter(pk__in=open_ids)
    assert {(t.assigned_node_id, t.status) for t in moved} == {(target.pk, TaskStatus.PENDING)}
    # Finished tasks stay with the node; each moved task has its history, by the admin.
    assert Task.objects.filter(assigned_node=source, status="completed").count() == 4
    rows = TaskHistory.objects.filter(task__in=open_ids, action=HistoryAction.ASSIGNEE_CHANGE)
    assert rows.count() == len(open_ids)
    assert {(r.from_value, r.to_value, r.performed_by_id) for r in rows} == {
        (str(source.pk), str(target.pk), admin_user.pk)
    }
    in_progress_back = TaskHistory.objects.filter(
        task__in=open_ids, action=HistoryAction.STATUS_CHANGE, to_value="pending"
    )
    assert in_progress_back.count() == 2


def test_a_past_deadline_is_refused_and_nothing_moves(admin_site_client):
    data = fleet()
    form = future_form(data["never"]) | {"locked_at": "2020-01-01T00:00"}
    response = admin_site_client.post(node_url(data["alive"]), form)

    assert response.status_code == 200
    assert "The deadline must be in the future." in response.content.decode()
    assert Task.objects.filter(assigned_node=data["never"]).count() == 0


def test_deactivate_from_the_page_stops_the_node(admin_site_client):
    node = NodeFactory()
    response = admin_site_client.post(node_url(node), {"action": "deactivate"} | CONFIRMED)

    assert response.status_code == 302
    node.refresh_from_db()
    assert not node.is_active
    assert "deactivated" in admin_site_client.get(node_url(node)).content.decode()


def test_deactivate_first_asks_on_a_page_saying_what_it_does(admin_site_client):
    node = NodeFactory()
    TaskFactory.create_batch(2, assigned_node=node)
    TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)

    response = admin_site_client.post(node_url(node), {"action": "deactivate"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "delete-confirmation" in page  # Django's destructive styling
    assert "Its 3 open task(s) (1 in progress) stay assigned to it" in page
    assert 'name="confirm" value="yes"' in page and 'value="Yes, deactivate"' in page
    node.refresh_from_db()
    assert node.is_active


def test_deactivate_with_failover_on_says_failover_moves_the_tasks_once_it_is_down(
    admin_site_client, settings
):
    # It said they stay "until reassigned: nothing works on them meanwhile", while with
    # FAILOVER=reassign the sweep moves them once the node, its beats refused, is down.
    settings.FAILOVER, settings.NODE_DOWN_AFTER = "reassign", 30
    node = NodeFactory()
    TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)

    page = admin_site_client.post(node_url(node), {"action": "deactivate"}).content.decode()

    assert "Its 1 open task(s) (1 in progress) stay assigned to it until reassigned, or" in page
    assert "failover moves them to alive nodes once it is down (30 s after" in page
    assert "nothing works on them meanwhile" not in page


def test_reassign_first_asks_saying_how_many_move_and_what_happens_to_deadlines(
    admin_site_client, settings
):
    settings.REASSIGN_DEADLINE_MINUTES = 60
    source, target = NodeFactory(), NodeFactory()
    later = timezone.now() + timedelta(days=3)
    keeps = TaskFactory.create_batch(3, assigned_node=source, locked_at=later)
    stale = TaskFactory(assigned_node=source, status=TaskStatus.IN_PROGRESS)
    Task.objects.filter(pk=stale.pk).update(locked_at=timezone.now() + timedelta(minutes=5))
    TaskFactory(assigned_node=source, status=TaskStatus.COMPLETED)

    response = admin_site_client.post(
        node_url(source), {"action": "reassign", "node": target.pk, "locked_at": ""}
    )

    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert f"4 open task(s) move from {source} to {target}" in page
    assert "1 of them are in progress" in page
    assert "1 have a deadline that has passed or is less than 60 min away" in page
    assert "The other 3 keep their own deadline." in page
    assert "delete-confirmation" not in page
    assert Task.objects.filter(assigned_node=target).count() == 0  # nothing moved yet

    confirmed = admin_site_client.post(
        node_url(source),
        {"action": "reassign", "node": target.pk, "locked_at": ""} | CONFIRMED,
    )

    messages = [str(m) for m in get_messages(confirmed.wsgi_request)]
    assert messages == [
        f"Reassigned 4 open task(s) from {source} to {target}, back to pending. "
        "Renewed 1 stale deadline(s) to now + 60 min; 3 kept their own."
    ]
    # Each task keeps its own deadline (the API's assign rule); only the stale one moved.
    for task in keeps:
        assert Task.objects.get(pk=task.pk).locked_at == later
    assert Task.objects.get(pk=stale.pk).locked_at > timezone.now() + timedelta(minutes=59)


def test_the_reassign_form_offers_no_deadline(admin_site_client):
    source, _ = NodeFactory.create_batch(2)  # the form shows with a node to move to
    page = admin_site_client.get(node_url(source)).content.decode()
    form = page.split('id="tm-reassign"')[1].split("</form>")[0]
    assert re.search(r'name="locked_at"(?![^>]*value=)', form)
    assert "REASSIGN_DEADLINE_MINUTES" not in page


def reassign_panel(client, node) -> str:
    return client.get(node_url(node)).content.decode().split('id="tm-node-actions"')[1]


def test_the_reassign_says_why_it_offers_no_node_when_no_other_is_schedulable(
    admin_site_client,
):
    """The list holds the other active nodes that are not cordoned, draining or in a
    maintenance window; with none, an empty select said nothing."""
    source, cordoned, draining, away, gone = NodeFactory.create_batch(5)
    TaskFactory(assigned_node=source)
    node_cordon(node_id=cordoned.pk, reason="fan", actor=None)
    node_drain(node_id=draining.pk, reason="disk", actor=None)
    now = timezone.now()
    MaintenanceWindow.objects.create(
        node=away,
        starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(hours=1),
        reason="kernel",
    )
    user_deactivate(user=gone)

    panel = reassign_panel(admin_site_client, source)

    assert 'name="node"' not in panel
    assert (
        "No other node is schedulable: every other active node is cordoned, draining or "
        "in a maintenance window." in panel
    )

    node_uncordon(node_id=cordoned.pk, reason="fixed", actor=None)
    panel = reassign_panel(admin_site_client, source)
    assert f'<option value="{cordoned.pk}">' in panel and "No other node" not in panel


def test_the_reassign_says_so_when_there_is_no_other_active_node(admin_site_client):
    source, gone = NodeFactory.create_batch(2)
    TaskFactory(assigned_node=source)
    user_deactivate(user=gone)

    panel = reassign_panel(admin_site_client, source)

    assert 'name="node"' not in panel
    assert "There is no other active node to move its tasks to." in panel


@pytest.mark.parametrize("other", ["cordoned", "deactivated"])
def test_a_node_with_no_open_tasks_is_not_told_where_they_could_go(admin_site_client, other):
    """No uncordon advice "to move these tasks" when there are none to move."""
    source, second = NodeFactory.create_batch(2)
    TaskFactory(assigned_node=source, status=TaskStatus.COMPLETED)
    if other == "cordoned":
        node_cordon(node_id=second.pk, reason="fan", actor=None)
    else:
        user_deactivate(user=second)

    panel = reassign_panel(admin_site_client, source)

    assert 'name="node"' not in panel
    assert "There is nothing to move: it has no open tasks." in panel
    assert "Uncordon one" not in panel and "no other active node" not in panel


def test_deactivate_writes_is_active_alone():
    node = NodeFactory()
    stale_copy = User.objects.get(pk=node.pk)
    beat = timezone.now()
    User.objects.filter(pk=node.pk).update(last_seen=beat, name="Renamed meanwhile")

    user_deactivate(user=stale_copy)

    node.refresh_from_db()
    assert not node.is_active
    # Nothing else the caller's copy of the row held was written back.
    assert (node.last_seen, node.name) == (beat, "Renamed meanwhile")


def test_a_deactivated_node_loses_its_tokens(node_client, node):
    user_deactivate(user=node)
    assert node_client.get("/api/tasks").status_code == 401


def test_the_user_admin_and_the_dashboard_link_to_node_pages(admin_site_client):
    node = NodeFactory()
    admin = AdminFactory()
    users = admin_site_client.get(reverse("admin:accounts_user_changelist")).content.decode()
    dashboard = admin_site_client.get(reverse("admin:index")).content.decode()

    assert node_url(node) in users
    assert node_url(admin) not in users
    assert node_url(node) in dashboard


@row_lock_test
def test_the_reassign_leaves_a_task_moved_off_the_node_meanwhile_where_it_went(monkeypatch):
    # The page read the node's open tasks, the task was given to another node and
    # started there, then the reassign locked the tasks by id alone: it took the
    # running task from a node that was not the one being emptied.
    source, elsewhere, target, admin = NodeFactory(), NodeFactory(), NodeFactory(), AdminFactory()
    staying, leaving = TaskFactory(assigned_node=source), TaskFactory(assigned_node=source)
    read, moved = threading.Event(), threading.Event()
    original = node_work.node_open_task_ids

    def read_then_wait(node):
        ids = list(original(node))
        read.set()
        moved.wait(timeout=5)
        return ids

    monkeypatch.setattr(node_work, "node_open_task_ids", read_then_wait)
    elsewhere_token = str(RefreshToken.for_user(elsewhere).access_token)

    def reassign(_):
        browser = Client()
        browser.force_login(admin)
        return browser.post(node_url(source), future_form(target) | CONFIRMED)

    def move_and_start(client):
        read.wait(timeout=5)
        try:
            body = {"taskId": str(leaving.pk), "nodeId": str(elsewhere.pk)}
            assert client.put("/api/tasks/assign", body).status_code == 200
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {elsewhere_token}")
            return client.post("/api/tasks/claim")
        finally:
            moved.set()

    page, claimed = at_once(admin, [reassign, move_and_start])

    assert page.status_code == 302
    assert claimed.status_code == 200, claimed.content
    leaving.refresh_from_db()
    assert (leaving.assigned_node_id, leaving.status) == (elsewhere.pk, TaskStatus.IN_PROGRESS)
    assert Task.objects.get(pk=staying.pk).assigned_node_id == target.pk
    messages = [str(m) for m in get_messages(page.wsgi_request)]
    assert messages[0].startswith(f"Reassigned 1 open task(s) from {source} to {target}")
