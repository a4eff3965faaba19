"""The admin site's task pages, driven as an operator would, with a real session."""

import html
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from nodes import heartbeats
from nodes.models import Node
from nodes.services import node_cordon, node_uncordon
from tasks.actor import acting_as
from tasks.admin import DELETED_READ_ONLY, PENDING_ONLY
from tasks.models import (
    HistoryAction,
    SweepRun,
    Task,
    TaskHistory,
    TaskStatus,
    deadline_text,
)
from tasks.services import task_assign, tasks_expire
from tests.factories import PASSWORD, AdminFactory, NodeFactory, TaskFactory
from tests.redis_server import redis_cache, redis_database

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")
ADD = reverse("admin:tasks_task_add")
FUTURE = {"locked_at_0": "2099-05-01", "locked_at_1": "12:00:00"}
# The change page carries the read-only history inline; an unchanged inline posts no forms.
# This module's database of the tests' redis-server (tests/redis_server.py).
BEATS_REDIS_DB = 3
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
    assert "Node accounts use the API" in refused.content.decode()

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


def test_an_empty_value_is_one_dash_everywhere_in_the_admin(admin_site_client):
    """Django's own empty cells said "-", the project's "—": one of them, the long one."""
    task = TaskFactory(name="On time", status=TaskStatus.COMPLETED)

    page = admin_site_client.get(reverse("admin:tasks_task_change", args=[task.pk]))
    listed = admin_site_client.get(CHANGELIST)

    cells = re.findall(r'<div class="readonly">([^<]*)</div>', page.content.decode())
    assert "—" in cells and "-" not in cells  # failure cause, progress, result...
    overdue = re.findall(r'<td class="field-overdue">([^<]*)</td>', listed.content.decode())
    assert overdue == ["—"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status__exact": "in_progress"}, {"started"}),
        ({}, {"fresh", "started", "late", "done late"}),
        ({"deleted": "only"}, {"deleted"}),
        ({"deleted": "all"}, {"fresh", "started", "deleted", "late", "done late"}),
        ({"deleted": "bogus"}, {"fresh", "started", "late", "done late"}),
        ({"overdue": "yes"}, {"late"}),
        ({"overdue": "no"}, {"fresh", "started", "done late"}),
        ({"overdue": "no", "deleted": "all"}, {"fresh", "started", "deleted", "done late"}),
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


@pytest.mark.parametrize(
    ("failover", "then"),
    [
        ("off", "its pending tasks wait until it beats again (FAILOVER is off)."),
        ("reassign", "the sweep's failover moves its pending tasks to a live node."),
    ],
)
def test_a_task_given_to_a_down_node_says_so(admin_site_client, settings, failover, then):
    """Nothing will start it there: said when the task is saved, not found out later."""
    settings.FAILOVER = failover
    down = NodeFactory(last_seen=timezone.now() - timedelta(hours=2, minutes=5))

    response = admin_site_client.post(ADD, task_form(down))

    assert response.status_code == 302
    assert f"{down} is down (last seen 2 h 5 min ago): {then}" in messages_of(response)


def test_a_down_node_s_warning_says_when_the_failover_guard_holds(admin_site_client, settings):
    """Two of three recently alive nodes down: the sweep fails nobody over
    (FAILOVER_MAX_DOWN_SHARE), so the warning must not promise a move."""
    settings.FAILOVER = "reassign"
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30
    NodeFactory(last_seen=timezone.now())
    down, _ = NodeFactory.create_batch(2, last_seen=timezone.now() - timedelta(seconds=60))

    response = admin_site_client.post(ADD, task_form(down))

    (warning,) = [message for message in messages_of(response) if "is down" in message]

    assert "too many nodes are down at once" in warning and "FAILOVER_MAX_DOWN_SHARE" in warning
    assert "moves" not in warning


def test_a_broadcast_s_task_edited_onto_a_down_node_is_said_to_fail_not_move(
    admin_site_client, settings
):
    settings.FAILOVER = "reassign"
    down = NodeFactory(last_seen=timezone.now() - timedelta(hours=2))
    task = TaskFactory(assigned_node=down, pinned=True)

    response = admin_site_client.post(change_url(task), task_form(down) | NO_INLINE_FORMS)

    (warning,) = [message for message in messages_of(response) if "is down" in message]
    assert "fails this task for a human (a broadcast's, pinned to it)" in warning


def test_a_task_given_to_a_live_or_new_node_gets_no_warning(admin_site_client):
    for node in (NodeFactory(last_seen=timezone.now()), NodeFactory(last_seen=None)):
        response = admin_site_client.post(ADD, task_form(node))
        assert response.status_code == 302
        assert not [text for text in messages_of(response) if "is down" in text]


def test_a_down_node_s_beat_waiting_in_redis_counts(admin_site_client, settings):
    """Beats are written to the database in batches: the last one may be in Redis only."""
    with redis_database(BEATS_REDIS_DB) as url:
        settings.CACHES = redis_cache(url)
        settings.NODE_HEARTBEAT_FLUSH_SECONDS = 60
        node = NodeFactory(last_seen=timezone.now() - timedelta(hours=2))
        # The first beat after a flush interval is flushed at once; the next one waits.
        heartbeats.record(node_id=NodeFactory().pk, now=timezone.now())
        heartbeats.record(node_id=node.pk, now=timezone.now())
        assert heartbeats.pending([node.pk])

        response = admin_site_client.post(ADD, task_form(node))

    assert response.status_code == 302
    assert not [text for text in messages_of(response) if "is down" in text]


def test_the_add_page_asks_only_for_what_the_admin_sets(admin_site_client):
    response = admin_site_client.get(ADD)

    form = response.context["adminform"].form
    assert set(form.fields) == {
        *("name", "details", "assigned_node", "locked_at"),
        *("priority", "node_selector"),  # placement (docs/placement.md)
        "payload",  # the work data (docs/api.md); the add page had no way to give one
    }


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


def unchanged_form(task, **overrides):
    """The change form as the page shows it, with `overrides` typed in."""
    deadline = timezone.localtime(task.locked_at)
    return (
        {
            "name": task.name,
            "details": task.details,
            "assigned_node": task.assigned_node_id,
            "locked_at_0": deadline.strftime("%Y-%m-%d"),
            "locked_at_1": deadline.strftime("%H:%M:%S"),  # as the widget shows it
        }
        | NO_INLINE_FORMS
        | overrides
    )


def test_changing_the_assignee_records_it_by_the_admin(admin_site_client, admin_user):
    task = TaskFactory()
    old_node, new_node = task.assigned_node, NodeFactory()

    response = admin_site_client.post(
        change_url(task), unchanged_form(task, assigned_node=new_node.pk)
    )

    assert response.status_code == 302
    assert history(task)[1:] == [
        (HistoryAction.ASSIGNEE_CHANGE, str(old_node.pk), str(new_node.pk), admin_user.pk)
    ]


def test_renaming_a_task_records_an_edit_of_its_name(admin_site_client, admin_user):
    task = TaskFactory()

    response = admin_site_client.post(change_url(task), unchanged_form(task, name="Renamed"))

    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).name == "Renamed"
    assert history(task)[1:] == [(HistoryAction.EDIT, None, "taskName", admin_user.pk)]


