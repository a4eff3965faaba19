"""What the task admin refuses, it explains on the page and saves nothing: a form
error on the field, or a message beside the task, never Django's error page (a
500). One test per rule the services enforce that a form or an action could break."""

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.urls import reverse

from nodes.models import NodeLabels
from nodes.services import node_cordon
from tasks.models import Task, TaskHistory, TaskStatus
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

ADD = reverse("admin:tasks_task_add")
CHANGELIST = reverse("admin:tasks_task_changelist")
FUTURE = {"locked_at_0": "2099-05-01", "locked_at_1": "12:00:00"}
NO_INLINE_FORMS = {"history-TOTAL_FORMS": "0", "history-INITIAL_FORMS": "0"}
MISMATCH = "This node does not match the task's nodeSelector."


def change_url(task):
    return reverse("admin:tasks_task_change", args=[task.pk])


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def gpu_node():
    node = NodeFactory(name="node1")
    NodeLabels.objects.create(node=node, labels={"gpu": "true"})
    return node


def form_for(node, **overrides):
    return (
        {"name": "Render", "details": "Frames 1-100.", "assigned_node": node.pk, "priority": 50}
        | FUTURE
        | overrides
    )


def test_adding_a_task_whose_node_does_not_match_its_selector_is_a_form_error(admin_site_client):
    node = gpu_node()

    response = admin_site_client.post(ADD, form_for(node, node_selector='{"gpu": "false"}'))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["assigned_node"] == [MISMATCH]
    assert not Task.objects.exists() and not TaskHistory.objects.exists()


