"""Every admin page's breadcrumbs start the same way: "Home", the dashboard's link.

Django's own pages say "Home"; the project's node page, its confirmations and the
activity feed said "Dashboard" for the same link."""

import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db

HOME = f'<a href="{reverse("admin:index")}">Home</a>'


def first_crumb(page) -> str:
    assert page.status_code == 200, page.status_code
    crumbs = page.content.decode().split('class="breadcrumbs"', 1)[1].split("</div>", 1)[0]
    return re.search(r"<a [^>]*>[^<]*</a>", crumbs).group(0)


def pages(client):
    """(name, response) for the pages an operator reaches from the dashboard."""
    node = NodeFactory()
    task = TaskFactory(assigned_node=node)
    tasks = reverse("admin:tasks_task_changelist")
    yield "tasks", client.get(tasks)
    yield "task", client.get(reverse("admin:tasks_task_change", args=[task.pk]))
    yield "add task", client.get(reverse("admin:tasks_task_add"))
    yield "tasks app", client.get(reverse("admin:app_list", args=["tasks"]))
    yield "broadcast", client.get(reverse("admin:tasks_task_broadcast"))
    selected = {"action": "cancel_tasks", ACTION_CHECKBOX_NAME: [str(task.pk)]}
    yield "cancel confirmation", client.post(tasks, selected)
    yield "history", client.get(reverse("admin:tasks_taskhistory_changelist"))
    yield "sweep runs", client.get(reverse("admin:tasks_sweeprun_changelist"))
    yield "activity", client.get(reverse("admin:activity"))
    yield "node page", client.get(reverse("admin:node", args=[node.pk]))
    yield (
        "deactivate confirmation",
        client.post(reverse("admin:node", args=[node.pk]), {"action": "deactivate"}),
    )
    yield "users", client.get(reverse("admin:accounts_user_changelist"))
    yield "user", client.get(reverse("admin:accounts_user_change", args=[node.pk]))
    yield "password", client.get(reverse("admin:auth_user_password_change", args=[node.pk]))


def test_every_admin_pages_breadcrumbs_start_with_home(admin_site_client):
    firsts = {name: first_crumb(page) for name, page in pages(admin_site_client)}

    assert firsts == dict.fromkeys(firsts, HOME)
