"""Where the backlog is and which work is at risk: per node open, in progress, completed
in the last hour and the time its backlog takes at that rate; open work on nodes that
are not alive, on the dashboard."""

import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from tasks.dashboard import backlog_seconds
from tasks.models import Task, TaskStatus
from tests.factories import NodeFactory, TaskFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.DASHBOARD_CACHE_SECONDS = 0
    settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER = 10, 30


def seen(node, seconds_ago):
    User.objects.filter(pk=node.pk).update(
        last_seen=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return node


def finished(node, count, minutes_ago):
    tasks = TaskFactory.create_batch(count, assigned_node=node, status=TaskStatus.COMPLETED)
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(
        updated_at=timezone.now() - timedelta(minutes=minutes_ago)
    )


def test_backlog_seconds_reads_the_last_hours_rate():
    assert backlog_seconds(30, 3) == 10 * 3600
    assert backlog_seconds(0, 0) == 0
    assert backlog_seconds(5, 0) is None


def test_the_dashboard_shows_each_nodes_rate_and_backlog(admin_site_client):
    busy = seen(NodeFactory(name="busy"), 1)
    TaskFactory.create_batch(6, assigned_node=busy)
    finished(busy, 3, minutes_ago=10)
    finished(busy, 5, minutes_ago=90)  # outside the last hour

    page = admin_site_client.get(reverse("admin:index")).content.decode()
    panel = page.split('id="tm-nodes"')[1]
    row = re.search(rf'<tr data-node="{busy.pk}">(.*?)</tr>', panel, re.DOTALL).group(1)

    assert '<td class="num">3</td>' in row  # completed in the last hour
    assert '<td class="num tm-backlog">2 h</td>' in row  # 6 open at 3 an hour


def test_work_at_risk_counts_open_tasks_on_nodes_that_are_not_alive(admin_site_client):
    alive = seen(NodeFactory(name="alive"), 1)
    down = seen(NodeFactory(name="down"), 600)
    never = NodeFactory(name="never")
    TaskFactory.create_batch(2, assigned_node=alive)
    TaskFactory.create_batch(3, assigned_node=down)
    TaskFactory(assigned_node=never, status=TaskStatus.IN_PROGRESS)
    TaskFactory(assigned_node=down, status=TaskStatus.COMPLETED)

    page = admin_site_client.get(reverse("admin:index")).content.decode()

    found = re.search(r'id="tm-at-risk-count" href="([^"]+)">(\d+)<', page)
    assert found and found.group(2) == "4"
    listed = admin_site_client.get(html.unescape(found.group(1))).context["cl"]
    assert {t.assigned_node_id for t in listed.result_list} == {down.pk, never.pk}
    assert listed.result_count == 4


def test_a_node_page_shows_its_backlog(admin_site_client):
    node = seen(NodeFactory(), 1)
    TaskFactory.create_batch(4, assigned_node=node)
    TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)
    finished(node, 2, minutes_ago=5)

    page = admin_site_client.get(reverse("admin:node", args=[node.pk])).content.decode()

    assert "5 open (1 in progress)" in page
    assert 'id="tm-completed-last-hour">2<' in page
    assert 'id="tm-backlog">2 h 30 min<' in page


def test_a_node_page_says_plainly_when_its_backlog_never_clears(admin_site_client):
    node = seen(NodeFactory(), 1)
    TaskFactory(assigned_node=node)

    page = admin_site_client.get(reverse("admin:node", args=[node.pk])).content.decode()

    assert "clears in never" not in page
    assert (
        'At that rate its backlog <strong id="tm-backlog">never clears</strong>'
        " (it completed nothing in the last hour)." in page
    )
