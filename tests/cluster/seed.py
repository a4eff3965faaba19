"""The cluster's data, written on the primary through the services (so every task has
its initial history): an admin, the nodes, their tasks, and a few tasks of a node
that never works, whose deadline passes mid-run for the sweeps to fail.

Prints {"nodes": [emails], "expiring": [task ids]} as JSON.
"""

import json
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import django

django.setup()

from django.utils import timezone  # noqa: E402

from accounts.models import Role, User  # noqa: E402
from tasks.services import task_create  # noqa: E402

nodes_count, per_node, expiring_count, expire_after, password = sys.argv[1:]
User.objects.create_user("admin@cluster.test", password, name="Admin", role=Role.ADMIN)
nodes = [
    User.objects.create_user(f"node{n}@cluster.test", password, name=f"Node {n}")
    for n in range(1, int(nodes_count) + 1)
]
later = timezone.now() + timedelta(days=1)
for node in nodes:
    for i in range(int(per_node)):
        task_create(
            name=f"{node.name} task {i}", details="Work.", assigned_node=node, locked_at=later
        )
idle = User.objects.create_user("idle@cluster.test", password, name="Idle node")
soon = timezone.now() + timedelta(seconds=float(expire_after))
expiring = [
    str(task_create(name=f"Expiring {i}", details="Work.", assigned_node=idle, locked_at=soon).pk)
    for i in range(int(expiring_count))
]
print(json.dumps({"nodes": [node.email for node in nodes], "expiring": expiring}))
