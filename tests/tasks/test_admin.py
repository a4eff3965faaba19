"""The admin site's task pages, driven as an operator would, with a real session."""

import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from tasks.actor import acting_as
from tasks.admin import PENDING_ONLY
from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import PASSWORD, AdminFactory, NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")
ADD = reverse("admin:tasks_task_add")
FUTURE = {"locked_at_0": "2099-05-01", "locked_at_1": "12:00:00"}
# The change page carries the read-only history inline; an unchanged inline posts no forms.
NO_INLINE_FORMS = {"history-TOTAL_FORMS": "0", "history-INITIAL_FORMS": "0"}


def change_url(task):
    return reverse("admin:tasks_task_change", args=[task.pk])


def task_form(node, **overrides):
    return (
        {"name": "Rotate keys", "details": "All hosts.", "assigned_node": node.pk}
        | FUTURE
        | (overrides)
    )


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def results(response):
    return list(response.context["cl"].result_list)


def history(task):
    return list(
        TaskHistory.objects.filter(task=task)
        .order_by("created_at", "id")
        .values_list("action", "from_value", "to_value", "performed_by")
    )


def in_days(days):
    return timezone.now() + timedelta(days=days)


# --- Who may enter ------------------------------------------------------------------------


@pytest.mark.parametrize("url", [reverse("admin:index"), CHANGELIST, ADD])
def test_a_node_is_sent_to_the_login_page(node, url):
    client = Client()
    client.force_login(node)

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_an_anonymous_visitor_is_sent_to_the_login_page():
    response = Client().get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={CHANGELIST}"


def test_an_admin_logs_in_with_email_and_password_and_a_node_cannot():
    admin, node = AdminFactory(email="boss@example.com"), NodeFactory(email="worker@example.com")
    login = reverse("admin:login")

    refused = Client().post(login, {"username": node.email, "password": PASSWORD})
    assert refused.status_code == 200
    assert "staff account" in refused.content.decode()

    client = Client()
    response = client.post(login, {"username": "Boss@Example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(CHANGELIST).status_code == 200
    assert admin.is_staff


def test_a_deactivated_admin_loses_the_admin_site(admin_user, admin_site_client):
    admin_user.is_active = False
    admin_user.save()

    assert admin_site_client.get(CHANGELIST).status_code == 302


# --- The changelist -----------------------------------------------------------------------


def test_the_changelist_shows_the_tasks_with_their_node_status_and_overdue_marker(
    admin_site_client,
):
    overdue = TaskFactory(name="Late one", locked_at=in_days(-1))
    TaskFactory(name="On time")

    response = admin_site_client.get(CHANGELIST)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Late one" in page and "On time" in page
    assert overdue.assigned_node.email in page
    assert 'class="column-overdue"' in page
    assert {task.name for task in results(response)} == {"Late one", "On time"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status__exact": "in_progress"}, {"started"}),
        ({"active__exact": "0"}, {"deleted"}),
        ({"overdue": "yes"}, {"late"}),
        ({"overdue": "no"}, {"fresh", "started", "deleted", "done late"}),
    ],
)
def test_the_changelist_filters(admin_site_client, query, expected):
    TaskFactory(name="fresh")
    TaskFactory(name="started", status=TaskStatus.IN_PROGRESS)
    TaskFactory(name="deleted", active=False)
    TaskFactory(name="late", locked_at=in_days(-1))
    TaskFactory(name="done late", status=TaskStatus.COMPLETED, locked_at=in_days(-1))

    response = admin_site_client.get(CHANGELIST, query)

    assert response.status_code == 200
    assert {task.name for task in results(response)} == expected


def test_the_node_filter_offers_only_nodes_and_narrows_to_one(admin_site_client, admin_user):
    mine = TaskFactory(name="mine")
    TaskFactory(name="theirs")

    unfiltered = admin_site_client.get(CHANGELIST)
    page = unfiltered.content.decode()
    assert f"assigned_node__id__exact={mine.assigned_node_id}" in page
    assert f"assigned_node__id__exact={admin_user.pk}" not in page

    response = admin_site_client.get(
        CHANGELIST, {"assigned_node__id__exact": mine.assigned_node_id}
    )
    assert [task.name for task in results(response)] == ["mine"]


def test_an_unknown_status_filter_is_no_error(admin_site_client):
    TaskFactory()

    response = admin_site_client.get(CHANGELIST, {"status__exact": "bogus"})

    assert response.status_code == 200
    assert results(response) == []


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("rotate", {"Rotate keys"}),
        ("searchme@example.com", {"Rotate keys"}),
        ("SEARCHME", {"Rotate keys"}),
        ("no-such-thing", set()),
        ("not-a-uuid", set()),
        ("1234", set()),
    ],
)
def test_search_by_name_and_node_email(admin_site_client, term, expected):
    TaskFactory(name="Rotate keys", assigned_node=NodeFactory(email="searchme@example.com"))
    TaskFactory(name="Other")

    response = admin_site_client.get(CHANGELIST, {"q": term})

    assert response.status_code == 200
    assert {task.name for task in results(response)} == expected


