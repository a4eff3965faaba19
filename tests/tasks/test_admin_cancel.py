"""The admin site's Cancel: a list action behind a confirmation page, and a button on the
task page that leads to the same page (SPEC, Control of the work)."""

import re

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
    # The running one is only asked: "Cancelled 2" was untrue of it.
    assert message == (
        "Cancelled 1 pending task(s). Asked the nodes of 1 running task(s) to stop: each "
        "is cancelled when its node acknowledges, or by the sweep if its node has not "
        "answered within 60 s. Skipped 1: 1 already completed."
    )


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


@pytest.mark.parametrize(
    "status, said, unsaid",
    [
        (TaskStatus.PENDING, "1 pending task(s) are cancelled now.", "in progress get"),
        (TaskStatus.IN_PROGRESS, "1 in progress get a cancel request", "pending task(s)"),
    ],
)
def test_the_cancel_confirmation_says_only_what_happens(
    admin_site_client, node, status, said, unsaid
):
    # It said "0 in progress get a cancel request" (or "0 pending task(s) are cancelled").
    task = TaskFactory(assigned_node=node, status=status)

    page = post_action(admin_site_client, [task], index="0").content.decode()

    changes = page.split('class="tm-confirm-changes"')[1].split("</ul>")[0]
    assert said in changes and unsaid not in changes


def change_url(task):
    return reverse("admin:tasks_task_change", args=[task.pk])


def cancel_form_of(page: str) -> dict:
    """The hidden fields of the task page's Cancel form, as the browser posts them."""
    form = page.split('id="tm-task-cancel"')[1].split("</form>")[0]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)
    return {name: value for name, value in fields if name != "csrfmiddlewaretoken"}


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (TaskStatus.PENDING, "Cancelled: the task was still pending."),
        (
            TaskStatus.IN_PROGRESS,
            "Cancel requested: its node is asked to stop, and the task is cancelled when "
            "the node acknowledges, or by the sweep if it has not answered within 60 s.",
        ),
    ],
)
def test_cancelling_from_the_task_page_lands_back_on_it_saying_what_happened(
    admin_site_client, node, status, message
):
    task = TaskFactory(assigned_node=node, status=status)
    form = cancel_form_of(admin_site_client.get(change_url(task)).content.decode())

    confirm = admin_site_client.post(CHANGELIST, form).content.decode()
    back = confirm.split('class="button cancel-link"')[0].rsplit("<a href=", 1)[1]
    response = admin_site_client.post(CHANGELIST, form | {"apply": "yes", "reason": "typo"})

    assert back.startswith(f'"{change_url(task)}"')  # "No, take me back" goes to it too
    assert response.status_code == 302 and response.url == change_url(task)
    assert [str(m) for m in get_messages(response.wsgi_request)] == [message]


def test_the_grace_is_said_as_its_value_not_the_settings_name(admin_site_client, node, settings):
    settings.CANCEL_GRACE_SECONDS = 90
    running = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)

    confirm = post_action(admin_site_client, [running], index="0").content.decode()
    page = admin_site_client.get(change_url(running)).content.decode()
    post_action(admin_site_client, [running], apply="yes")
    asked = admin_site_client.get(change_url(running)).content.decode()

    said = [
        confirm.split('id="content"')[1].split("<h2>The selected tasks</h2>")[0],
        page.split('id="tm-task-cancel"')[1].split("</form>")[0],
        asked.split('id="tm-task-cancel"')[1].split("</form>")[0],
    ]
    for text in said:
        shown = text.replace("(CANCEL_GRACE_SECONDS)", "")
        assert "90 s" in shown and "CANCEL_GRACE_SECONDS" not in shown
