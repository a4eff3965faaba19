"""What a read costs the database: a fixed number of queries whatever the data, and,
on MariaDB, an index behind every hot-path query (EXPLAIN, on a few thousand tasks).

tests/tasks/test_api_task_reads.py checks list pages at different limits; here
every read endpoint is measured with one task and with many, and with every
related row it reads (history, users) grown too.
"""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks.models import CLAIM_INDEX, HistoryAction, Task, TaskHistory, TaskStatus
from tests.factories import AdminFactory, NodeFactory, TaskFactory

MANY = 60

# Every read endpoint: who calls it, its path, and its budget. One query loads the
# token's user; the rest are the endpoint's own.
READS = {
    "list all": ("admin", "/api/tasks/all", 2),
    "list own": ("node", "/api/tasks", 2),
    "list node": ("node", "/api/tasks/node", 2),
    "filter all as admin": ("admin", "/api/tasks/filter/all", 2),
    "filter pending as admin": ("admin", "/api/tasks/filter/pending", 2),
    "filter all as node": ("node", "/api/tasks/filter/all", 2),
    "filter in_progress as node": ("node", "/api/tasks/filter/in_progress", 2),
    "detail as admin": ("admin", "/api/tasks/{task}", 2),
    "detail as node": ("node", "/api/tasks/{task}", 2),
    # The task (its permission check), then its history rows.
    "history": ("admin", "/api/tasks/history/{task}", 3),
    "users": ("admin", "/api/auth/users", 2),
    "profile of a node": ("node", "/api/auth/profile", 2),
    "profile of an admin": ("admin", "/api/auth/profile", 2),
}
LIST_READS = {name for name, (_, path, _) in READS.items() if "{task}" not in path}
LIST_READS -= {"users", "profile of an admin"}  # an admin has no tasks to page


def _grow(task, node, other_node) -> None:
    """Many more of every row a read could touch: tasks of both nodes in every
    status, history rows of `task`, users."""
    statuses = TaskStatus.values
    for number in range(MANY):
        TaskFactory(assigned_node=node, status=statuses[number % len(statuses)])
        TaskFactory(assigned_node=other_node, status=statuses[number % len(statuses)])
    TaskHistory.objects.bulk_create(
        TaskHistory(task=task, action=HistoryAction.STATUS_CHANGE, from_value="a", to_value="b")
        for _ in range(MANY)
    )
    NodeFactory.create_batch(MANY)


def _queries(client, path, query, budget, django_assert_max_num_queries) -> int:
    with django_assert_max_num_queries(budget) as captured:
        response = client.get(path, query)
    assert response.status_code == 200, response.content
    return len(captured)


