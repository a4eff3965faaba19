"""The admin site shows a task's work data: payload, result and checkpoint as escaped,
pretty-printed JSON (collapsed when large), progress as a bar with its message and age."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tasks.models import TaskStatus
from tests.factories import TaskFactory

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
    task = TaskFactory(payload={"rows": list(range(100))})

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
