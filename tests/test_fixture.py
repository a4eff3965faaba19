"""`manage.py loaddata demo`: the demo data loads, and its history tells its tasks' story."""

import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from accounts.models import Role, User
from tasks.models import (
    ALLOWED_TRANSITIONS,
    OPEN_STATUSES,
    FailureCause,
    HistoryAction,
    Task,
    TaskHistory,
    TaskStatus,
    deadline_text,
)

pytestmark = pytest.mark.django_db

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "demo-admin-pass"
NODE_EMAILS, NODE_PASSWORD = [f"node{n}@example.com" for n in (1, 2, 3)], "demo-node-pass"


@pytest.fixture
def demo():
    call_command("loaddata", "demo", verbosity=0)


def assert_history_tells_the_story(task):
    """Replay the task's history, oldest first, and land on the task as stored."""
    admin_ids = set(User.objects.filter(role=Role.ADMIN).values_list("pk", flat=True))
    rows = list(task.history.order_by("created_at", "id"))
    first, *later = rows
    assert first.action == HistoryAction.INITIAL_ASSIGN
    assert first.from_value is None
    assert first.performed_by_id in admin_ids
    assert first.created_at == task.created_at
    assert str(first.node_id) == first.to_value, f"{task.name}: the row's node"

    node, status, starts, cause, active = first.to_value, TaskStatus.PENDING, 0, "", True
    # The deadline it was created with: the first change's old value, else the one it has.
    moves = [row for row in later if row.action == HistoryAction.DEADLINE_CHANGE]
    deadline = moves[0].from_value if moves else deadline_text(task.locked_at)
    for row in later:
        assert row.created_at >= first.created_at
        # Each row names the task's node once its change is made (TaskHistory.node).
        holder = row.to_value if row.action == HistoryAction.ASSIGNEE_CHANGE else node
        assert str(row.node_id) == holder, f"{task.name}: the row's node"
        if row.action == HistoryAction.DEADLINE_CHANGE:
            assert row.from_value == deadline, f"{task.name}: deadline chain broken"
            assert row.performed_by_id in admin_ids
            deadline = row.to_value
            continue
        if row.action in (HistoryAction.SOFT_DELETE, HistoryAction.RESTORE):
            assert active is (row.action == HistoryAction.SOFT_DELETE), f"{task.name}: active"
            assert row.performed_by_id in admin_ids
            active = row.action == HistoryAction.RESTORE
            continue
        if row.action == HistoryAction.CANCEL_REQUEST:  # an admin asks; the status stays
            assert row.from_value == status and status in OPEN_STATUSES
            assert row.performed_by_id in admin_ids
            continue
        if row.action == HistoryAction.ASSIGNEE_CHANGE:
            assert row.from_value == node, f"{task.name}: assignee chain broken"
            assert row.performed_by_id in admin_ids
            node = row.to_value
            continue
        assert row.action == HistoryAction.STATUS_CHANGE
        assert row.from_value == status, f"{task.name}: status chain broken"
        if row.performed_by_id is None:  # the sweep, once the deadline in force had passed
            assert row.from_value in OPEN_STATUSES and row.to_value == TaskStatus.FAILED
            assert row.cause == FailureCause.DEADLINE
            assert datetime.fromisoformat(deadline) <= row.created_at, f"{task.name}: not due"
        elif row.performed_by_id in admin_ids:  # a reassignment sends it back, or a cancel
            assert row.to_value in (TaskStatus.PENDING, TaskStatus.CANCELLED)
        else:  # the assigned node at that moment, by the rules
            assert str(row.performed_by_id) == node
            assert row.to_value in ALLOWED_TRANSITIONS[row.from_value]
            failed_by_node = row.to_value == TaskStatus.FAILED
            assert row.cause == (FailureCause.NODE_REPORTED if failed_by_node else "")
        starts += row.to_value == TaskStatus.IN_PROGRESS
        cause = row.cause
        status = row.to_value

    assert node == str(task.assigned_node_id), f"{task.name}: latest assignee"
    assert deadline == deadline_text(task.locked_at), f"{task.name}: latest deadline"
    assert status == task.status, f"{task.name}: latest status"
    assert starts == task.attempts, f"{task.name}: attempts"
    if task.status == TaskStatus.FAILED:
        assert task.failure_cause == cause, f"{task.name}: failure cause"
    assert active == task.active, f"{task.name}: soft-deleted without its row"
    assert task.updated_at >= rows[-1].created_at


