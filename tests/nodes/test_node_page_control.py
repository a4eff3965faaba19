"""The node page's cordon, drain (behind a confirmation page), uncordon and maintenance
forms: POST with CSRF, the state, windows and events shown."""

import html
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from nodes.models import Cordon, MaintenanceWindow, NodeEvent, NodeEventKind
from nodes.services import node_drain, node_set_labels
from tasks.models import Task, TaskHistory, TaskStatus
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db


def page(node) -> str:
    return reverse("admin:node", args=[node.pk])


def moment_shown(when) -> str:
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M %Z")


def moment(minutes) -> str:
    return (timezone.now() + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M")


def test_cordon_then_uncordon_from_the_page(admin_site_client, admin_user, node):
    response = admin_site_client.post(page(node), {"action": "cordon", "cordon-reason": "fan"})
    assert response.status_code == 302
    assert Cordon.objects.get(node=node).by == admin_user

    shown = admin_site_client.get(page(node)).content.decode()
    assert 'id="tm-node-state">cordoned<' in shown and "fan" in shown

    admin_site_client.post(page(node), {"action": "uncordon", "uncordon-reason": "fixed"})
    assert not Cordon.objects.exists()
    kinds = list(NodeEvent.objects.values_list("kind", flat=True))
    assert kinds == [NodeEventKind.UNCORDON, NodeEventKind.CORDON]


@pytest.mark.parametrize("state", ["schedulable", "cordoned", "draining", "in a window"])
def test_the_uncordon_form_shows_only_when_there_is_something_to_end(
    admin_site_client, node, state
):
    now = timezone.now()
    if state == "cordoned":
        admin_site_client.post(page(node), {"action": "cordon", "cordon-reason": "fan"})
    elif state == "draining":
        node_drain(node_id=node.pk, reason="disk", actor=None)
    elif state == "in a window":
        MaintenanceWindow.objects.create(
            node=node, starts_at=now, ends_at=now + timedelta(hours=1), reason="kernel"
        )

    shown = admin_site_client.get(page(node)).content.decode()

    assert ('id="tm-uncordon"' in shown) == (state != "schedulable")
    assert 'id="tm-cordon"' in shown and 'id="tm-maintenance"' in shown


def test_the_page_uncordons_without_a_reason(admin_site_client, node):
    admin_site_client.post(page(node), {"action": "cordon", "cordon-reason": "fan"})

    response = admin_site_client.post(page(node), {"action": "uncordon", "uncordon-reason": ""})

    assert response.status_code == 302
    assert not Cordon.objects.exists()
    assert NodeEvent.objects.first().kind == NodeEventKind.UNCORDON


def test_a_cordon_without_a_reason_changes_nothing(admin_site_client, node):
    response = admin_site_client.post(page(node), {"action": "cordon", "cordon-reason": ""})
    assert response.status_code == 200 and b"This field is required" in response.content
    assert not Cordon.objects.exists()


INVALID_SCHEDULING_POSTS = {
    "maintenance ending before it starts": {
        "action": "maintenance",
        "maintenance-reason": "rack move",
        "maintenance-starts_at": moment(120),
        "maintenance-ends_at": moment(60),
    },
    "cordon without a reason": {"action": "cordon", "cordon-reason": ""},
    "drain with a past deadline": {
        "action": "drain",
        "drain-reason": "kernel",
        "drain-deadline": moment(-30),
    },
    "cancel window with no id": {"action": "cancel_window", "window": "abc"},
}


@pytest.mark.parametrize("post", INVALID_SCHEDULING_POSTS.values(), ids=INVALID_SCHEDULING_POSTS)
def test_an_invalid_scheduling_form_leaves_the_reassign_form_unbound(
    admin_site_client, node, other_node, post
):
    # other_node: the reassign form shows only with a node to move the tasks to.
    response = admin_site_client.post(page(node), post, follow=True)

    assert response.status_code == 200
    assert not response.context["form"].is_bound
    reassign = response.content.decode().split('id="tm-reassign"')[1].split("</form>")[0]
    assert "errorlist" not in reassign
    assert not Cordon.objects.exists() and not MaintenanceWindow.objects.exists()


REFUSED_FORMS = {
    **{k: v for k, v in INVALID_SCHEDULING_POSTS.items() if k != "cancel window with no id"},
    "reassign with a deadline that is no date": {"action": "reassign", "locked_at": "soon"},
}


@pytest.mark.parametrize("post", REFUSED_FORMS.values(), ids=REFUSED_FORMS)
def test_a_refused_form_says_so_at_the_top_of_the_page(admin_site_client, node, post):
    # The page comes back scrolled to its top; the form's own error is far below it.
    response = admin_site_client.post(page(node), post)

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "Nothing was changed: the form below says why."
    ]


