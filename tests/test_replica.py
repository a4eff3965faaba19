"""The heavy reads from a replica (taskmgmt.replica), the rest from the primary.

The "replica" alias here is a second database of the same server (tests/settings.py),
not a replicating one, so a row written to it alone proves which database a page
read. Real MariaDB replication is tests/cluster's.
"""

import socket
from datetime import timedelta

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Role, User
from taskmgmt import replica as replica_module
from tasks.models import Task, TaskStatus
from tests.factories import AdminFactory, NodeFactory, TaskFactory

BOTH = ["default", "replica"]
TOKEN = "replica-test-metrics-token"


@pytest.fixture
def replica(settings):
    """Heavy reads go to the "replica" alias, with nothing cached from before."""
    settings.READ_REPLICA_ALIAS = "replica"
    settings.DASHBOARD_CACHE_SECONDS = 0
    settings.METRICS_TOKEN = TOKEN
    replica_module.replica_recovered()
    yield connections["replica"]
    replica_module.replica_recovered()


@pytest.fixture
def replica_lost(replica):
    """The replica's server is gone: its connection points where nothing answers."""
    replica.close()
    saved = dict(replica.settings_dict)
    if replica.vendor == "sqlite":
        replica.settings_dict["NAME"] = "/nonexistent-taskmgmt-replica/db.sqlite3"
    else:
        with socket.socket() as sock:  # a port nothing listens on, once closed
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        replica.settings_dict.update(HOST="127.0.0.1", PORT=str(port))
    yield replica
    replica.close()
    replica.settings_dict.clear()
    replica.settings_dict.update(saved)


def only_on_replica() -> User:
    """A node and a pending task that exist on the replica alone."""
    node = User.objects.db_manager("replica").create_user(
        "replica-only@example.com", "x" * 20, name="Replica-only node", role=Role.NODE
    )
    Task.objects.using("replica").bulk_create(
        [
            Task(
                name="Replica-only task",
                assigned_node=node,
                status=TaskStatus.PENDING,
                locked_at=timezone.now() + timedelta(days=1),
            )
        ]
    )
    return node


def metric(client, name: str) -> str:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    lines = response.content.decode().splitlines()
    return next(line for line in lines if line.startswith(name))


@pytest.mark.django_db(databases=BOTH)
def test_the_dashboard_and_metrics_are_read_from_the_replica(client, replica):
    only_on_replica()
    NodeFactory(name="Primary-only node")
    client.force_login(AdminFactory())

    page = client.get("/admin/").content.decode()

    assert "Replica-only node" in page
    assert "Primary-only node" not in page
    assert metric(client, 'taskmgmt_tasks_open{status="pending"}').endswith(" 1.0")


@pytest.mark.django_db(databases=BOTH)
def test_without_a_replica_every_read_is_the_primarys(client, settings):
    settings.DASHBOARD_CACHE_SECONDS = 0
    only_on_replica()
    NodeFactory(name="Primary-only node")
    client.force_login(AdminFactory())

    with CaptureQueriesContext(connections["replica"]) as on_replica:
        page = client.get("/admin/").content.decode()

    assert "Primary-only node" in page
    assert "Replica-only node" not in page
    assert len(on_replica) == 0


@pytest.mark.django_db(databases=BOTH)
def test_the_node_page_panels_are_read_from_the_replica(client, replica):
    node = NodeFactory(name="Paged node")
    TaskFactory(assigned_node=node, name="Primary task")  # on the primary only
    client.force_login(AdminFactory())

    with CaptureQueriesContext(replica) as on_replica:
        response = client.get(f"/admin/node/{node.pk}/")

    # The node's row is the primary's; its panels (counts, history) the replica's,
    # which has none of its tasks.
    assert response.status_code == 200
    assert response.context["open_count"] == 0
    assert len(on_replica) == 3


@pytest.mark.django_db(databases=BOTH)
def test_the_admin_list_counts_on_the_replica_and_shows_the_primarys_rows(client, replica):
    node = only_on_replica()
    Task.objects.using("replica").bulk_create(
        [Task(name="Another", assigned_node=node, locked_at=timezone.now() + timedelta(days=1))]
    )
    TaskFactory(name="Primary task")
    client.force_login(AdminFactory())

    page = client.get("/admin/tasks/task/").content.decode()

    # The rows are the primary's (an action shows at once); the count, the replica's.
    assert "Primary task" in page
    assert "Replica-only task" not in page
    assert "2 tasks" in page


@pytest.mark.django_db(databases=BOTH)
def test_the_api_never_reads_the_replica(client_for, replica):
    only_on_replica()
    node = NodeFactory()
    task = TaskFactory(assigned_node=node)
    api = client_for(node)

    with CaptureQueriesContext(replica) as on_replica:
        detail = api.get(f"/api/tasks/{task.pk}")
        listed = api.get("/api/tasks/filter/pending")
        claimed = api.post("/api/tasks/claim")
        beat = api.post("/api/nodes/heartbeat", {"taskIds": []}, format="json")

    assert detail.status_code == 200
    assert [row["id"] for row in listed.json()["tasks"]] == [str(task.pk)]
    assert claimed.status_code == 200 and claimed.json()["task"]["id"] == str(task.pk)
    assert beat.status_code == 200
    assert len(on_replica) == 0


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_lost_replica_falls_back_to_the_primary(client, replica_lost):
    NodeFactory(name="Primary-only node")
    node = NodeFactory()
    TaskFactory(assigned_node=node, name="Primary task")
    client.force_login(AdminFactory())

    dashboard = client.get("/admin/")
    node_page = client.get(f"/admin/node/{node.pk}/")
    tasks = client.get("/admin/tasks/task/")
    scraped = metric(client, 'taskmgmt_tasks_open{status="pending"}')

    assert dashboard.status_code == 200
    assert "Primary-only node" in dashboard.content.decode()
    assert node_page.status_code == 200 and node_page.context["open_count"] == 1
    assert tasks.status_code == 200 and "1 task" in tasks.content.decode()
    assert scraped.endswith(" 1.0")


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_lost_replica_is_skipped_for_a_while(client, replica_lost, caplog):
    client.force_login(AdminFactory())

    pages = [client.get("/admin/").status_code for _ in range(3)]

    # One failed read, then the primary at once until SKIP_SECONDS have passed.
    assert pages == [200, 200, 200]
    failures = [r for r in caplog.records if r.name == "taskmgmt.replica"]
    assert len(failures) == 1
