"""A `cancel_request` history row as the admin shows it, on the task's page, in the task
history list and in the activity feed: the status it was asked in by its label, and a
long reason cut to its first 64 characters, marked as cut, the whole on hover (rows from
before migration 0015 kept only those 64)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from tasks.actor import acting_as
from tasks.models import HistoryAction, TaskHistory, TaskStatus
from tasks.services import task_cancel
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

LONG_REASON = "The customer sent the wrong export; rerun it with the corrected file of Monday."
SHORT_REASON = "wrong input"


def asked_to_cancel(admin_user, reason, name):
    task = TaskFactory(name=name, status=TaskStatus.IN_PROGRESS, attempts=1)
    with acting_as(admin_user):
        task_cancel(task_id=task.pk, reason=reason)
    return task


def cancel_row(page: str, name: str = "") -> str:
    """The cancel request's row of a history table (of the task `name` where they mix)."""
    rows = [row.split("</tr>")[0] for row in page.split("<tr")[1:]]
    (row,) = [row for row in rows if "Cancel request" in row and name in row]
    return row


PAGES = {
    "the task page": lambda task: reverse("admin:tasks_task_change", args=[task.pk]),
    "the history list": lambda task: reverse("admin:tasks_taskhistory_changelist"),
    "the activity feed": lambda task: reverse("admin:activity"),
}


@pytest.mark.parametrize("where", PAGES)
def test_a_cancel_request_shows_the_status_by_its_label_and_a_cut_reason_as_cut(
    admin_site_client, admin_user, where
):
    long = asked_to_cancel(admin_user, LONG_REASON, "long one")
    short = asked_to_cancel(admin_user, SHORT_REASON, "short one")

    # A task's page shows its own history only; the lists name each row's task.
    one_task = where == "the task page"
    long_row = cancel_row(
        admin_site_client.get(PAGES[where](long)).content.decode(), "" if one_task else "long one"
    )
    short_row = cancel_row(
        admin_site_client.get(PAGES[where](short)).content.decode(), "" if one_task else "short one"
    )

    assert "In progress" in long_row and "in_progress" not in long_row
    assert escape(LONG_REASON[:64]) + "…" in long_row
    assert f'title="{escape(LONG_REASON)}"' in long_row  # the whole reason on hover
    assert SHORT_REASON in short_row and SHORT_REASON + "…" not in short_row


@pytest.mark.parametrize("where", PAGES)
def test_a_reason_a_row_from_before_0015_cut_still_shows_as_cut(
    admin_site_client, admin_user, where
):
    task = TaskFactory(name="old row", status=TaskStatus.IN_PROGRESS, attempts=1)
    task.cancel_reason = LONG_REASON
    task.save()
    TaskHistory.objects.create(  # as 0015 found it: the first 64 characters
        task=task,
        action=HistoryAction.CANCEL_REQUEST,
        from_value=TaskStatus.IN_PROGRESS,
        to_value=LONG_REASON[:64],
        performed_by=admin_user,
    )

    page = admin_site_client.get(PAGES[where](task)).content.decode()

    row = cancel_row(page, "" if where == "the task page" else "old row")
    assert escape(LONG_REASON[:64]) + "…" in row
    assert f'title="{escape(LONG_REASON)}"' in row


def test_the_history_list_reads_no_more_queries_for_its_cancel_requests(
    admin_site_client, admin_user, django_assert_max_num_queries
):
    url = reverse("admin:tasks_taskhistory_changelist")
    asked_to_cancel(admin_user, LONG_REASON, "first")
    with CaptureQueriesContext(connection) as few:
        admin_site_client.get(url)
    for number in range(10):
        asked_to_cancel(admin_user, LONG_REASON, f"more {number}")

    with django_assert_max_num_queries(len(few)):
        admin_site_client.get(url)