def test_cancelling_a_window_that_is_no_number_says_so(admin_site_client, node):
    post = INVALID_SCHEDULING_POSTS["cancel window with no id"]

    response = admin_site_client.post(page(node), post, follow=True)

    assert [str(m) for m in response.context["messages"]] == [
        "Only a coming window of this node can be cancelled."
    ]


def test_a_drain_asks_first_then_moves_the_pending_work(admin_site_client, admin_user, node):
    other = NodeFactory()
    User.objects.filter(pk__in=[node.pk, other.pk]).update(last_seen=timezone.now())
    task = TaskFactory(assigned_node=node)
    form = {"action": "drain", "drain-reason": "kernel", "drain-deadline": moment(30)}

    ask = admin_site_client.post(page(node), form)
    assert ask.status_code == 200 and b"Drain now" in ask.content
    assert not Cordon.objects.exists()

    done = admin_site_client.post(page(node), {**form, "confirm": "yes"})
    assert done.status_code == 302
    assert Cordon.objects.get(node=node).drain_deadline is not None
    assert Task.objects.get(pk=task.pk).assigned_node_id == other.pk
    assert TaskHistory.objects.get(task=task, action="assignee_change").performed_by == admin_user


def test_a_drain_deadline_in_the_past_is_refused(admin_site_client, node):
    form = {"action": "drain", "drain-reason": "r", "drain-deadline": moment(-30), "confirm": "y"}
    response = admin_site_client.post(page(node), form)
    assert b"must be in the future" in response.content
    assert not Cordon.objects.exists()


def test_plan_and_cancel_a_window_from_the_page(admin_site_client, node):
    form = {
        "action": "maintenance",
        "maintenance-reason": "rack",
        "maintenance-starts_at": moment(60),
        "maintenance-ends_at": moment(120),
    }
    assert admin_site_client.post(page(node), form).status_code == 302
    window = MaintenanceWindow.objects.get()
    assert "rack" in admin_site_client.get(page(node)).content.decode()

    cancel = {"action": "cancel_window", "window": str(window.pk), "confirm": "yes"}
    admin_site_client.post(page(node), cancel)
    assert not MaintenanceWindow.objects.exists()


def a_window(node, *, drain=False, starts_in=60):
    now = timezone.now()
    return MaintenanceWindow.objects.create(
        node=node,
        starts_at=now + timedelta(minutes=starts_in),
        ends_at=now + timedelta(minutes=starts_in + 60),
        reason="rack move",
        drain=drain,
    )


def test_each_cancel_window_button_names_its_window_to_a_screen_reader(admin_site_client, node):
    """Two planned windows gave two buttons both read as "Cancel window"."""
    first, second = a_window(node), a_window(node, starts_in=180)

    html = admin_site_client.get(page(node)).content.decode()

    for window in (first, second):
        starts = timezone.localtime(window.starts_at).strftime("%Y-%m-%d %H:%M")
        assert f'aria-label="Cancel the window from {starts} UTC: rack move"' in html


