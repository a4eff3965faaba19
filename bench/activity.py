"""Benchmark of the activity feed (admin/activity/): `python bench/activity.py 1000000`.

Uses its own database (BENCH_DB_NAME, default taskmgmt_bench_activity, on the server
of DATABASE_URL when that is a MySQL/MariaDB URL, else a temporary SQLite file). It
loads N task history rows (a quarter as many tasks, 20 busy nodes and one that got a
few tasks a month ago, two admins, 30 days of work: claims and completions, failures
of every cause, failover moves, reassignments, edits, cancellations) and 2,000 node
events, then:

- times the feed's page through Django's test client, unfiltered and by each filter,
  and a page 20 pages deep, with its query count (medians of ROUNDS);
- times the history write every task change makes (the signal's one-row INSERT, in a
  transaction) with the feed's indexes (migration 0010's four, 0016's by node) and
  without them, and building those five indexes on N rows: medians of three rounds
  in turn. The indexes are dropped and built by Django's schema editor as the
  migrations do, without migrating back (that would drop 0016's column and its values).
"""

import argparse
import html
import logging
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep  # bench/sweep.py: the same database set-up

CHUNK = 10_000
NODES = 20
ROUNDS = 9
WRITES = 3_000
# Seconds between an ALTER and a timing: InnoDB flushes what the ALTER left meanwhile.
SETTLE_SECONDS = 20