@pytest.mark.django_db
@pytest.mark.parametrize("read", READS)
def test_a_read_costs_the_same_queries_for_one_task_or_many(
    client_for, admin_user, node, other_node, django_assert_max_num_queries, read
):
    caller, path, budget = READS[read]
    task = TaskFactory(assigned_node=node, status=TaskStatus.IN_PROGRESS)
    client = client_for(admin_user if caller == "admin" else node)
    path = path.format(task=task.pk)
    queries = [{}, {"limit": 1}, {"limit": 50}] if read in LIST_READS else [{}]

    def costs():
        return [_queries(client, path, q, budget, django_assert_max_num_queries) for q in queries]

    with_one = costs()
    _grow(task, node, other_node)
    with_many = costs()

    assert with_one == with_many
    assert len(set(with_many)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("read", sorted(LIST_READS))
def test_a_later_page_costs_what_the_first_did(
    client_for, admin_user, node, other_node, django_assert_max_num_queries, read
):
    caller, path, budget = READS[read]
    _grow(TaskFactory(assigned_node=node), node, other_node)
    client = client_for(admin_user if caller == "admin" else node)
    first = client.get(path, {"limit": 5})

    later = _queries(
        client,
        path,
        {"limit": 5, "cursor": first.json()["nextCursor"]},
        budget,
        django_assert_max_num_queries,
    )

    assert later == _queries(client, path, {"limit": 5}, budget, django_assert_max_num_queries)


# --- EXPLAIN on MariaDB ---------------------------------------------------------------

# Below about 5,000 tasks MariaDB rightly reads /api/tasks/all's first page by a
# full scan and a sort; from there on it walks the index, as at 100,000.
NODES = 10
TASKS_PER_NODE = 1000
EXPIRED_TASKS = 20
# The tables a hot path must reach through an index.
INDEXED_TABLES = {"tasks_task", "tasks_taskhistory"}
# Statements worth explaining: reads, and writes that find their rows first.
EXPLAINABLE = re.compile(r"^\s*(SELECT|UPDATE|DELETE|INSERT INTO \S+ \([^)]*\) SELECT)", re.I)


def _fill_big_world() -> dict:
    """Ten thousand tasks across ten nodes, in every status, spread over hours, with
    history rows for many of them, so the optimizer has a real choice."""
    admin = AdminFactory()
    nodes = NodeFactory.create_batch(NODES)
    now = timezone.now()
    statuses = TaskStatus.values
    tasks = Task.objects.bulk_create(
        (
            Task(
                name=f"Task {number}",
                details="Bulk.",
                assigned_node=node,
                status=statuses[number % len(statuses)],
                locked_at=now + timedelta(days=1),
                active=number % 50 != 0,
                priority=number % 100 + 1,
                created_at=now - timedelta(seconds=number * NODES + index),
            )
            for index, node in enumerate(nodes)
            for number in range(TASKS_PER_NODE)
        ),
        batch_size=2000,
    )
    task = next(
        task
        for task in tasks
        if task.assigned_node == nodes[0] and task.active and task.status == TaskStatus.PENDING
    )
    TaskHistory.objects.bulk_create(
        [
            TaskHistory(task=other, action=HistoryAction.INITIAL_ASSIGN, to_value="n")
            for other in tasks[::5]
        ]
        + [
            TaskHistory(task=task, action=HistoryAction.STATUS_CHANGE, from_value="a", to_value="b")
            for _ in range(100)
        ],
        batch_size=2000,
    )
    # Open tasks past their deadline, for the sweep behind /cron/collect-failed.
    expired = [t.pk for t in tasks if t.status == TaskStatus.PENDING and t.active and t != task]
    Task.objects.filter(pk__in=expired[:EXPIRED_TASKS]).update(locked_at=now - timedelta(hours=1))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE tasks_task, tasks_taskhistory, accounts_user")
        cursor.fetchall()
    return {"admin": admin, "node": nodes[0], "task": task}


def _explain(sql: str) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        columns = [column[0].lower() for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _plans(captured) -> list[tuple[str, dict]]:
    """(statement, EXPLAIN row) for each task-table row of each explainable statement."""
    return [
        (query["sql"], row)
        for query in captured
        if EXPLAINABLE.match(query["sql"])
        for row in _explain(query["sql"])
        if row["table"] in INDEXED_TABLES
    ]


# Each hot path: who calls it, the request, whether it is a keyset page (served in
# index order, no sort) and the indexes its task-table queries may use, as the
# docs/performance.md's "Which index serves which endpoint" says.
HOT_PATHS = {
    "admin lists every task": ("admin", "get", "/api/tasks/all", "page", "task_page"),
    "admin's next page": ("admin", "get", "/api/tasks/all", "next page", "task_page"),
    "admin filters": ("admin", "get", "/api/tasks/filter/pending", "page", "task_status_page"),
    "admin's next filtered page": (
        "admin",
        "get",
        "/api/tasks/filter/pending",
        "next page",
        "task_status_page",
    ),
    "node lists its tasks": ("node", "get", "/api/tasks", "page", "task_node_page"),
    "node's next page": ("node", "get", "/api/tasks/node", "next page", "task_node_page"),
    "node filters all": ("node", "get", "/api/tasks/filter/all", "page", "task_node_page"),
    "node filters": ("node", "get", "/api/tasks/filter/pending", "page", "task_node_status_page"),
    "node's next filtered page": (
        "node",
        "get",
        "/api/tasks/filter/pending",
        "next page",
        "task_node_status_page",
    ),
    "node reads a task": ("node", "get", "/api/tasks/{task}", None, "PRIMARY"),
    "node's profile": ("node", "get", "/api/auth/profile", "ordered", "task_node_page"),
    "admin reads a history": (
        "admin",
        "get",
        "/api/tasks/history/{task}",
        "ordered",
        "PRIMARY|history_task_time",
    ),
    "node shifts a status": ("node", "put", "/api/tasks/shift-status", None, "PRIMARY"),
    "the sweep": ("admin", "post", "/cron/collect-failed", None, "task_sweep|PRIMARY"),
    "node claims its next task": (
        "node",
        "post",
        "/api/tasks/claim",
        "ordered",
        f"{CLAIM_INDEX}|PRIMARY",
    ),
    "node beats": ("node", "post", "/api/nodes/heartbeat", None, f"{CLAIM_INDEX}|PRIMARY"),
}


def _request(client, method, path, kind, task):
    data = None
    if kind in {"page", "next page"}:
        data = {"limit": 50}
    if kind == "next page":
        data["cursor"] = client.get(path, {"limit": 50}).json()["nextCursor"]
    if method == "put":
        data = {"taskId": str(task.pk), "taskStatus": TaskStatus.IN_PROGRESS}
    with CaptureQueriesContext(connection) as captured:
        response = getattr(client, method)(path, data)
    assert response.status_code == 200, response.content
    return captured


def _plan_problems(plans, kind, allowed_keys) -> list[str]:
    problems = []
    for sql, row in plans:
        where = f"{row['table']} by {row['key']} ({row['type']}, {row['extra']}): {sql[:300]}"
        if row["type"] == "ALL" or row["key"] is None:
            problems.append(f"full scan of {where}")
        elif not re.fullmatch(allowed_keys, row["key"]):
            problems.append(f"unexpected index for {where}")
        if kind is not None and "filesort" in (row["extra"] or ""):
            problems.append(f"sorted, not read in index order: {where}")
    return problems if plans else ["no query on the task tables"]


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor == "sqlite", reason="EXPLAIN plans are checked on MariaDB")
@pytest.mark.django_db(transaction=True)  # ANALYZE TABLE commits.
def test_every_hot_path_query_uses_its_index(client_for):
    world = _fill_big_world()
    problems = {}
    for name, (caller, method, path, kind, allowed_keys) in HOT_PATHS.items():
        client = client_for(world[caller])
        captured = _request(client, method, path.format(task=world["task"].pk), kind, world["task"])
        problems[name] = _plan_problems(_plans(captured), kind, allowed_keys)

    assert {name: found for name, found in problems.items() if found} == {}