@pytest.mark.parametrize(
    ("drain", "undone"),
    [
        (False, "is not cordoned during it: it keeps taking new tasks."),
        (True, "its tasks in progress are not failed nor its pending tasks moved then"),
    ],
)
def test_cancelling_a_window_asks_first_saying_what_it_undoes(
    admin_site_client, admin_user, node, drain, undone
):
    window = a_window(node, drain=drain)
    cancel = {"action": "cancel_window", "window": str(window.pk)}

    asked = admin_site_client.post(page(node), cancel)

    assert asked.status_code == 200
    shown = asked.content.decode()
    changes = html.unescape(shown.split('class="tm-confirm-changes"')[1].split("</ul>")[0])
    span = f"from {moment_shown(window.starts_at)} to {moment_shown(window.ends_at)}"
    assert f"The window {span} (rack move) is deleted." in changes
    assert undone in changes
    assert 'value="Yes, cancel the window"' in shown and 'class="tm-destructive"' in shown
    assert MaintenanceWindow.objects.filter(pk=window.pk).exists()
    assert not NodeEvent.objects.exists()

    done = admin_site_client.post(page(node), {**cancel, "confirm": "yes"}, follow=True)

    assert not MaintenanceWindow.objects.exists()
    event = NodeEvent.objects.get()
    assert (event.kind, event.actor) == (NodeEventKind.MAINTENANCE_CANCELLED, admin_user)
    said = [str(m) for m in done.context["messages"]]
    assert said == [f"Cancelled the maintenance window {span}."]


@pytest.mark.parametrize("confirm", [{}, {"confirm": "yes"}])
def test_a_window_under_way_is_not_offered_for_cancelling(admin_site_client, node, confirm):
    window = a_window(node, starts_in=-10)
    cancel = {"action": "cancel_window", "window": str(window.pk), **confirm}

    response = admin_site_client.post(page(node), cancel, follow=True)

    assert "tm-confirm" not in response.content.decode()
    assert [str(m) for m in response.context["messages"]] == [
        "Only a coming window of this node can be cancelled."
    ]
    assert MaintenanceWindow.objects.filter(pk=window.pk).exists()


def test_the_forms_need_the_csrf_token(admin_user, node):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(page(node), {"action": "cordon", "cordon-reason": "x"})
    assert response.status_code == 403
    assert not Cordon.objects.exists()


def test_the_drain_confirmation_says_how_many_tasks_move_and_how_many_may_finish(
    admin_site_client, node
):
    # Another alive node that may take them: the confirmation says they move.
    User.objects.filter(pk=NodeFactory().pk).update(last_seen=timezone.now())
    TaskFactory.create_batch(2, assigned_node=node)
    TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)
    deadline = timezone.now() + timedelta(minutes=30)
    form = {
        "action": "drain",
        "drain-reason": "kernel",
        "drain-deadline": deadline.strftime("%Y-%m-%d %H:%M"),
    }

    shown_page = admin_site_client.post(page(node), form).content.decode()

    changes = shown_page.split('class="tm-confirm-changes"')[1].split("</ul>")[0]
    assert "Its 2 pending task(s) move now" in changes
    shown = timezone.localtime(deadline).strftime("%Y-%m-%d %H:%M UTC")
    assert f"Its 1 task(s) in progress may finish until {shown}" in changes
    assert 'id="tm-drain-confirm"' in shown_page
    assert 'name="drain-reason" value="kernel"' in shown_page
    assert not Cordon.objects.exists()


def test_the_scheduling_forms_stay_out_of_the_regions_that_refresh_themselves(
    admin_site_client, node
):
    # live.js swaps the [data-live] regions every few seconds: a form in one would lose
    # what the operator is typing. Cordoned: the uncordon form shows too.
    admin_site_client.post(page(node), {"action": "cordon", "cordon-reason": "fan"})
    shown = admin_site_client.get(page(node)).content.decode()

    live = shown.split('id="tm-node-live-top" data-live>')[1].split('id="tm-node-actions"')[0]
    for form in ("tm-cordon", "tm-drain", "tm-uncordon", "tm-maintenance"):
        assert f'id="{form}"' in shown and f'id="{form}"' not in live


def test_the_node_page_names_who_cordoned_and_writes_every_moment_with_its_zone(
    admin_site_client, admin_user, node
):
    admin_site_client.post(page(node), {"action": "cordon", "cordon-reason": "fan"})

    page_html = admin_site_client.get(page(node)).content.decode()

    since = Cordon.objects.get(node=node).since
    assert f"(by {admin_user.name})" in page_html and str(admin_user.pk) not in page_html
    events = page_html.split('id="tm-node-events"')[1].split("</table>")[0]
    assert timezone.localtime(since).strftime("%Y-%m-%d %H:%M") in events
    assert " UTC</td>" in events
    # No browser datetime picker: text in the one format, the zone named beside it.
    assert 'type="datetime-local"' not in page_html
    assert 'placeholder="YYYY-MM-DD HH:MM"' in page_html and "Deadline (UTC)" in page_html