def load(n: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Role, User
    from nodes.models import NodeEvent
    from tasks.models import Task, TaskHistory

    now = timezone.now()
    start = now - timedelta(days=30)
    at = connection.ops.adapt_datetimefield_value
    nodes = [
        User.objects.create(email=f"bench-feed-{i}@example.com", name=f"Bench node {i:02}")
        for i in range(NODES + 1)
    ]
    rare = nodes.pop()  # a few tasks, a month ago
    admins = [
        User.objects.create(
            email=f"bench-feed-admin-{i}@example.com", name=f"Bench admin {i}", role=Role.ADMIN
        )
        for i in range(2)
    ]
    rng = random.Random(n)
    task_sql = (
        f"INSERT INTO {Task._meta.db_table} (id, name, details, assigned_node_id, status,"
        " locked_at, active, attempts, failure_cause, failure_reason, created_at, updated_at,"
        " priority, pinned)"
        " VALUES (%s, %s, 'benchmark', %s, %s, %s, 1, 1, '', '', %s, %s, 0, 0)"
    )
    history_sql = (
        f"INSERT INTO {TaskHistory._meta.db_table} (task_id, action, from_value, to_value,"
        " performed_by_id, cause, created_at, node_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    written, number = 0, 0
    tasks, rows = [], []
    span = 30 * 86_400
    while written < n:
        moment = start + timedelta(seconds=span * written / n)
        task_id = uuid.UUID(int=rng.getrandbits(80) << 48 | number, version=4).hex
        number += 1
        node = rare if written < n * 0.001 and number % 5 == 0 else rng.choice(nodes)
        admin = rng.choice(admins).pk.hex
        story = [("initial_assign", None, node.pk.hex, admin, "")]
        roll = rng.random()
        status = "completed"
        if roll < 0.03:  # failover: the sweep moves it off a lost node
            other = rng.choice(nodes).pk.hex
            story += [
                ("status_change", "pending", "in_progress", node.pk.hex, ""),
                ("status_change", "in_progress", "failed", None, "node_lost"),
                ("assignee_change", node.pk.hex, other, None, "node_lost"),
                ("status_change", "failed", "pending", None, "node_lost"),
                (
                    "deadline_change",
                    "2026-01-01T00:00:00+00:00",
                    "2026-01-01T01:00:00+00:00",
                    None,
                    "node_lost",
                ),
            ]
            status = "pending"
        elif roll < 0.05:
            story.append(("status_change", "pending", "failed", None, "deadline"))
            status = "failed"
        elif roll < 0.06:
            story.append(("assignee_change", node.pk.hex, rng.choice(nodes).pk.hex, admin, ""))
            status = "pending"
        elif roll < 0.065:
            story.append(("edit", None, "taskName", admin, ""))
            status = "pending"
        elif roll < 0.067:
            story += [
                ("status_change", "pending", "in_progress", node.pk.hex, ""),
                ("cancel_request", None, "maintenance", admin, ""),
                ("status_change", "in_progress", "cancelled", None, "cancel_timeout"),
            ]
            status = "cancelled"
        else:
            story.append(("status_change", "pending", "in_progress", node.pk.hex, ""))
            failed = rng.random() < 0.04
            story.append(
                (
                    "status_change",
                    "in_progress",
                    "failed" if failed else "completed",
                    node.pk.hex,
                    "node_reported" if failed else "",
                )
            )
            status = "failed" if failed else "completed"
        tasks.append(
            (
                task_id,
                f"bench task {number}",
                node.pk.hex,
                status,
                at(moment + timedelta(hours=2)),
                at(moment),
                at(moment),
            )
        )
        holder = node.pk.hex  # the task's node once each row's change is made
        for step, (action, before, after, by, cause) in enumerate(story):
            if action in ("initial_assign", "assignee_change"):
                holder = after
            rows.append(
                (
                    task_id,
                    action,
                    before,
                    after,
                    by,
                    cause,
                    at(moment + timedelta(milliseconds=step)),
                    holder,
                )
            )
        written += len(story)
        if len(rows) >= CHUNK:
            _flush(task_sql, history_sql, tasks, rows)
            tasks, rows = [], []
    _flush(task_sql, history_sql, tasks, rows)
    kinds = ["cordon", "uncordon", "drain", "labels_change", "maintenance_scheduled"]
    events = [
        NodeEvent(
            node=rng.choice(nodes),
            kind=rng.choice(kinds),
            actor=rng.choice(admins),
            reason="bench",
            created_at=start + timedelta(seconds=span * i / 2000),
        )
        for i in range(2000)
    ]
    NodeEvent.objects.bulk_create(events)


def _flush(task_sql, history_sql, tasks, rows) -> None:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        if tasks:
            cursor.executemany(task_sql, tasks)
        if rows:
            cursor.executemany(history_sql, rows)


def clear() -> None:
    from django.db import connection

    from accounts.models import User
    from nodes.models import NodeEvent
    from tasks.models import Task, TaskHistory

    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        for model in (TaskHistory, NodeEvent, Task):
            empty = "TRUNCATE TABLE" if connection.vendor == "mysql" else "DELETE FROM"
            cursor.execute(f"{empty} {model._meta.db_table}")
        if connection.vendor == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
    User.objects.filter(email__startswith="bench-feed-").delete()


def median_ms(action, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def write_cost_us() -> float:
    """Microseconds of one history row written as the signal writes it (one INSERT), in
    one transaction: the indexes' own work, without a commit's disk flush per row."""
    from django.db import transaction

    from taskmgmt.sql import insert_rows
    from tasks.models import Task, TaskHistory

    task_id = Task.objects.values_list("pk", flat=True).first()
    row = {"action": "status_change", "from_value": "pending", "to_value": "in_progress"}
    started = time.perf_counter()
    with transaction.atomic():
        for _ in range(WRITES):
            insert_rows(TaskHistory, [TaskHistory(task_id=task_id, cause="", **row)])
    return (time.perf_counter() - started) / WRITES * 1e6


FEED_INDEXES = (
    "history_action",
    "history_cause",
    "history_to_value",
    "history_from_value",
    "history_node",
)


def feed_indexes(present: bool) -> None:
    """Build or drop the activity feed's indexes (migrations 0010 and 0016), as those
    migrations do."""
    from django.db import connection

    from tasks.models import TaskHistory

    indexes = [i for i in TaskHistory._meta.indexes if i.name in FEED_INDEXES]
    with connection.schema_editor() as editor:
        for index in indexes:
            if present:
                editor.add_index(TaskHistory, index)
            else:
                editor.remove_index(TaskHistory, index)


def index_costs(rounds: int = 3) -> tuple[float, float, float]:
    """(the feed's indexes' build time, a history row's write without them, with them):
    medians of `rounds`, taken in turn, each after a pause, so neither side pays for the
    disk flushes the other's ALTER left behind."""
    built, without, with_them = [], [], []
    for _ in range(rounds):
        feed_indexes(present=False)
        time.sleep(SETTLE_SECONDS)
        without.append(write_cost_us())
        started = time.perf_counter()
        feed_indexes(present=True)
        built.append(time.perf_counter() - started)
        time.sleep(SETTLE_SECONDS)
        with_them.append(write_cost_us())
    return tuple(statistics.median(values) for values in (built, without, with_them))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of history rows, e.g. 1000000")
    parser.add_argument("--keep", action="store_true", help="keep the data for another run")
    args = parser.parse_args()
    sweep.BENCH_DB_NAME = os.environ.get("BENCH_DB_NAME", "taskmgmt_bench_activity")
    with tempfile.TemporaryDirectory(prefix="taskmgmt-bench-") as workdir:
        os.environ.setdefault("ALLOWED_HOSTS", "testserver")
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        os.environ["STATIC_ROOT"] = str(Path(workdir) / "static")
        sweep.setup_django(sweep.bench_database_url(Path(workdir)))
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client

        from accounts.models import Role, User
        from tasks.models import TaskHistory

        call_command("collectstatic", interactive=False, verbosity=0)
        logging.getLogger("taskmgmt.request").setLevel(logging.WARNING)  # the timings alone
        print(f"database: {connection.vendor} {connection.settings_dict['NAME']}")
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        # Each run writes some rows of its own (the write timings): 5 % is still N.
        if abs(TaskHistory.objects.count() - args.n) > args.n * 0.05:
            clear()
            started = time.perf_counter()
            load(args.n)
            took = time.perf_counter() - started
            print(f"loaded {TaskHistory.objects.count():,} rows in {took:.0f}s")
            if connection.vendor == "mysql":
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE TABLE {TaskHistory._meta.db_table}")
        viewer, _ = User.objects.get_or_create(
            email="bench-feed-viewer@example.com", defaults={"role": Role.ADMIN, "name": "Viewer"}
        )
        client = Client()
        client.force_login(viewer)
        busy = User.objects.get(email="bench-feed-0@example.com").pk
        rare = User.objects.get(email=f"bench-feed-{NODES}@example.com").pk
        admin = User.objects.get(email="bench-feed-admin-0@example.com").pk
        pages = {
            "everything": "",
            "a busy node": f"node={busy}",
            "a node idle for a month": f"node={rare}",
            "by the system": "actor=system",
            "by an admin": f"actor={admin}",
            "action: edit": "action=edit",
            "action: cordon (node events)": "action=cordon",
            "cause: node_lost": "cause=node_lost",
            "cause: cancel_timeout": "cause=cancel_timeout",
            "a busy node, cause node_lost": f"node={busy}&cause=node_lost",
        }

        def timed(query: str) -> tuple[float, int]:
            def get():
                response = client.get(f"/admin/activity/?{query}")
                assert response.status_code == 200, response.status_code
                return response

            sent = []
            with connection.execute_wrapper(
                lambda run, sql, *rest: sent.append(sql) or run(sql, *rest)
            ):
                get()
            return median_ms(get), len(sent)

        def deep(query: str, depth: int = 20) -> str:
            url = f"/admin/activity/?{query}"
            for _ in range(depth):
                page = client.get(url).content.decode()
                url = html.unescape(re.search(r'id="tm-activity-older" href="([^"]+)"', page)[1])
            return url.split("?", 1)[1]

        def table(label: str) -> dict:
            print(f"\n{label}")
            results = {}
            for name, query in {**pages, "20 pages deep": deep("")}.items():
                ms, queries = timed(query)
                results[name] = ms
                print(f"  {name:36} {ms:8.1f} ms  {queries} queries")
            return results

        with_indexes = table("the feed, with its indexes (migrations 0010 and 0016)")
        feed_indexes(present=False)
        from tasks import activity

        # Without them the feed cannot name the action's index either.
        named = activity.first_page
        activity.first_page = lambda rows, index=None: named(rows)
        without = table("the feed, without them")
        activity.first_page = named
        feed_indexes(present=True)
        built, written_without, written_with = index_costs()
        rows = TaskHistory.objects.count()
        print(f"\nthe feed's five indexes on {rows:,} rows: {built:.1f} s")
        print(f"one history row written: {written_without:.0f} µs without, {written_with:.0f} with")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print("\n| page | with | without |\n|---|---:|---:|")
        for name, ms in with_indexes.items():
            print(f"| {name} | {ms:.0f} ms | {without[name]:.0f} ms |")
        if not args.keep:
            clear()


if __name__ == "__main__":
    main()
