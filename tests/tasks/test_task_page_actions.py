"""A task's own page: reassign, retry and mark failed it there, by the services' rules,
and how long a running task has been at it."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from nodes.models import MaintenanceWindow
from nodes.services import node_cordon, node_drain, node_uncordon
from tasks.models import FailureCause, HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db


def page_url(task) -> str:
    return reverse("admin:tasks_task_change", args=[task.pk])


def act_url(task) -> str:
    return reverse("admin:tasks_task_act", args=[task.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_a_running_task_offers_reassign_and_fail_and_shows_its_elapsed_time(admin_site_client):
    task = TaskFactory(status=TaskStatus.IN_PROGRESS)
    Task.objects.filter(pk=task.pk).update(updated_at=timezone.now() - timedelta(minutes=125))

    page = admin_site_client.get(page_url(task)).content.decode()

    assert "View task (in progress)" in page
    assert 'id="tm-task-reassign"' in page and 'id="tm-task-fail"' in page
    assert 'id="tm-task-retry"' not in page
    assert "In progress for <strong>2 h 5 min</strong>" in page
    assert 'class="tm-destructive" value="Mark failed"' in page


def test_reassign_from_the_page_keeps_a_far_deadline(admin_site_client, admin_user):
    far = timezone.now() + timedelta(days=5)
    task = TaskFactory(status=TaskStatus.IN_PROGRESS, locked_at=far)
    target = NodeFactory()

    response = admin_site_client.post(
        act_url(task), {"action": "reassign", "node": target.pk, "locked_at": ""}
    )

    assert response.status_code == 302 and response["Location"] == page_url(task)
    task.refresh_from_db()
    assert (task.assigned_node, task.status, task.locked_at) == (target, "pending", far)
    assert messages_of(response)[0].startswith(
        f"Reassigned to {target}, back to pending. Deadline kept:"
    )
    row = TaskHistory.objects.filter(task=task, action=HistoryAction.ASSIGNEE_CHANGE).get()
    assert row.performed_by_id == admin_user.pk


def test_reassign_or_retry_on_the_page_to_a_down_node_says_so(admin_site_client, settings):
    """As the list's reassign and the task form: nothing will start it there, said when
    it is moved, not found out when failover moves it again."""
    settings.FAILOVER = "off"
    down = NodeFactory(last_seen=timezone.now() - timedelta(hours=3))
    running = TaskFactory(status=TaskStatus.IN_PROGRESS)
    failed = TaskFactory(status=TaskStatus.FAILED, assigned_node=down)
    warning = (
        f"{down} is down (last seen 3 h ago): its pending tasks wait until it beats again"
        " (FAILOVER is off)."
    )

    reassigned = admin_site_client.post(
        act_url(running), {"action": "reassign", "node": down.pk, "locked_at": ""}
    )
    retried = admin_site_client.post(act_url(failed), {"action": "retry"})

    assert messages_of(reassigned)[-1] == warning
    assert messages_of(retried)[-1] == warning


@pytest.mark.parametrize("state", ["cordoned", "draining", "in a window", "deactivated"])
def test_retry_is_not_offered_when_its_node_takes_no_new_tasks_and_the_page_says_why(
    admin_site_client, admin_user, state
):
    # Retry gives the task back to its own node, which refuses new work: the button
    # was offered anyway and answered "node is cordoned" (for a draining or deactivated
    # node too), naming no node; the page now says so first and points to Reassign.
    task = TaskFactory(status=TaskStatus.FAILED, failure_cause=FailureCause.DEADLINE)
    node = task.assigned_node
    now = timezone.now()
    if state == "cordoned":
        node_cordon(node_id=node.pk, reason="disk", actor=admin_user)
    elif state == "draining":
        node_drain(node_id=node.pk, reason="decommission", actor=admin_user)
    elif state == "in a window":
        MaintenanceWindow.objects.create(
            node=node,
            starts_at=now - timedelta(minutes=5),
            ends_at=now + timedelta(hours=1),
            reason="kernel",
            by=admin_user,
        )
    else:
        node.is_active = False
        node.save(update_fields=["is_active"])

    page = admin_site_client.get(page_url(task)).content.decode()

    assert 'id="tm-task-retry"' not in page
    assert 'id="tm-task-reassign"' in page
    shown = {"in a window": "cordoned"}.get(state, state)
    assert f"is {shown} and takes no new tasks. Reassign it to another node above" in page
    assert reverse("admin:node", args=[node.pk]) in page


def test_retry_is_offered_again_once_its_node_is_uncordoned(admin_site_client, admin_user):
    task = TaskFactory(status=TaskStatus.CANCELLED)
    node_cordon(node_id=task.assigned_node_id, reason="disk", actor=admin_user)
    assert 'id="tm-task-retry-refused"' in admin_site_client.get(page_url(task)).content.decode()

    node_uncordon(node_id=task.assigned_node_id, reason="", actor=admin_user)

    page = admin_site_client.get(page_url(task)).content.decode()
    assert 'id="tm-task-retry"' in page and 'id="tm-task-retry-refused"' not in page


def test_retry_puts_a_failed_task_back_with_a_fresh_deadline(admin_site_client, settings):
    settings.REASSIGN_DEADLINE_MINUTES = 60
    task = TaskFactory(status=TaskStatus.FAILED, failure_cause=FailureCause.DEADLINE)
    Task.objects.filter(pk=task.pk).update(locked_at=timezone.now() - timedelta(hours=1))
    assert 'id="tm-task-retry"' in admin_site_client.get(page_url(task)).content.decode()

    response = admin_site_client.post(act_url(task), {"action": "retry"})

    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.assigned_node_id, stored.failure_cause) == (
        TaskStatus.PENDING,
        task.assigned_node_id,
        "",
    )
    assert stored.locked_at > timezone.now() + timedelta(minutes=59)
    assert messages_of(response)[0].startswith(
        f"Back to pending on {task.assigned_node}, for another attempt. New deadline:"
    )


def test_mark_failed_fails_an_open_task_as_the_admin(admin_site_client):
    task = TaskFactory()

    response = admin_site_client.post(act_url(task), {"action": "fail"})

    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.failure_cause) == (TaskStatus.FAILED, FailureCause.ADMIN)
    assert messages_of(response) == ["Marked failed (cause: admin)."]


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (TaskStatus.COMPLETED, "fail"),
        (TaskStatus.PENDING, "retry"),
        (TaskStatus.FAILED, "fail"),
    ],
)
def test_an_action_that_does_not_apply_changes_nothing(admin_site_client, status, action):
    task = TaskFactory(status=status)

    response = admin_site_client.post(act_url(task), {"action": action})

    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).status == status
    assert "nothing was done" in messages_of(response)[0]


def test_reassign_to_a_deactivated_node_or_a_past_deadline_says_why(admin_site_client):
    task = TaskFactory(status=TaskStatus.FAILED)
    past = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    response = admin_site_client.post(
        act_url(task), {"action": "reassign", "node": NodeFactory().pk, "locked_at": past}
    )

    assert messages_of(response) == ["The deadline must be in the future."]
    assert Task.objects.get(pk=task.pk).status == TaskStatus.FAILED


def test_the_actions_are_post_only_admin_only_and_csrf_checked(admin_user):
    task = TaskFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.get(act_url(task)).status_code == 405
    assert client.post(act_url(task), {"action": "fail"}).status_code == 403
    node_client = Client()
    node_client.force_login(task.assigned_node)
    response = node_client.post(act_url(task), {"action": "fail"})
    assert response.status_code == 302 and "login" in response["Location"]
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING


def test_the_task_page_writes_its_moments_one_way_with_the_zone(admin_site_client):
    task = TaskFactory(status=TaskStatus.COMPLETED)
    page = admin_site_client.get(page_url(task)).content.decode()
    deadline = timezone.localtime(task.locked_at).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert deadline in page
    assert "a.m." not in page and "p.m." not in page


def test_retry_takes_a_cancelled_task_back_to_pending(admin_site_client):
    # SPEC (Control of the work): a cancelled task is reassigned like a failed one.
    task = TaskFactory(status=TaskStatus.CANCELLED, failure_cause=FailureCause.CANCEL_TIMEOUT)
    assert 'id="tm-task-retry"' in admin_site_client.get(page_url(task)).content.decode()

    response = admin_site_client.post(act_url(task), {"action": "retry"})

    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING
    assert messages_of(response)[0].startswith(f"Back to pending on {task.assigned_node}")


def test_the_actions_come_first_on_the_page_cancel_among_them(admin_site_client):
    task = TaskFactory(status=TaskStatus.IN_PROGRESS)

    page = admin_site_client.get(page_url(task)).content.decode()

    actions = page.index('id="tm-task-actions"')
    assert actions < page.index('id="task_form"') and actions < page.index("history-group")
    cancel = page.split('id="tm-task-cancel"')[1].split("</form>")[0]
    assert 'value="cancel_tasks"' in cancel and 'class="tm-destructive"' in cancel
