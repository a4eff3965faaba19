"""The task list filtered to failed tasks says why and when; filtered to overdue, how late."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tasks.models import FailureCause, Task, TaskStatus
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")


def test_the_failed_list_shows_cause_reason_failed_at_and_attempts(admin_site_client):
    long_reason = "disk full while writing the output " * 5
    TaskFactory(
        status=TaskStatus.FAILED,
        failure_cause=FailureCause.NODE_REPORTED,
        failure_reason=long_reason,
        attempts=3,
    )

    response = admin_site_client.get(f"{CHANGELIST}?status__exact=failed")

    page = response.content.decode()
    for column in ("cause", "reason", "failed_at", "attempts"):
        assert f"column-{column}" in page
    rows = page.split("<tbody>")[1].split("</tbody>")[0]
    assert "Reported by its node" in rows and "node_reported" not in rows
    # Shortened, whole on hover.
    assert f'title="{long_reason}"' in page
    assert re.search(r">disk full[^<]{40,60}…</span>", page)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    assert '<td class="field-attempts">3</td>' in page


def test_the_overdue_list_says_how_late_and_puts_the_latest_first(admin_site_client):
    now = timezone.now()
    little, very = TaskFactory(name="a little late"), TaskFactory(name="very late")
    TaskFactory(name="on time")
    Task.objects.filter(pk=little.pk).update(locked_at=now - timedelta(minutes=5))
    Task.objects.filter(pk=very.pk).update(locked_at=now - timedelta(hours=2, minutes=10))

    for query in ("overdue=yes", f"status__in=pending,in_progress&locked_at__lt={now.isoformat()}"):
        response = admin_site_client.get(
            CHANGELIST, dict(pair.split("=", 1) for pair in query.split("&"))
        )
        names = [task.name for task in response.context["cl"].result_list]
        assert names == ["very late", "a little late"]
        page = response.content.decode()
        assert "column-late_by" in page
        assert ">2 h 10 min<" in page and ">5 min<" in page


def test_the_plain_list_keeps_its_columns(admin_site_client):
    TaskFactory()
    page = admin_site_client.get(CHANGELIST).content.decode()
    assert "column-late_by" not in page and "column-reason" not in page