def test_an_event_by_the_system_shows_on_the_page(admin_site_client, node):
    # Labels set with no one acting (a script, a shell): the event has no actor.
    node_set_labels(node=node, labels={"zone": "a"}, actor=None)

    response = admin_site_client.get(page(node))

    assert response.status_code == 200
    events = response.content.decode().split('id="tm-node-events"')[1].split("</table>")[0]
    assert "the system" in events and "zone=a" in events


def drain_confirmation(client, node) -> str:
    form = {"action": "drain", "drain-reason": "kernel", "drain-deadline": moment(30)}
    shown_page = client.post(page(node), form).content.decode()
    changes = shown_page.split('class="tm-confirm-changes"')[1].split("</ul>")[0]
    return " ".join(changes.split())


def test_the_drain_confirmation_says_the_pending_tasks_stay_when_no_node_may_take_them(
    admin_site_client, node
):
    NodeFactory(name="never seen, so no target")
    TaskFactory.create_batch(3, assigned_node=node)

    changes = drain_confirmation(admin_site_client, node)

    assert "Its 3 pending task(s) stay on it" in changes
    assert "move now" not in changes
    # What the drain then does: it moves none.
    form = {"action": "drain", "drain-reason": "kernel", "drain-deadline": moment(30)}
    done = admin_site_client.post(page(node), {**form, "confirm": "yes"}, follow=True)
    (message,) = [str(m) for m in done.context["messages"]]
    assert "moved 0 pending task(s)" in message


def test_the_drain_confirmation_counts_those_that_can_move_and_those_that_stay(
    admin_site_client, node
):
    gpu = NodeFactory()
    User.objects.filter(pk=gpu.pk).update(last_seen=timezone.now())
    node_set_labels(node=gpu, labels={"gpu": "true"})
    TaskFactory.create_batch(2, assigned_node=node, node_selector={"gpu": "true"})
    TaskFactory(assigned_node=node, node_selector={"zone": "mars"})
    TaskFactory(assigned_node=node, pinned=True)

    changes = drain_confirmation(admin_site_client, node)

    assert "Of its 4 pending task(s), 2 move now" in changes
    assert "2 stay on it" in changes


def test_cordoning_a_draining_node_says_it_is_still_draining(admin_site_client, node):
    form = {"action": "drain", "drain-reason": "kernel", "drain-deadline": moment(30)}
    admin_site_client.post(page(node), {**form, "confirm": "yes"})

    response = admin_site_client.post(
        page(node), {"action": "cordon", "cordon-reason": "and keep it out"}, follow=True
    )

    message = [str(m) for m in response.context["messages"]][-1]
    assert message.startswith("Cordoned ") and "still draining" in message
    assert Cordon.objects.get(node=node).drain_deadline is not None


def test_deactivating_a_node_on_its_user_page_says_its_open_tasks_stay(admin_site_client, node):
    """The user page's "Is active" box deactivates without the node page's confirmation:
    its message must still say what becomes of the node's work."""
    TaskFactory(assigned_node=node)
    TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)
    url = reverse("admin:accounts_user_change", args=[node.pk])
    data = {"email": node.email, "name": node.name, "role": node.role}

    response = admin_site_client.post(url, data, follow=True)

    node.refresh_from_db()
    assert not node.is_active
    shown = [str(message) for message in response.context["messages"]]
    assert any(
        "can no longer log in" in text
        and "2 open task(s) (1 in progress) stay assigned to it" in text
        for text in shown
    ), shown
    assert page(node) in response.content.decode()


def test_a_deactivated_nodes_page_does_not_call_it_schedulable(admin_site_client, node):
    """Placement never picks a deactivated node: its State says so, as the dashboard does."""
    User.objects.filter(pk=node.pk).update(is_active=False)

    shown = admin_site_client.get(page(node)).content.decode()

    assert 'id="tm-node-state">deactivated<' in shown