def test_searching_by_node_email_joins_no_table_so_the_index_serves_the_order(
    admin_site_client,
):
    TaskFactory(assigned_node=NodeFactory(email="searchme@example.com"))

    with CaptureQueriesContext(connection) as captured:
        response = admin_site_client.get(CHANGELIST, {"q": "searchme"})

    assert len(results(response)) == 1
    page_query = re.compile(r'^SELECT [`"]tasks_task[`"]\.[`"]id[`"], .* ORDER BY ')
    (sql,) = [query["sql"] for query in captured if page_query.search(query["sql"])]
    assert "JOIN" not in sql


def test_search_by_task_id(admin_site_client):
    wanted = TaskFactory(name="Wanted")
    TaskFactory(name="Other")

    for term in (str(wanted.pk), str(wanted.pk).upper()):
        response = admin_site_client.get(CHANGELIST, {"q": term})
        assert [task.name for task in results(response)] == ["Wanted"]


def test_the_date_hierarchy_narrows_to_a_year(admin_site_client):
    TaskFactory(name="this year")
    TaskFactory(name="long ago", created_at=timezone.now().replace(year=2020))

    response = admin_site_client.get(CHANGELIST, {"created_at__year": "2020"})

    assert [task.name for task in results(response)] == ["long ago"]


def test_the_changelist_query_count_does_not_grow_with_the_tasks(
    admin_site_client, django_assert_max_num_queries
):
    TaskFactory.create_batch(3, locked_at=in_days(-1))
    with CaptureQueriesContext(connection) as few:
        assert admin_site_client.get(CHANGELIST).status_code == 200
    assert len(few) <= 10
    TaskFactory.create_batch(45)  # each on its own node

    with django_assert_max_num_queries(len(few)):
        response = admin_site_client.get(CHANGELIST)
    assert len(results(response)) == 48


def test_the_changelist_page_query_has_no_join_so_the_index_serves_its_order(
    admin_site_client,
):
    TaskFactory.create_batch(3)

    with CaptureQueriesContext(connection) as captured:
        admin_site_client.get(CHANGELIST)

    page_query = re.compile(r'^SELECT [`"]tasks_task[`"]\.[`"]id[`"], .* ORDER BY ')
    (sql,) = [query["sql"] for query in captured if page_query.search(query["sql"])]
    assert "JOIN" not in sql


# --- Adding and editing through the forms -----------------------------------------------------


def test_adding_a_task_records_its_initial_assignment_by_the_admin(admin_site_client, admin_user):
    node = NodeFactory()

    response = admin_site_client.post(ADD, task_form(node))

    assert response.status_code == 302
    task = Task.objects.get()
    assert (task.name, task.assigned_node, task.status) == ("Rotate keys", node, "pending")
    assert task.locked_at.year == 2099
    assert history(task) == [(HistoryAction.INITIAL_ASSIGN, None, str(node.pk), admin_user.pk)]


