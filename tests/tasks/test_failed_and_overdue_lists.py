"""The task list filtered to failed tasks says why and when; filtered to cancelled ones, why
and when they were asked; filtered to overdue, how late. A pending cancel request shows."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
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


def test_the_overdue_lists_header_marks_the_order_its_rows_are_in(admin_site_client):
    """Longest overdue first is a sort by deadline: the header said "created", newest first."""
    TaskFactory(locked_at=timezone.now() - timedelta(hours=1))

    page = admin_site_client.get(CHANGELIST, {"overdue": "yes"}).content.decode()

    assert "column-deadline sorted ascending" in page
    assert "column-created sorted" not in page


def test_the_plain_list_keeps_its_columns(admin_site_client):
    TaskFactory()
    page = admin_site_client.get(CHANGELIST).content.decode()
    assert "column-late_by" not in page and "column-reason" not in page


def test_the_cancelled_list_shows_the_reason_when_it_was_asked_and_the_cause(admin_site_client):
    asked = timezone.now() - timedelta(minutes=3)
    long_reason = "the input was the wrong customer export " * 4
    TaskFactory(
        name="timed out",
        status=TaskStatus.CANCELLED,
        cancel_requested_at=asked,
        cancel_reason=long_reason,
        failure_cause=FailureCause.CANCEL_TIMEOUT,
    )
    TaskFactory(name="was pending", status=TaskStatus.CANCELLED, cancel_requested_at=asked)

    page = admin_site_client.get(f"{CHANGELIST}?status__exact=cancelled").content.decode()

    for column in ("cancel_reason_short", "cancel_requested", "cancel_cause", "cancelled_at"):
        assert f"column-{column}" in page
    rows = page.split("<tbody>")[1].split("</tbody>")[0]
    assert "Cancel unanswered" in rows and "cancel_timeout" not in rows
    assert "Acknowledged or pending" in rows  # no cause: its node stopped, or it never ran
    assert f'title="{long_reason}"' in page
    assert re.search(r">the input was[^<]{40,60}…</span>", page)
    assert "column-reason" not in page  # a failure's reason is not a cancel's


def test_a_running_task_with_a_cancel_request_is_marked_in_the_list(admin_site_client):
    TaskFactory(
        name="asked",
        status=TaskStatus.IN_PROGRESS,
        cancel_requested_at=timezone.now(),
        cancel_reason="wrong input",
    )
    TaskFactory(name="running", status=TaskStatus.IN_PROGRESS)

    page = admin_site_client.get(CHANGELIST).content.decode()

    def row(name):
        start = page.index(f">{name}<")
        return page[page.rindex("<tr", 0, start) : page.index("</tr>", start)]

    assert 'class="task-cancel-requested"' in row("asked")
    assert "wrong input" in row("asked")  # on hover
    assert "task-cancel-requested" not in row("running")


def test_the_cancelled_list_reads_no_more_queries_for_more_tasks(
    admin_site_client, django_assert_max_num_queries
):
    url = f"{CHANGELIST}?status__exact=cancelled"
    TaskFactory.create_batch(2, status=TaskStatus.CANCELLED, cancel_requested_at=timezone.now())
    with CaptureQueriesContext(connection) as few:
        assert admin_site_client.get(url).status_code == 200
    TaskFactory.create_batch(30, status=TaskStatus.CANCELLED, cancel_requested_at=timezone.now())

    with django_assert_max_num_queries(len(few)):
        response = admin_site_client.get(url)
    assert len(response.context["cl"].result_list) == 32
