"""The admin site shows a task's work data: payload, result and checkpoint as escaped,
pretty-printed JSON (collapsed when large), progress as a bar with its message and age."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import TaskFactory
from tests.tasks.test_admin import ADD, FUTURE, NO_INLINE_FORMS, change_url

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")


def change_page(client, task) -> str:
    response = client.get(reverse("admin:tasks_task_change", args=[task.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_task_page_shows_payload_result_and_checkpoint_as_escaped_json(admin_site_client):
    task = TaskFactory(
        status=TaskStatus.COMPLETED,
        payload={"script": "<script>alert(1)</script>", "n": 2},
        result={"out": "&done"},
        checkpoint=[1, 2],
    )

    page = change_page(admin_site_client, task)

    assert "<script>alert(1)</script>" not in page
    assert "&quot;script&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;," in page
    assert "&quot;out&quot;: &quot;&amp;done&quot;" in page
    assert '<pre class="task-json">[\n  1,\n  2\n]</pre>' in page
    assert "<details>" not in page  # small values are shown open


def test_a_large_payload_is_collapsed_behind_its_size(admin_site_client):
    # Running: shown, not edited (a pending task's payload is in a box to edit).
    task = TaskFactory(payload={"rows": list(range(100))}, status=TaskStatus.IN_PROGRESS)

    page = change_page(admin_site_client, task)

    assert "<details><summary>" in page
    assert "bytes, 104 lines</summary>" in page


def test_the_task_page_shows_progress_as_a_bar_with_message_and_age(admin_site_client):
    task = TaskFactory(
        status=TaskStatus.IN_PROGRESS,
        progress_percent=42.5,
        progress_message="row <425>",
        progress_updated_at=timezone.now() - timedelta(minutes=3),
    )

    page = change_page(admin_site_client, task)

    # One way to write a percent on the page, the docs' "42.5 %": the bar and the sentence
    # above it ("Latest progress: …") said "42.5%" and "42.5 %".
    assert '<progress max="100" value="42.5"></progress> 42.5 %' in page
    assert "Latest progress: 42.5 %, row &lt;425&gt;" in page
    assert "42.5%" not in page
    assert "row &lt;425&gt;" in page
    assert "updated 3 min ago" in page


def test_a_task_without_work_data_shows_dashes(admin_site_client):
    page = change_page(admin_site_client, TaskFactory())

    assert "task-json" not in page and "<progress" not in page


def test_the_list_shows_progress_for_in_progress_tasks_only(admin_site_client):
    reported = {
        "progress_percent": 70.0,
        "progress_message": "nearly",
        "progress_updated_at": timezone.now(),
    }
    TaskFactory(name="Working", status=TaskStatus.IN_PROGRESS, **reported)
    TaskFactory(name="Finished", status=TaskStatus.COMPLETED, **reported)

    page = admin_site_client.get(CHANGELIST).content.decode()

    assert page.count('<progress max="100" value="70.0">') == 1
    # Its age as people read it (docs/operations.md), not "0 minutes".
    assert re.search(r'title="nearly, \d s ago"', page)


def test_the_list_does_not_read_the_json_columns(admin_site_client):
    TaskFactory(payload={"blob": "x" * 4096})

    with CaptureQueriesContext(connection) as captured:
        assert admin_site_client.get(CHANGELIST).status_code == 200

    task_reads = [q["sql"] for q in captured if 'FROM "tasks_task"' in q["sql"].replace("`", '"')]
    assert task_reads and all('"payload"' not in sql.replace("`", '"') for sql in task_reads)


# --- Giving a payload in the admin (the add and edit forms, the broadcast) ---------


def test_an_admin_adds_a_task_with_a_json_payload(admin_site_client, node):
    """The add page had no payload box: a task made in the admin carried no data."""
    form = {"name": "Resize", "details": "d", "assigned_node": node.pk, **FUTURE}

    response = admin_site_client.post(ADD, {**form, "payload": '{"input": "s3://b/f.csv"}'})

    assert response.status_code == 302
    assert Task.objects.get(name="Resize").payload == {"input": "s3://b/f.csv"}
    admin_site_client.post(ADD, {**form, "name": "Plain", "payload": ""})
    assert Task.objects.get(name="Plain").payload is None


def test_a_pending_task_s_payload_is_edited_with_an_edit_row_naming_it(
    admin_site_client, admin_user
):
    task = TaskFactory(payload={"n": 1})
    page = change_page(admin_site_client, task)
    # Shown as the JSON it is, to edit: not "null", not Python's repr.
    assert '"n": 1' in page.replace("&quot;", '"')
    form = {
        "name": task.name,
        "details": task.details,
        "assigned_node": task.assigned_node_id,
        "priority": task.priority,
        **FUTURE,
        **NO_INLINE_FORMS,
    }

    response = admin_site_client.post(change_url(task), {**form, "payload": '[1, "two"]'})

    assert response.status_code == 302
    task.refresh_from_db()
    assert task.payload == [1, "two"]
    edit = TaskHistory.objects.get(task=task, action=HistoryAction.EDIT)
    assert (edit.to_value, edit.performed_by_id) == ("payload", admin_user.pk)


@pytest.mark.parametrize(
    "typed, message",
    [
        ("{not json", "Enter a valid JSON."),
        ('"a\\u0000b"', "Must not contain NUL characters."),
        ("[" * 40 + "]" * 40, "arrays or objects deep"),
    ],
)
def test_a_bad_payload_is_a_form_error_and_nothing_is_saved(
    admin_site_client, node, typed, message
):
    form = {"name": "Bad", "details": "d", "assigned_node": node.pk, **FUTURE}

    response = admin_site_client.post(ADD, {**form, "payload": typed})

    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors["payload"])
    assert not Task.objects.filter(name="Bad").exists()


@pytest.mark.parametrize("box", ["payload", "node_selector"])
@pytest.mark.parametrize(
    "typed",
    ["[" * 50_000 + "]" * 50_000, '{"a": 1' + "0" * 5_000 + "}"],
    ids=["nested too deeply for Python", "a number too long to read"],
)
def test_json_python_cannot_read_is_a_form_error_not_a_500(admin_site_client, node, box, typed):
    form = {"name": "Unreadable", "details": "d", "assigned_node": node.pk, **FUTURE}

    response = admin_site_client.post(ADD, {**form, box: typed})

    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors[box])
    assert "nested too deeply or holds a number too long" in errors
    assert escape(typed[:50]) in response.content.decode()  # back in its box
    assert not Task.objects.filter(name="Unreadable").exists()


def test_a_payload_over_the_limit_is_refused(admin_site_client, node, settings):
    settings.TASK_PAYLOAD_MAX_BYTES = 10
    form = {"name": "Big", "details": "d", "assigned_node": node.pk, **FUTURE}

    response = admin_site_client.post(ADD, {**form, "payload": '"more than ten"'})

    assert "Must be at most 10 bytes as JSON; this is 15." in response.content.decode()
    assert not Task.objects.filter(name="Big").exists()


def test_a_broadcast_carries_its_payload_to_every_task(admin_site_client, node, other_node):
    data = {
        "name": "upgrade",
        "details": "apt upgrade",
        "locked_at": "2099-07-01T09:30",
        "priority": "50",
        "labels": "",
        "payload": '{"packages": ["openssl"]}',
        "confirm": "yes",
    }

    response = admin_site_client.post(reverse("admin:tasks_task_broadcast"), data)

    assert response.status_code == 302
    payloads = list(Task.objects.values_list("payload", flat=True))
    assert payloads == [{"packages": ["openssl"]}] * 2