def test_the_add_page_asks_only_for_what_the_admin_sets(admin_site_client):
    response = admin_site_client.get(ADD)

    form = response.context["adminform"].form
    assert set(form.fields) == {"name", "details", "assigned_node", "locked_at"}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"locked_at_0": "2001-01-01"}, "locked_at", "The deadline must be in the future."),
        ({"locked_at_0": "tomorrow"}, "locked_at", "Enter a valid date."),
        ({"locked_at_0": "", "locked_at_1": ""}, "locked_at", "This field is required."),
        ({"name": ""}, "name", "This field is required."),
        ({"assigned_node": "not-a-user"}, "assigned_node", "“not-a-user” is not a valid UUID."),
    ],
)
def test_bad_input_on_the_add_form_is_explained_and_nothing_is_saved(
    admin_site_client, overrides, field, message
):
    response = admin_site_client.post(ADD, task_form(NodeFactory(), **overrides))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(error.startswith(message) for error in errors[field])
    assert not Task.objects.exists()
    assert not TaskHistory.objects.exists()


def test_an_admin_or_inactive_user_cannot_be_chosen_as_assignee(admin_site_client, admin_user):
    for assignee in (admin_user, NodeFactory(is_active=False)):
        response = admin_site_client.post(ADD, task_form(assignee))

        assert response.status_code == 200
        assert "assigned_node" in response.context["adminform"].form.errors
    assert not Task.objects.exists()


def test_a_status_posted_to_the_add_form_is_ignored(admin_site_client):
    admin_site_client.post(ADD, task_form(NodeFactory(), status="bogus", active=""))

    task = Task.objects.get()
    assert (task.status, task.active) == (TaskStatus.PENDING, True)


def test_changing_the_assignee_records_it_by_the_admin(admin_site_client, admin_user):
    task = TaskFactory()
    old_node, new_node = task.assigned_node, NodeFactory()

    response = admin_site_client.post(
        change_url(task), task_form(new_node, name=task.name) | NO_INLINE_FORMS
    )

    assert response.status_code == 302
    assert history(task)[1:] == [
        (HistoryAction.ASSIGNEE_CHANGE, str(old_node.pk), str(new_node.pk), admin_user.pk)
    ]


def test_renaming_a_task_records_no_history(admin_site_client):
    task = TaskFactory()

    response = admin_site_client.post(
        change_url(task), task_form(task.assigned_node, name="Renamed") | NO_INLINE_FORMS
    )

    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).name == "Renamed"
    assert len(history(task)) == 1