def test_saving_the_form_unchanged_records_nothing(admin_site_client):
    task = TaskFactory(locked_at=in_days(1).replace(microsecond=123456))

    response = admin_site_client.post(change_url(task), unchanged_form(task))

    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).locked_at == task.locked_at
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
    # The status as the page shows it ("in progress"), never its stored "in_progress".
    assert response.context["adminform"].form.non_field_errors() == [
        PENDING_ONLY.format(status=status.label.lower())
    ]
    unchanged = Task.objects.get(pk=task.pk)
    assert (unchanged.name, unchanged.assigned_node_id) == (task.name, task.assigned_node_id)


UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def visible_text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def inline_html(response) -> str:
    page = response.content.decode()
    return page[
        page.index('id="history-group"') : page.index(
            "</fieldset>", page.index('id="history-group"')
        )
    ]


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
    history_part = inline_html(response)
    assert history_part.index("Status change") < history_part.index("Initial assignment")
    assert escape(task.assigned_node.name) in history_part  # the node by name


def test_the_history_inline_names_nodes_people_and_the_system_never_raw_ids(
    admin_site_client, admin_user
):
    admin_user.name = "Ada Admin"
    admin_user.save()
    old_node, new_node = NodeFactory(name="Old Node"), NodeFactory(name="New Node")
    task = TaskFactory(assigned_node=old_node)  # nobody acting: the system
    with acting_as(admin_user):
        task_assign(task_id=task.pk, node=new_node, locked_at=in_days(3))

    response = admin_site_client.get(change_url(task))

    part = inline_html(response)
    text = visible_text(part)
    assert not UUID_TEXT.search(text), text
    assert "None" not in text
    for words in ("Old Node", "New Node", "Ada Admin", "system (sweep)", "Deadline change"):
        assert words in text
    assert f"?assigned_node__id__exact={new_node.pk}" in part  # each node links to its tasks


