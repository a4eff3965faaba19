"""The admin site's Cancel: a list action behind a confirmation page, and a button on the
task page that leads to the same page (SPEC, Control of the work)."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")


def post_action(client, tasks, **extra):
    data = {"action": "cancel_tasks", "_selected_action": [task.pk for task in tasks]}
    return client.post(CHANGELIST, data | extra)


def test_the_cancel_action_asks_first_and_changes_nothing_until_confirmed(admin_site_client, node):
    task = TaskFactory(assigned_node=node)

    page = post_action(admin_site_client, [task], index="0")

    assert page.status_code == 200
    assert b"Cancel tasks" in page.content and task.name.encode() in page.content
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING


def test_the_confirmed_cancel_cancels_pending_asks_running_and_skips_finished(
    admin_site_client, admin_user, node
):
    pending = TaskFactory(assigned_node=node)
    running = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS, attempts=1)
    done = TaskFactory(assigned_node=node, status=TaskStatus.COMPLETED)

    response = post_action(
        admin_site_client, [pending, running, done], apply="yes", reason="wrong input"
    )

    assert response.status_code == 302
    assert Task.objects.get(pk=pending.pk).status == TaskStatus.CANCELLED
    running = Task.objects.get(pk=running.pk)
    assert (running.status, running.cancel_reason) == (TaskStatus.IN_PROGRESS, "wrong input")
    assert Task.objects.get(pk=done.pk).status == TaskStatus.COMPLETED
    request = TaskHistory.objects.get(task=running, action=HistoryAction.CANCEL_REQUEST)
    assert request.performed_by == admin_user
    (message,) = [str(m) for m in get_messages(response.wsgi_request)]
    assert message == "Cancelled 2 task(s). Skipped 1: 1 already completed."


def test_a_reason_over_500_characters_is_refused_on_the_confirmation_page(admin_site_client, node):
    task = TaskFactory(assigned_node=node)

    page = post_action(admin_site_client, [task], apply="yes", reason="x" * 501)

    assert page.status_code == 200
    assert b"at most 500 characters" in page.content
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING


def test_the_task_page_offers_cancel_for_open_tasks_only(admin_site_client, node):
    open_task = TaskFactory(assigned_node=node)
    finished = TaskFactory(assigned_node=node, status=TaskStatus.FAILED)

    def page(task):
        return admin_site_client.get(reverse("admin:tasks_task_change", args=[task.pk])).content

    assert b'value="cancel_tasks"' in page(open_task)
    assert b'value="cancel_tasks"' not in page(finished)


def test_the_cancel_confirmation_counts_what_changes_and_what_is_left_alone(
    admin_site_client, node
):
    tasks = [
        TaskFactory(assigned_node=node),
        TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS),
        TaskFactory(assigned_node=node, status=TaskStatus.COMPLETED),
    ]

    page = post_action(admin_site_client, tasks, index="0").content.decode()

    changes = page.split('class="tm-confirm-changes"')[1].split("</ul>")[0]
    assert "2 of the 3 selected task(s) change." in changes
    assert "1 pending task(s) are cancelled now; 1 in progress get a cancel request" in changes
    assert "Left as they are: 1 already completed." in changes
    # Cancelling takes work away: Django's delete style, and no "Cancel" beside it to mean back.
    assert 'value="Cancel tasks (2)" class="tm-destructive"' in page
    assert ">No, take me back</a>" in page