def test_editing_an_overdue_pending_task_asks_for_a_new_deadline(admin_site_client):
    task = TaskFactory(locked_at=in_days(-1))
    passed = timezone.localtime(task.locked_at)
    unchanged = {
        "locked_at_0": passed.strftime("%Y-%m-%d"),
        "locked_at_1": passed.strftime("%H:%M:%S"),
    }

    response = admin_site_client.post(
        change_url(task),
        task_form(task.assigned_node, name="Renamed", **unchanged) | NO_INLINE_FORMS,
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["locked_at"] == [
        "The deadline must be in the future."
    ]
    assert Task.objects.get(pk=task.pk).name == task.name


@pytest.mark.parametrize(
    "status", [TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED, TaskStatus.FAILED]
)
def test_a_started_task_is_read_only_in_its_form(admin_site_client, status):
    task = TaskFactory(status=status)

    page = admin_site_client.get(change_url(task))
    assert "name" not in page.context["adminform"].form.fields

    response = admin_site_client.post(
        change_url(task), task_form(NodeFactory(), name="Renamed") | NO_INLINE_FORMS
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        PENDING_ONLY.format(status=status)
    ]
    unchanged = Task.objects.get(pk=task.pk)
    assert (unchanged.name, unchanged.assigned_node_id) == (task.name, task.assigned_node_id)


def test_the_change_page_shows_the_history_newest_first(admin_site_client):
    task = TaskFactory()
    with acting_as(task.assigned_node):
        task.status = TaskStatus.IN_PROGRESS
        task.save()
        task.status = TaskStatus.COMPLETED
        task.save()

    response = admin_site_client.get(change_url(task))

    assert response.status_code == 200
    (inline,) = response.context["inline_admin_formsets"]
    shown = [form.original.to_value for form in inline]
    assert shown == ["completed", "in_progress", str(task.assigned_node_id)]
    assert not inline.has_add_permission
    assert not inline.has_change_permission
    assert not inline.has_delete_permission
    page = response.content.decode()
    assert page.index("Status change") < page.index("Initial assignment")
    assert escape(str(task.assigned_node)) in page  # the node by name, not only its id


def test_the_history_inline_names_the_nodes_of_a_reassignment(admin_site_client):
    task = TaskFactory(assigned_node=NodeFactory(name="Old Node"))
    task.assigned_node = NodeFactory(name="New Node")
    task.save()

    response = admin_site_client.get(change_url(task))

    (inline,) = response.context["inline_admin_formsets"]
    reassignment = next(iter(inline))
    labels = [field.contents() for fieldset in reassignment for line in fieldset for field in line]
    assert any(label.startswith("Old Node &lt;") for label in labels)
    assert any(label.startswith("New Node &lt;") for label in labels)


def test_tasks_cannot_be_hard_deleted_in_the_admin(admin_site_client):
    task = TaskFactory()

    response = admin_site_client.post(
        reverse("admin:tasks_task_delete", args=[task.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert Task.objects.filter(pk=task.pk).exists()
    actions = admin_site_client.get(CHANGELIST).context["action_form"].fields["action"].choices
    assert "delete_selected" not in {name for name, _ in actions}


# --- Actions ------------------------------------------------------------------------------------


def run_action(client, action, tasks, **extra):
    data = {"action": action, "_selected_action": [task.pk for task in tasks], "index": "0"}
    return client.post(CHANGELIST, data | extra)


def test_mark_failed_fails_open_tasks_and_records_the_admin(admin_site_client, admin_user):
    pending = TaskFactory()
    started = TaskFactory(status=TaskStatus.IN_PROGRESS)
    done = TaskFactory(status=TaskStatus.COMPLETED)

    response = run_action(admin_site_client, "mark_failed", [pending, started, done])

    assert response.status_code == 302
    assert messages_of(response) == ["Marked 2 task(s) as failed."]
    assert history(pending)[1:] == [
        (HistoryAction.STATUS_CHANGE, "pending", "failed", admin_user.pk)
    ]
    assert history(started)[1:] == [
        (HistoryAction.STATUS_CHANGE, "in_progress", "failed", admin_user.pk)
    ]
    assert Task.objects.get(pk=done.pk).status == TaskStatus.COMPLETED
    assert len(history(done)) == 1


def test_soft_delete_and_restore_flip_active_without_history(admin_site_client):
    task = TaskFactory()

    response = run_action(admin_site_client, "soft_delete", [task])
    assert messages_of(response) == ["Soft-deleted 1 task(s)."]
    assert not Task.objects.get(pk=task.pk).active

    response = run_action(admin_site_client, "restore", [task])
    assert messages_of(response)[-1] == "Restored 1 task(s)."
    assert Task.objects.get(pk=task.pk).active
    assert len(history(task)) == 1


def test_reassign_shows_an_intermediate_page_listing_the_tasks(admin_site_client):
    tasks = [TaskFactory(name="first"), TaskFactory(name="second")]

    response = run_action(admin_site_client, "reassign", tasks)

    assert response.status_code == 200
    assert [t.name for t in response.context["tasks"]] == ["second", "first"]
    page = response.content.decode()
    assert 'name="apply"' in page and 'type="datetime-local"' in page
    for task in tasks:
        assert f'value="{task.pk}"' in page
    for task in tasks:  # nothing changes until the form is applied
        assert Task.objects.get(pk=task.pk).assigned_node_id == task.assigned_node_id


def apply_reassign(client, tasks, node, locked_at="2099-07-01T09:30"):
    data = {
        "action": "reassign",
        "_selected_action": [task.pk for task in tasks],
        "apply": "Reassign",
        "node": node.pk,
        "locked_at": locked_at,
    }
    return client.post(CHANGELIST, data)


def test_reassign_applies_and_records_the_admin_leaving_completed_tasks(
    admin_site_client, admin_user
):
    failed = TaskFactory(status=TaskStatus.FAILED, locked_at=in_days(-1))
    done = TaskFactory(status=TaskStatus.COMPLETED)
    old_node, new_node = failed.assigned_node, NodeFactory()

    response = apply_reassign(admin_site_client, [failed, done], new_node)

    assert response.status_code == 302
    assert messages_of(response) == ["Reassigned 1 task(s); skipped 1 completed or soft-deleted."]
    failed.refresh_from_db()
    assert (failed.assigned_node, failed.status) == (new_node, TaskStatus.PENDING)
    assert (failed.locked_at.year, failed.locked_at.month, failed.locked_at.hour) == (2099, 7, 9)
    assert history(failed)[1:] == [
        (HistoryAction.ASSIGNEE_CHANGE, str(old_node.pk), str(new_node.pk), admin_user.pk),
        (HistoryAction.STATUS_CHANGE, "failed", "pending", admin_user.pk),
    ]
    assert Task.objects.get(pk=done.pk).assigned_node_id == done.assigned_node_id


@pytest.mark.parametrize(
    ("locked_at", "message"),
    [
        ("2001-01-01T09:00", "The deadline must be in the future."),
        ("soon", "Enter a valid date/time."),
    ],
)
def test_reassign_with_a_bad_deadline_redisplays_the_page_and_changes_nothing(
    admin_site_client, locked_at, message
):
    task = TaskFactory(status=TaskStatus.FAILED)

    response = apply_reassign(admin_site_client, [task], NodeFactory(), locked_at=locked_at)

    assert response.status_code == 200
    assert response.context["form"].errors["locked_at"] == [message]
    assert Task.objects.get(pk=task.pk).assigned_node_id == task.assigned_node_id
    assert len(history(task)) == 1


def test_reassign_refuses_an_admin_as_the_new_node(admin_site_client, admin_user):
    task = TaskFactory()

    response = apply_reassign(admin_site_client, [task], admin_user)

    assert response.status_code == 200
    assert "node" in response.context["form"].errors
    assert Task.objects.get(pk=task.pk).assigned_node_id == task.assigned_node_id


# --- The history admin is read-only -------------------------------------------------------------


@pytest.mark.parametrize("term", ["task-id", "Wanted", "not-a-uuid"])
def test_the_history_list_searches_by_task_id_and_name(admin_site_client, term):
    wanted = TaskFactory(name="Wanted")
    TaskFactory(name="Other")
    query = str(wanted.pk) if term == "task-id" else term

    response = admin_site_client.get(reverse("admin:tasks_taskhistory_changelist"), {"q": query})

    assert response.status_code == 200
    found = {row.task_id for row in response.context["cl"].result_list}
    assert found == (set() if term == "not-a-uuid" else {wanted.pk})


def test_history_pages_are_read_only(admin_site_client):
    row = TaskFactory().history.get()
    change = reverse("admin:tasks_taskhistory_change", args=[row.pk])

    listing = admin_site_client.get(reverse("admin:tasks_taskhistory_changelist"))
    assert listing.status_code == 200
    assert listing.context["action_form"] is None  # not even "delete selected"

    view = admin_site_client.get(change)
    assert view.status_code == 200
    assert view.context["has_change_permission"] is False

    assert admin_site_client.get(reverse("admin:tasks_taskhistory_add")).status_code == 403
    assert admin_site_client.post(change, {"to_value": "x"}).status_code == 403
    delete = reverse("admin:tasks_taskhistory_delete", args=[row.pk])
    assert admin_site_client.post(delete, {"post": "yes"}).status_code == 403
    assert TaskHistory.objects.get(pk=row.pk).to_value == str(row.task.assigned_node_id)


@pytest.mark.parametrize("cause", ["node_reported", "deadline", "node_lost", "admin"])
def test_the_changelist_filters_by_failure_cause(admin_site_client, cause):
    for each in ("node_reported", "deadline", "node_lost", "admin"):
        TaskFactory(name=each, status=TaskStatus.FAILED, failure_cause=each)
    TaskFactory(name="open")

    response = admin_site_client.get(CHANGELIST, {"failure_cause__exact": cause})

    assert [task.name for task in results(response)] == [cause]


def test_the_change_page_shows_attempts_and_the_failure_read_only(admin_site_client):
    task = TaskFactory(
        status=TaskStatus.FAILED, attempts=2, failure_cause="node_reported", failure_reason="OOM"
    )

    page = admin_site_client.get(change_url(task)).content.decode()

    assert "Reported by its node" in page and "OOM" in page
    assert 'name="failure_reason"' not in page and 'name="attempts"' not in page