def test_the_history_inline_shows_the_cause_of_a_failure(admin_site_client):
    task = TaskFactory(locked_at=in_days(-1))
    tasks_expire(batch_size=10)

    response = admin_site_client.get(change_url(task))

    assert "Deadline passed" in visible_text(inline_html(response))


def test_tasks_cannot_be_hard_deleted_in_the_admin(admin_site_client):
    task = TaskFactory()

    response = admin_site_client.post(
        reverse("admin:tasks_task_delete", args=[task.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert Task.objects.filter(pk=task.pk).exists()
    actions = admin_site_client.get(CHANGELIST).context["action_form"].fields["action"].choices
    assert "delete_selected" not in {name for name, _ in actions}


@pytest.mark.parametrize(
    ("state", "editable"),
    [
        ({}, True),
        ({"status": TaskStatus.IN_PROGRESS}, False),
        ({"status": TaskStatus.COMPLETED}, False),
        ({"status": TaskStatus.FAILED}, False),
        ({"active": False}, False),
    ],
)
def test_only_an_editable_task_shows_save_buttons(admin_site_client, state, editable):
    task = TaskFactory(**state)

    page = admin_site_client.get(change_url(task)).content.decode()

    for button in ('name="_save"', 'name="_continue"', 'name="_addanother"'):
        assert (button in page) is editable
    assert ("View task" in page) is not editable


def test_a_soft_deleted_task_cannot_be_edited_by_a_stale_form(admin_site_client):
    task = TaskFactory(active=False)

    response = admin_site_client.post(change_url(task), unchanged_form(task, name="Renamed"))

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [DELETED_READ_ONLY]
    assert Task.objects.get(pk=task.pk).name == task.name


# --- The changelist reads right ---------------------------------------------------------------


def row_of(page: str, name: str) -> str:
    start = page.index(f">{name}<")
    return page[page.rindex("<tr", 0, start) : page.index("</tr>", start)]


def test_overdue_is_a_red_alarm_and_on_time_shows_nothing(admin_site_client):
    TaskFactory(name="Late one", locked_at=in_days(-1))
    TaskFactory(name="On time")

    page = admin_site_client.get(CHANGELIST).content.decode()

    late, on_time = row_of(page, "Late one"), row_of(page, "On time")
    assert 'class="task-overdue">overdue<' in late
    assert "task-overdue" not in on_time
    assert "icon-yes" not in late.split("field-overdue")[1].split("</td>")[0]
    assert "tasks/admin.css" in page


@pytest.mark.parametrize("status", TaskStatus.values)
def test_each_status_has_its_own_colour_class(admin_site_client, status):
    TaskFactory(name="one", status=status)

    page = admin_site_client.get(CHANGELIST).content.decode()

    assert f'class="task-status task-status-{status}"' in row_of(page, "one")


def test_every_status_badge_has_a_background_of_its_own_in_the_stylesheet():
    # The badge's text is white (tasks/admin.css): a status without its rule was
    # white on white, unreadable ("Cancelled" was, in the task list).
    css = Path(finders.find("tasks/admin.css")).read_text()
    backgrounds = {
        status: re.search(rf"\.task-status-{status}\s*\{{[^}}]*background:\s*([^;]+);", css)
        for status in TaskStatus.values
    }

    assert {status for status, rule in backgrounds.items() if rule is None} == set()
    colours = {rule.group(1).strip() for rule in backgrounds.values()}
    assert len(colours) == len(TaskStatus.values)


def test_the_node_in_a_row_links_to_that_nodes_tasks(admin_site_client):
    node = NodeFactory(name="Worker Bee")
    TaskFactory(name="mine", assigned_node=node)
    TaskFactory(name="theirs")

    page = admin_site_client.get(CHANGELIST).content.decode()
    link = f'href="{CHANGELIST}?assigned_node__id__exact={node.pk}"'
    assert link in row_of(page, "mine")
    assert ">Worker Bee</a>" in row_of(page, "mine")

    response = admin_site_client.get(CHANGELIST, {"assigned_node__id__exact": node.pk})
    assert [task.name for task in results(response)] == ["mine"]


def test_the_date_drill_down_offers_every_year_from_the_first_task_to_the_last(
    admin_site_client,
):
    TaskFactory(name="this year")
    TaskFactory(name="long ago", created_at=timezone.now().replace(year=2021))

    with CaptureQueriesContext(connection) as captured:
        page = admin_site_client.get(CHANGELIST).content.decode()

    years = re.findall(r"created_at__year=(\d{4})", page)
    assert years == [str(year) for year in range(2021, timezone.now().year + 1)]
    assert not [q["sql"] for q in captured if "DISTINCT" in q["sql"].upper()]


def test_the_date_drill_down_goes_from_a_year_to_its_months_and_days(admin_site_client):
    TaskFactory(created_at=timezone.now().replace(year=2021, month=3, day=5))
    TaskFactory(created_at=timezone.now().replace(year=2021, month=5, day=9))
    TaskFactory(created_at=timezone.now().replace(year=2022, month=1, day=1))

    months = admin_site_client.get(CHANGELIST, {"created_at__year": "2021"}).content.decode()
    assert re.findall(r"created_at__month=(\d+)", months) == ["3", "4", "5"]

    days = admin_site_client.get(
        CHANGELIST, {"created_at__year": "2021", "created_at__month": "3"}
    ).content.decode()
    assert re.findall(r"created_at__day=(\d+)", days) == ["5"]


def test_the_date_drill_down_of_an_empty_list_offers_nothing(admin_site_client):
    response = admin_site_client.get(CHANGELIST)

    assert response.status_code == 200
    assert "created_at__year=" not in response.content.decode()


# --- Actions ------------------------------------------------------------------------------------


def run_action(client, action, tasks, query="", **extra):
    """Post an action as the changelist does; `query` is the list's filters."""
    data = {"action": action, "_selected_action": [task.pk for task in tasks], "index": "0"}
    return client.post(f"{CHANGELIST}?{query}", data | extra)


def confirm_action(client, action, tasks, query="", **extra):
    """Post it as its confirmation page does."""
    data = {"action": action, "_selected_action": [task.pk for task in tasks], "apply": "yes"}
    return client.post(f"{CHANGELIST}?{query}", data | extra)


@pytest.mark.parametrize("action", ["mark_failed", "soft_delete", "reassign"])
def test_a_changing_action_first_asks_on_a_page_listing_the_tasks(admin_site_client, action):
    tasks = [TaskFactory(name="first"), TaskFactory(name="second")]

    response = run_action(admin_site_client, action, tasks)

    assert response.status_code == 200
    assert [t.name for t in response.context["tasks"]] == ["second", "first"]
    page = response.content.decode()
    assert 'name="apply"' in page and f'name="action" value="{action}"' in page
    for task in tasks:
        assert f'value="{task.pk}"' in page
    for task in tasks:  # nothing changes until the page is confirmed
        stored = Task.objects.get(pk=task.pk)
        assert (stored.status, stored.active, stored.assigned_node_id) == (
            TaskStatus.PENDING,
            True,
            task.assigned_node_id,
        )
        assert len(history(task)) == 1


def test_the_confirmation_page_keeps_a_selection_across_every_page(admin_site_client):
    shown, *_ = TaskFactory.create_batch(3)

    response = run_action(admin_site_client, "soft_delete", [shown], select_across="1")
    assert 'name="select_across" value="1"' in response.content.decode()

    confirmed = confirm_action(admin_site_client, "soft_delete", [shown], select_across="1")
    assert messages_of(confirmed) == ["Soft-deleted 3 task(s)."]
    assert not Task.objects.filter(active=True).exists()


def test_mark_failed_fails_open_tasks_and_says_what_it_skipped(admin_site_client, admin_user):
    pending = TaskFactory()
    started = TaskFactory(status=TaskStatus.IN_PROGRESS)
    done = TaskFactory(status=TaskStatus.COMPLETED)
    failed = TaskFactory(status=TaskStatus.FAILED)
    deleted = TaskFactory(active=False)

    response = confirm_action(
        admin_site_client,
        "mark_failed",
        [pending, started, done, failed, deleted],
        query="deleted=all",
    )

    assert response.status_code == 302
    assert messages_of(response) == [
        "Marked failed 2 task(s). Skipped 3: 1 already completed, 1 already failed, 1 soft-deleted."
    ]
    assert history(pending)[1:] == [
        (HistoryAction.STATUS_CHANGE, "pending", "failed", admin_user.pk)
    ]
    assert history(started)[1:] == [
        (HistoryAction.STATUS_CHANGE, "in_progress", "failed", admin_user.pk)
    ]
    assert Task.objects.get(pk=done.pk).status == TaskStatus.COMPLETED
    assert len(history(done)) == 1


def test_soft_delete_and_restore_record_who_and_say_what_they_skipped(
    admin_site_client, admin_user
):
    task, gone = TaskFactory(), TaskFactory(active=False)

    response = confirm_action(admin_site_client, "soft_delete", [task, gone], "deleted=all")
    assert messages_of(response) == ["Soft-deleted 1 task(s). Skipped 1: 1 already soft-deleted."]
    assert not Task.objects.get(pk=task.pk).active

    response = run_action(admin_site_client, "restore", [task, TaskFactory()], "deleted=all")
    assert messages_of(response)[-1] == "Restored 1 task(s). Skipped 1: 1 not soft-deleted."
    assert Task.objects.get(pk=task.pk).active
    assert history(task)[1:] == [
        (HistoryAction.SOFT_DELETE, None, None, admin_user.pk),
        (HistoryAction.RESTORE, None, None, admin_user.pk),
    ]
    assert len(history(gone)) == 1


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
    old_deadline = failed.locked_at

    response = apply_reassign(admin_site_client, [failed, done], new_node)

    assert response.status_code == 302
    assert messages_of(response) == [
        f"Reassigned 1 task(s) to {new_node}. Skipped 1: 1 completed. "
        "Set 1 deadline(s) to 2099-07-01 09:30 UTC."
    ]
    failed.refresh_from_db()
    assert (failed.assigned_node, failed.status) == (new_node, TaskStatus.PENDING)
    assert (failed.locked_at.year, failed.locked_at.month, failed.locked_at.hour) == (2099, 7, 9)
    assert history(failed)[1:] == [
        (HistoryAction.ASSIGNEE_CHANGE, str(old_node.pk), str(new_node.pk), admin_user.pk),
        (HistoryAction.STATUS_CHANGE, "failed", "pending", admin_user.pk),
        (
            HistoryAction.DEADLINE_CHANGE,
            deadline_text(old_deadline),
            "2099-07-01T09:30:00Z",
            admin_user.pk,
        ),
    ]
    assert Task.objects.get(pk=done.pk).assigned_node_id == done.assigned_node_id


def test_reassigning_to_a_down_node_says_so(admin_site_client):
    failed = TaskFactory(status=TaskStatus.FAILED, locked_at=in_days(-1))
    down = NodeFactory(last_seen=timezone.now() - timedelta(days=3))

    response = apply_reassign(admin_site_client, [failed], down)

    assert messages_of(response)[-1].startswith(f"{down} is down (last seen 3 d ago)")


@pytest.mark.parametrize(
    "pinned, then",
    [
        (0, "the sweep's failover moves its pending tasks to a live node."),
        # It said the pinned ones move too: a broadcast's task is failed, never moved.
        (
            1,
            "the sweep's failover moves its pending tasks to a live node, but fails 1 of these"
            " for a human (a broadcast's, pinned to it).",
        ),
        (2, "the sweep's failover fails these tasks for a human (a broadcast's, pinned to it)."),
    ],
)
def test_reassigning_a_broadcast_s_tasks_to_a_down_node_says_they_fail(
    admin_site_client, settings, pinned, then
):
    settings.FAILOVER = "reassign"
    down = NodeFactory(last_seen=timezone.now() - timedelta(days=3))
    tasks = [TaskFactory(status=TaskStatus.FAILED, pinned=n < pinned) for n in range(2)]

    response = apply_reassign(admin_site_client, tasks, down)

    assert messages_of(response)[-1] == f"{down} is down (last seen 3 d ago): {then}"


def test_reassign_without_a_deadline_gives_expired_tasks_a_fresh_one(admin_site_client, settings):
    settings.REASSIGN_DEADLINE_MINUTES = 60
    expired = TaskFactory(status=TaskStatus.FAILED, locked_at=in_days(-1), failure_cause="deadline")
    far = TaskFactory(status=TaskStatus.FAILED, locked_at=in_days(2))

    before = timezone.now()
    target = NodeFactory()
    response = apply_reassign(admin_site_client, [expired, far], target, locked_at="")

    assert messages_of(response) == [
        f"Reassigned 2 task(s) to {target}. "
        "Renewed 1 stale deadline(s) to now + 60 min; 1 kept their own."
    ]
    expired.refresh_from_db()
    assert (
        before + timedelta(minutes=60)
        <= expired.locked_at
        <= timezone.now() + timedelta(minutes=60)
    )
    assert expired.failure_cause == ""
    assert Task.objects.get(pk=far.pk).locked_at == far.locked_at
    assert [row[0] for row in history(far)[1:]] == [
        HistoryAction.ASSIGNEE_CHANGE,
        HistoryAction.STATUS_CHANGE,
    ]


def test_the_reassign_page_says_how_many_move_and_which_deadlines_renew(
    admin_site_client, settings
):
    settings.REASSIGN_DEADLINE_MINUTES = 60
    stale = TaskFactory(status=TaskStatus.FAILED, locked_at=in_days(-1))
    kept = TaskFactory(status=TaskStatus.IN_PROGRESS, locked_at=in_days(2))
    done = TaskFactory(status=TaskStatus.COMPLETED)

    response = run_action(admin_site_client, "reassign", [stale, kept, done])

    page = html.unescape(response.content.decode())
    assert "2 of the selected tasks go back to pending" in page
    assert "(1 of them in progress" in page
    assert "1 have a deadline that has passed or is less than 60 min away" in page
    assert "The other 1 keep their own deadline." in page
    assert 'value="Reassign 2 task(s)"' in page
    # No deadline is offered for everyone, and no setting's name is shown.
    assert 'name="locked_at"' in page and "REASSIGN_DEADLINE_MINUTES" not in page
    assert not re.search(r'name="locked_at"[^>]*value=', page)


@pytest.mark.parametrize("action", ["mark_failed", "cancel_tasks"])
def test_a_confirmation_with_nothing_to_change_offers_no_button(admin_site_client, action):
    done = TaskFactory(status=TaskStatus.COMPLETED)

    page = html.unescape(run_action(admin_site_client, action, [done]).content.decode())

    assert "0 of the 1 selected task(s) change." in page
    assert 'name="apply"' not in page
    assert "No, take me back" in page


def test_the_reassign_page_names_a_node_s_liveness_unless_alive(admin_site_client):
    task = TaskFactory(status=TaskStatus.FAILED)
    alive = NodeFactory(last_seen=timezone.now())
    down = NodeFactory(last_seen=timezone.now() - timedelta(days=1))
    new = NodeFactory(last_seen=None)

    page = html.unescape(run_action(admin_site_client, "reassign", [task]).content.decode())

    assert f">{alive}</option>" in page
    assert f">{down} (down)</option>" in page
    assert f">{new} (never seen)</option>" in page


def test_the_task_form_names_a_node_s_liveness_unless_alive(admin_site_client):
    """As the reassign lists: a down node is offered on the add and edit pages too, and
    must not look like the rest (the warning came only after the save)."""
    alive = NodeFactory(last_seen=timezone.now())
    down = NodeFactory(last_seen=timezone.now() - timedelta(days=1))
    new = NodeFactory(last_seen=None)
    task = TaskFactory(assigned_node=alive)

    for url in (ADD, change_url(task)):
        page = html.unescape(admin_site_client.get(url).content.decode())

        assert f">{alive}</option>" in page
        assert f">{down} (down)</option>" in page
        assert f">{new} (never seen)</option>" in page


def test_the_reassign_page_says_why_it_offers_no_node(admin_site_client, admin_user):
    task = TaskFactory(status=TaskStatus.FAILED)
    for node in Node.objects.all():
        node_cordon(node_id=node.pk, reason="maintenance", actor=admin_user)

    page = html.unescape(run_action(admin_site_client, "reassign", [task]).content.decode())

    assert "No node is schedulable: every active node is cordoned" in page
    node_uncordon(node_id=task.assigned_node_id, reason="back", actor=admin_user)
    page = html.unescape(run_action(admin_site_client, "reassign", [task]).content.decode())
    assert "No node is schedulable" not in page


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


def test_the_task_pages_history_button_leads_to_the_tasks_audit_history(admin_site_client):
    # Made as the API makes them: Django's own change log (LogEntry) knows nothing of them.
    task = TaskFactory(name="Nightly export", status=TaskStatus.FAILED)
    other = TaskFactory(name="Other")
    task_assign(task_id=task.pk, node=NodeFactory())
    page = admin_site_client.get(change_url(task)).content.decode()
    history_link = reverse("admin:tasks_task_history", args=[task.pk])

    response = admin_site_client.get(history_link, follow=True)

    assert f'href="{history_link}"' in page  # the object tools' HISTORY button
    assert response.redirect_chain == [
        (f"{reverse('admin:tasks_taskhistory_changelist')}?task__id__exact={task.pk}", 302)
    ]
    rows = results(response)
    assert {row.task_id for row in rows} == {task.pk} and other.pk not in {r.task_id for r in rows}
    assert len(rows) == TaskHistory.objects.filter(task=task).count() >= 3
    assert "have a change history" not in response.content.decode()
    assert "History of Nightly export" in response.content.decode()


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


def a_sweep_run():
    now = timezone.now()
    return SweepRun.objects.create(started_at=now, finished_at=now, failed_count=1)


@pytest.mark.parametrize(
    "name, record",
    [("sweeprun", a_sweep_run), ("taskhistory", lambda: TaskFactory().history.get())],
)
def test_a_records_page_has_no_history_button_and_no_history_page(admin_site_client, name, record):
    """Django's change log holds nothing of what the system writes: its HISTORY page
    said only "This object doesn't have a change history"."""
    pk = record().pk
    history = reverse(f"admin:tasks_{name}_history", args=[pk])

    page = admin_site_client.get(reverse(f"admin:tasks_{name}_change", args=[pk]))

    assert page.status_code == 200
    assert 'class="object-tools"' not in page.content.decode()
    assert f'href="{history}"' not in page.content.decode()
    assert admin_site_client.get(history).status_code == 404


def test_a_tasks_page_keeps_its_history_button(admin_site_client):
    task = TaskFactory()
    history = reverse("admin:tasks_task_history", args=[task.pk])

    page = admin_site_client.get(change_url(task)).content.decode()

    assert f'href="{history}"' in page


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


def test_the_history_list_names_people_nodes_and_the_system_and_links_each_task(
    admin_site_client, admin_user
):
    admin_user.name = "Ada Admin"
    admin_user.save()
    first, second = NodeFactory(name="First Node"), NodeFactory(name="Second Node")
    task = TaskFactory(name="Rotate", assigned_node=first, status=TaskStatus.FAILED)
    with acting_as(admin_user):
        task_assign(task_id=task.pk, node=second, locked_at=in_days(3))

    response = admin_site_client.get(reverse("admin:tasks_taskhistory_changelist"))

    rows = list(response.context["cl"].result_list)
    assert [row.pk for row in rows] == sorted((row.pk for row in rows), reverse=True)
    page = response.content.decode()
    text = visible_text(page[page.index('id="result_list"') :])
    assert not UUID_TEXT.search(text), text
    assert "None" not in text
    for words in ("First Node", "Second Node", "Ada Admin", "system (sweep)", "Failed"):
        assert words in text
    assert f'href="{change_url(task)}">Rotate</a>' in page


def test_the_history_list_reads_the_nodes_of_a_page_in_one_query(
    admin_site_client, django_assert_max_num_queries
):
    TaskFactory()
    with CaptureQueriesContext(connection) as few:
        admin_site_client.get(reverse("admin:tasks_taskhistory_changelist"))
    TaskFactory.create_batch(20)  # each on its own node

    with django_assert_max_num_queries(len(few)):
        response = admin_site_client.get(reverse("admin:tasks_taskhistory_changelist"))
    assert len(response.context["cl"].result_list) == 21


def test_one_history_rows_page_names_its_node(admin_site_client):
    row = TaskFactory(assigned_node=NodeFactory(name="Solo Node")).history.get()

    response = admin_site_client.get(reverse("admin:tasks_taskhistory_change", args=[row.pk]))

    assert "Solo Node" in response.content.decode()


# --- Around the task pages -------------------------------------------------------------------


def test_an_unknown_admin_page_is_the_admins_html_404_and_the_api_keeps_json(
    admin_site_client, settings
):
    settings.DEBUG = False

    response = admin_site_client.get("/admin/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert "admin/404.html" in [template.name for template in response.templates]
    assert "taskmgmt administration" in response.content.decode()
    api = admin_site_client.get("/api/no-such-page")
    assert (api.status_code, api["Content-Type"]) == (404, "application/json; charset=utf-8")


def test_the_header_has_no_view_site_link_to_a_page_that_does_not_exist(admin_site_client):
    page = admin_site_client.get(reverse("admin:index")).content.decode()

    assert "View site" not in page


@pytest.mark.parametrize("url", ["/admin/auth/group/", "/admin/token_blacklist/outstandingtoken/"])
def test_groups_and_the_token_blacklist_are_not_offered(admin_site_client, url):
    index = admin_site_client.get(reverse("admin:index")).content.decode()

    assert url not in index
    assert admin_site_client.get(url).status_code == 404


def test_the_soft_deleted_filter_counts_its_choices_when_asked(admin_site_client):
    TaskFactory.create_batch(2)
    TaskFactory(active=False)

    page = admin_site_client.get(CHANGELIST, {"_facets": "True"}).content.decode()

    for label in ("Active only (2)", "Soft-deleted only (1)", "Active and soft-deleted (3)"):
        assert label in page


@pytest.mark.parametrize("query", ["node=bogus", "actor=bogus", "actor=12", "node=%00"])
def test_the_history_list_answers_a_hand_edited_node_or_actor_like_any_bad_filter(
    admin_site_client, query
):
    """Not a UUID (nor "system"): Django's "?e=1" redirect, as for any bad lookup, not a 500."""
    TaskFactory()

    response = admin_site_client.get(f"{reverse('admin:tasks_taskhistory_changelist')}?{query}")

    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_the_history_lists_filters_read_as_english(admin_site_client):
    """Django titles a filter "By <title>": the actor filter read "By by"."""
    TaskFactory()

    page = admin_site_client.get(reverse("admin:tasks_taskhistory_changelist")).content.decode()

    assert "By actor" in page and "By node" in page
    assert "By by" not in page


@pytest.mark.parametrize(
    "query",
    ["created_at__year=" + "9" * 20, "created_at__year=2026&created_at__month=" + "9" * 21],
)
def test_the_task_list_answers_a_date_too_large_for_python_like_any_bad_date(
    admin_site_client, query
):
    """Django's date drill-down turns a ValueError into "?e=1" but not an OverflowError."""
    response = admin_site_client.get(f"{reverse('admin:tasks_task_changelist')}?{query}")

    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def task_form_pages(client, task) -> list[str]:
    """The task form both ways: the add page and a pending task's page."""
    urls = (reverse("admin:tasks_task_add"), reverse("admin:tasks_task_change", args=[task.pk]))
    return [client.get(url).content.decode() for url in urls]


def test_the_deadlines_date_and_time_boxes_have_names_of_their_own(admin_site_client, node):
    """Django's split widget labels neither box: "Date:" and "Time:" are bare text."""
    for page in task_form_pages(admin_site_client, TaskFactory(assigned_node=node)):
        for part, box in (("date", 0), ("time", 1)):
            named = rf'<input[^>]*aria-label="Deadline {part} \(UTC\)"[^>]*id="id_locked_at_{box}"'
            assert re.search(named, page)


def test_one_tasks_history_leads_back_to_the_task_in_its_breadcrumbs(admin_site_client):
    task = TaskFactory(name="Rebuild the index")

    page = admin_site_client.get(reverse("admin:tasks_task_history", args=[task.pk]), follow=True)

    crumbs = page.content.decode().split('class="breadcrumbs"')[1].split("</div>")[0]
    assert f'href="{reverse("admin:tasks_task_change", args=[task.pk])}"' in crumbs
    assert "Rebuild the index" in crumbs


def test_the_task_form_offers_no_delete_of_its_node(admin_site_client, node):
    """Django's red cross beside the node list opened "Delete user" from a task's form."""
    for page in task_form_pages(admin_site_client, TaskFactory(assigned_node=node)):
        assert 'id="change_id_assigned_node"' in page  # its page is still a click away
        assert 'id="delete_id_assigned_node"' not in page
