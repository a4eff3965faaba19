"""Placement with a real worker fleet on MariaDB (SPEC, Placement): two kinds of nodes,
`gpu=true` and not. A GPU node's worker dies; failover gives its GPU tasks only to the
other GPU node, never to the plain ones. And a bulk submission is done exactly once,
each node taking its highest-priority tasks first.

Marked `fleet` (minutes on a busy machine): `pytest -m fleet tests/fleet/test_placement.py`.
"""

import json
import urllib.request
from datetime import timedelta

from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from nodes.models import NodeLabels
from tasks.models import HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import AdminFactory, NodeFactory, TaskFactory
from tests.fleet import test_fleet
from tests.fleet.harness import FLEET_MARKS, assert_every_history_consistent, wait_for
from tests.fleet.test_fleet import (
    all_completed,
    kill_mid_task,
    sweep_until_moved,
    wait_until_all_completed,
)

pytestmark = FLEET_MARKS

GPU = {"gpu": "true"}

# The kill cycles' fleet and settings (Redis beats, FAILOVER=reassign, short intervals).
fleet_settings, fleet = test_fleet.fleet_settings, test_fleet.fleet


def labelled(labels: dict, count: int) -> list:
    nodes = NodeFactory.create_batch(count)
    for node in nodes:
        NodeLabels.objects.create(node=node, labels=labels)
    return nodes


def test_a_dead_gpu_nodes_tasks_go_to_the_other_gpu_node_never_to_a_plain_one(fleet):
    victim, other_gpu = labelled(GPU, 2)
    plain = labelled({"gpu": "false"}, 2)
    deadline = timezone.now() + timedelta(hours=1)
    gpu_tasks = [
        TaskFactory(assigned_node=victim, node_selector=GPU, locked_at=deadline) for _ in range(6)
    ]
    # The plain nodes have nothing to do: the least-loaded alive nodes, were it not for
    # the selector.
    fleet.start(victim, "--work-seconds", "5")
    for node in (other_gpu, *plain):
        fleet.start(node)

    killed_at, lost = kill_mid_task(fleet, victim)
    sweep_until_moved(victim, killed_at)
    wait_until_all_completed(fleet, gpu_tasks)

    gpu_ids = {str(victim.pk), str(other_gpu.pk)}
    for task in Task.objects.filter(pk__in=[t.pk for t in gpu_tasks]):
        assert task.assigned_node_id in (victim.pk, other_gpu.pk)
        holders = set(
            TaskHistory.objects.filter(
                task=task, action__in=(HistoryAction.INITIAL_ASSIGN, HistoryAction.ASSIGNEE_CHANGE)
            ).values_list("to_value", flat=True)
        )
        assert holders <= gpu_ids, f"task {task.pk} was given to {holders - gpu_ids}"
    assert {task.assigned_node_id for task in Task.objects.filter(pk__in=lost)} == {other_gpu.pk}
    assert not Task.objects.filter(assigned_node__in=plain).exists()
    assert_every_history_consistent(Task.objects.filter(pk__in=[t.pk for t in gpu_tasks]))
    assert set(fleet.stop().values()) == {0}, fleet.logs()


def test_a_bulk_submission_is_done_once_highest_priority_first_per_node(fleet, live_server):
    nodes = labelled(GPU, 2)
    admin = AdminFactory()
    deadline = (timezone.now() + timedelta(hours=1)).isoformat()
    items = [
        {
            "taskName": f"job {i}",
            "taskDetails": "bulk",
            "lockedAt": deadline,
            "nodeSelector": GPU,
            "priority": 1 + (i * 37) % 100,
        }
        for i in range(200)
    ]
    request = urllib.request.Request(
        f"{live_server.url}/api/tasks/bulk",
        data=json.dumps({"tasks": items}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {RefreshToken.for_user(admin).access_token}",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201
        created = json.loads(response.read())["tasks"]
    assert len(created) == 200
    # Placement spread them: half each.
    assert sorted({t["assignedNode"] for t in created}) == sorted(str(n.pk) for n in nodes)

    for node in nodes:
        fleet.start(node, "--work-seconds", "0.01")
    tasks = list(Task.objects.filter(pk__in=[t["id"] for t in created]))
    wait_for(lambda: all_completed(tasks), 120, f"every task completed\n{fleet.logs()}", 0.2)

    assert max(fleet.completions_reported().values()) == 1
    assert_every_history_consistent(Task.objects.filter(pk__in=[t.pk for t in tasks]))
    for node in nodes:
        # The order the node started its tasks in: by priority, highest first.
        starts = TaskHistory.objects.filter(
            task__assigned_node=node,
            action=HistoryAction.STATUS_CHANGE,
            to_value=TaskStatus.IN_PROGRESS,
        ).order_by("created_at", "id")
        priorities = [row.task.priority for row in starts.select_related("task")]
        assert priorities == sorted(priorities, reverse=True), priorities
    assert set(fleet.stop().values()) == {0}, fleet.logs()