def test_a_selector_the_tasks_node_does_not_match_is_a_form_error_and_nothing_changes(
    admin_site_client,
):
    task = TaskFactory(assigned_node=gpu_node(), node_selector={"gpu": "true"})

    response = admin_site_client.post(
        change_url(task),
        form_for(task.assigned_node, node_selector='{"gpu": "false"}') | NO_INLINE_FORMS,
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["assigned_node"] == [MISMATCH]
    task.refresh_from_db()
    assert task.node_selector == {"gpu": "true"}
    assert task.locked_at.year != 2099
    assert not TaskHistory.objects.filter(task=task).exclude(action="initial_assign").exists()


def test_an_edit_keeping_a_node_its_labels_no_longer_match_is_saved(admin_site_client):
    # The node's labels changed after the task was placed: renaming the task, its node
    # and selector left as they are, was a form error about a mismatch it did not make.
    node = gpu_node()
    task = TaskFactory(assigned_node=node, node_selector={"gpu": "true"})
    NodeLabels.objects.filter(node=node).update(labels={})

    response = admin_site_client.post(
        change_url(task), form_for(node, node_selector='{"gpu": "true"}') | NO_INLINE_FORMS
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    task.refresh_from_db()
    assert task.name == "Render"


class Meanwhile:
    """Runs `change` just before the first statement `starts` picks out: someone (a node,
    another admin) acting between the page's checks and the service's, as in production."""

    def __init__(self, starts, change):
        self.starts, self.change, self.done = starts, change, False

    def __call__(self, execute, sql, params, many, context):
        if not self.done and self.starts(sql):
            self.done = True
            self.change()
        return execute(sql, params, many, context)


def the_locked_read(sql: str) -> bool:
    """The services read a task with taskmgmt.sql's statement, its columns unqualified;
    the admin's own read (the ORM's) names them "tasks_task"."id"."""
    table = connection.ops.quote_name("tasks_task")
    return sql.startswith("SELECT") and f"FROM {table}" in sql and f"{table}." not in sql


def the_schedulable_check(sql: str) -> bool:
    """nodes.models.check_schedulable's EXISTS (the form reads the node's row instead)."""
    quote = connection.ops.quote_name
    exists = sql.startswith("SELECT") and f"AS {quote('a')} FROM" in sql
    return exists and quote("nodes_cordon") in sql


def test_a_task_started_while_its_form_is_saved_is_a_message_and_nothing_is_saved(
    admin_site_client,
):
    task = TaskFactory(name="Before")
    started = Meanwhile(
        the_locked_read,
        lambda: Task.objects.filter(pk=task.pk).update(status=TaskStatus.IN_PROGRESS),
    )

    with connection.execute_wrapper(started):
        response = admin_site_client.post(
            change_url(task), form_for(task.assigned_node, name="After") | NO_INLINE_FORMS
        )

    assert started.done
    assert response.status_code == 302 and response.url == change_url(task)
    (message,) = messages_of(response)
    assert message.startswith("Nothing was saved: only a pending task can be edited")
    assert Task.objects.get(pk=task.pk).name == "Before"


def test_retrying_a_task_whose_node_is_cordoned_is_a_message_not_an_error_page(
    admin_site_client, admin_user
):
    task = TaskFactory(status=TaskStatus.FAILED)
    node_cordon(node_id=task.assigned_node_id, reason="disk", actor=admin_user)

    response = admin_site_client.post(
        reverse("admin:tasks_task_act", args=[task.pk]), {"action": "retry"}
    )

    assert response.status_code == 302 and response.url == change_url(task)
    (message,) = messages_of(response)
    assert message == ("Nothing was done: node is cordoned: it takes no new tasks until uncordoned")
    assert Task.objects.get(pk=task.pk).status == TaskStatus.FAILED


def test_reassigning_to_a_node_cordoned_meanwhile_is_a_message_and_moves_nothing(
    admin_site_client, admin_user
):
    task = TaskFactory(status=TaskStatus.FAILED)
    target = NodeFactory()
    cordoned = Meanwhile(
        the_schedulable_check,
        lambda: node_cordon(node_id=target.pk, reason="disk", actor=admin_user),
    )

    with connection.execute_wrapper(cordoned):
        response = admin_site_client.post(
            CHANGELIST,
            {
                "action": "reassign",
                "_selected_action": [task.pk],
                "apply": "Reassign",
                "node": target.pk,
            },
        )

    assert cordoned.done and response.status_code == 302
    (message,) = messages_of(response)
    assert message == "node is cordoned: it takes no new tasks until uncordoned"
    assert Task.objects.get(pk=task.pk).assigned_node_id != target.pk


def test_a_new_task_with_a_selector_and_no_node_goes_where_placement_picks(admin_site_client):
    """As the API's create: the node is optional beside a node selector."""
    node = gpu_node()
    NodeFactory(name="node2")  # no labels: no match

    response = admin_site_client.post(
        ADD, form_for(node, assigned_node="", node_selector='{"gpu": "true"}')
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    (task,) = Task.objects.all()
    assert (task.assigned_node_id, task.node_selector) == (node.pk, {"gpu": "true"})


@pytest.mark.parametrize(
    ("selector", "field", "message"),
    [
        ("", "assigned_node", "Pick a node, or give a node selector for placement to pick one."),
        ('{"gpu": "false"}', "node_selector", "no node matches"),
    ],
)
def test_a_new_task_without_a_node_needs_a_selector_a_node_matches(
    admin_site_client, selector, field, message
):
    node = gpu_node()

    response = admin_site_client.post(ADD, form_for(node, assigned_node="", node_selector=selector))

    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors[field]
    assert error.startswith(message)
    assert not Task.objects.exists()


@pytest.mark.parametrize("selector", ["[1, 2]", '"gpu"', '{"gpu": 1}'])
@pytest.mark.parametrize("with_node", [True, False])
def test_a_selector_that_is_not_labels_is_a_form_error_on_the_field_not_a_500(
    admin_site_client, selector, with_node
):
    node = gpu_node()
    form = form_for(node, node_selector=selector, assigned_node=node.pk if with_node else "")

    response = admin_site_client.post(ADD, form)

    assert response.status_code == 200
    (error, *_) = response.context["adminform"].form.errors["node_selector"]
    assert error.startswith(("Must be a JSON object", "Value of 'gpu'"))
    assert not Task.objects.exists()


def test_a_list_as_the_selector_of_a_pending_task_is_a_form_error_and_nothing_changes(
    admin_site_client,
):
    task = TaskFactory(assigned_node=gpu_node())

    response = admin_site_client.post(
        change_url(task), form_for(task.assigned_node, node_selector="[1, 2]") | NO_INLINE_FORMS
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["node_selector"] == [
        "Must be a JSON object of string keys to string values."
    ]
    task.refresh_from_db()
    assert task.node_selector is None


def test_no_selector_is_an_empty_box_not_null(admin_site_client):
    pending = TaskFactory(assigned_node=gpu_node())
    chosen = TaskFactory(assigned_node=pending.assigned_node, node_selector={"gpu": "true"})

    def box(url):
        form = admin_site_client.get(url).context["adminform"].form
        return form["node_selector"].value(), str(form["node_selector"])

    assert box(ADD)[0] == "" and ">\n</textarea>" in box(ADD)[1]
    assert box(change_url(pending))[0] == ""
    assert box(change_url(chosen))[1].count("gpu") == 1
    # Saved with the box left empty: still no selector.
    response = admin_site_client.post(
        change_url(pending), form_for(pending.assigned_node, node_selector="") | NO_INLINE_FORMS
    )
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.node_selector is None


@pytest.mark.parametrize(
    ("changelist", "action"),
    [
        (CHANGELIST, "reassign"),
        (CHANGELIST, "reassign_by_label"),
        (CHANGELIST, "cancel_tasks"),
        (CHANGELIST, "mark_failed"),
        (CHANGELIST, "soft_delete"),
        (CHANGELIST, "restore"),
        (reverse("admin:accounts_user_changelist"), "delete_selected"),
    ],
)
def test_a_selected_id_that_is_no_uuid_is_a_400_not_a_500(admin_site_client, changelist, action):
    # The page's checkboxes send UUIDs; a hand-made or damaged POST with another value
    # made Django's action handling raise ValidationError out of its query (a 500).
    task = TaskFactory()

    response = admin_site_client.post(
        changelist, {"action": action, "_selected_action": [str(task.pk), "zzz"], "index": "0"}
    )

    assert response.status_code == 400
    assert "is not a valid id" in response.content.decode()
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING and task.active