def test_the_demo_has_one_admin_and_three_nodes(demo):
    admin = User.objects.get(role=Role.ADMIN)
    assert admin.email == ADMIN_EMAIL and admin.is_staff
    nodes = User.objects.filter(role=Role.NODE).order_by("email")
    assert [node.email for node in nodes] == NODE_EMAILS
    assert all(node.is_active for node in nodes)


@override_settings(PASSWORD_HASHERS=settings.PRODUCTION_PASSWORD_HASHERS)
def test_the_demo_logins_work(demo):
    logins = [(ADMIN_EMAIL, ADMIN_PASSWORD)] + [(email, NODE_PASSWORD) for email in NODE_EMAILS]
    for email, password in logins:
        assert authenticate(username=email, password=password), email


def test_the_demo_has_tasks_in_every_status_for_every_node(demo):
    tasks = Task.objects.all()
    assert Counter(task.status for task in tasks).keys() == set(TaskStatus.values)
    assert {task.assigned_node.email for task in tasks} == set(NODE_EMAILS)
    assert tasks.filter(active=False).exists()


def test_most_deadlines_are_far_ahead_and_some_open_tasks_are_overdue(demo):
    tasks = Task.objects.all()
    far_future = [task for task in tasks if task.locked_at.year >= 2099]
    assert len(far_future) > len(tasks) / 2
    assert Task.objects.expired().count() >= 2
    assert all(task.locked_at.year < timezone.now().year for task in Task.objects.expired())


def test_every_tasks_history_is_consistent_with_the_task(demo):
    tasks = Task.objects.all()
    assert len(tasks) >= 12
    for task in tasks:
        assert_history_tells_the_story(task)


def test_the_demo_history_ids_grow_with_time(demo):
    """The activity feed and the node page read history newest first by id (keyset), as
    rows are written: a demo row out of order showed a 2020 row above 2025's."""
    times = list(TaskHistory.objects.order_by("id").values_list("created_at", flat=True))
    assert times == sorted(times)


def test_the_demo_shows_a_reassignment_and_a_sweep_failure(demo):
    actions = Counter(Task.objects.values_list("history__action", flat=True))
    assert actions[HistoryAction.ASSIGNEE_CHANGE] >= 1
    sweep_rows = Task.objects.filter(history__performed_by__isnull=True)
    assert sweep_rows.filter(history__to_value=TaskStatus.FAILED).exists()


def test_the_sweep_on_the_demo_fails_the_overdue_tasks_and_keeps_history_consistent(demo):
    overdue = set(Task.objects.expired().values_list("pk", flat=True))

    call_command("collect_failed", verbosity=0)

    assert set(Task.objects.filter(pk__in=overdue).values_list("status", flat=True)) == {"failed"}
    for task in Task.objects.all():
        assert_history_tells_the_story(task)


def test_loading_the_demo_twice_changes_nothing(demo):
    def counts():
        return Task.objects.count(), User.objects.count(), TaskHistory.objects.count()

    before = counts()
    call_command("loaddata", "demo", verbosity=0)

    assert counts() == before


def test_make_run_prints_the_demo_logins():
    makefile = (Path(settings.BASE_DIR) / "Makefile").read_text()

    assert f"login {ADMIN_EMAIL} / {ADMIN_PASSWORD}" in makefile
    printed_nodes = re.search(r"Node logins: (.*) / (\S+)", makefile)
    assert printed_nodes.group(1).split(", ") == NODE_EMAILS
    assert printed_nodes.group(2).strip("\"'") == NODE_PASSWORD
