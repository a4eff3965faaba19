"""Benchmark of the admin dashboard; run it as `make bench-dashboard N=1000000`.

Uses its own database (BENCH_DB_NAME, default taskmgmt_bench_dashboard, on the server
of DATABASE_URL when that is a MySQL/MariaDB URL, else a temporary SQLite file), loaded
the way bench/sweep.py loads (multi-row INSERTs, ascending ids). N tasks over 20 nodes,
created over 30 days: OPEN % open (three fifths pending, two in progress; a twenty-fifth
of them overdue), the rest finished (a tenth of them failed, of every cause), 1 %
soft-deleted; 1,000 sweep runs. --open 15 for a fleet that is falling behind.

Prints the server time of each panel's query and of the whole page (GET /admin/ through
Django's test client, cache off: every request computes every panel), medians of ROUNDS.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench/sweep.py: the same database set-up and loading approach.
import sweep

CHUNK = 10_000
NODES = 20
ROUNDS = 15
CAUSES = ["deadline", "node_reported", "node_lost", "admin"]


def load(n: int, open_share: float) -> None:
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import Role, User
    from tasks.models import SweepRun, Task

    now = timezone.now()
    ops = connection.ops
    nodes = [
        User.objects.create(
            email=f"bench-dash-{i}@example.com",
            name=f"Bench node {i:02}",
            role=Role.NODE,
            last_seen=now - timedelta(seconds=i * 7) if i % 5 else None,
        )
        for i in range(NODES)
    ]
    rng = random.Random(n)
    sql = (
        f"INSERT INTO {Task._meta.db_table} (id, name, details, assigned_node_id, status,"
        " locked_at, active, attempts, failure_cause, failure_reason, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    at = ops.adapt_datetimefield_value
    for start in range(0, n, CHUNK):
        rows = []
        for i in range(start, min(start + CHUNK, n)):
            created = now - timedelta(seconds=rng.randrange(30 * 86_400))
            roll = rng.random()
            if roll >= open_share:
                status = "failed" if roll < open_share + (1 - open_share) / 10 else "completed"
                updated = created + timedelta(seconds=rng.randrange(3600))
                locked = created + timedelta(hours=2)
            else:
                status = "pending" if roll < open_share * 0.6 else "in_progress"
                updated = created
                late = rng.random() < 0.04
                locked = now + timedelta(
                    seconds=rng.randrange(-3600, 0) if late else rng.randrange(1, 86_400)
                )
            rows.append(
                (
                    uuid.UUID(int=rng.getrandbits(80) << 48 | i, version=4).hex,
                    f"bench task {i}",
                    "benchmark",
                    nodes[rng.randrange(NODES)].pk.hex,
                    status,
                    at(locked),
                    rng.random() >= 0.01,
                    1,
                    rng.choice(CAUSES) if status == "failed" else "",
                    "",
                    at(created),
                    at(min(updated, now)),
                )
            )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)
    SweepRun.objects.bulk_create(
        SweepRun(
            started_at=now - timedelta(minutes=i),
            finished_at=now - timedelta(minutes=i) + timedelta(milliseconds=40),
            failed_count=i % 3,
        )
        for i in range(1000)
    )


def clear() -> None:
    from django.db import connection

    from accounts.models import User
    from tasks.models import SweepRun, Task, TaskHistory

    with connection.cursor() as cursor:
        if connection.vendor == "mysql":  # TRUNCATE: a million DELETEs take minutes
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        for model in (TaskHistory, Task):
            empty = "TRUNCATE TABLE" if connection.vendor == "mysql" else "DELETE FROM"
            cursor.execute(f"{empty} {model._meta.db_table}")
        if connection.vendor == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
    SweepRun.objects.all().delete()
    User.objects.filter(email__startswith="bench-dash-").delete()


def median_ms(action, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of tasks, e.g. 1000000")
    parser.add_argument("--open", type=float, default=5, help="percentage of open tasks")
    parser.add_argument("--keep", action="store_true", help="keep the data for another run")
    args = parser.parse_args()
    sweep.BENCH_DB_NAME = os.environ.get("BENCH_DB_NAME", "taskmgmt_bench_dashboard")
    with tempfile.TemporaryDirectory(prefix="taskmgmt-bench-") as workdir:
        os.environ["DASHBOARD_CACHE_SECONDS"] = "0"
        os.environ.setdefault("ALLOWED_HOSTS", "testserver")
        # The timings, not a JSON line per timed request.
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        # DEBUG off, as served: the admin's static files need their manifest.
        os.environ["STATIC_ROOT"] = str(Path(workdir) / "static")
        sweep.setup_django(sweep.bench_database_url(Path(workdir)))
        from django.core.management import call_command
        from django.db import connection

        call_command("collectstatic", interactive=False, verbosity=0)
        from django.test import Client
        from django.utils import timezone

        from accounts.models import Role, User
        from nodes.models import Node
        from tasks import dashboard, selectors
        from tasks.models import Task

        print(f"database: {connection.vendor} {connection.settings_dict['NAME']}")
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        open_now = Task.objects.filter(status__in=["pending", "in_progress"]).count()
        if Task.objects.count() != args.n or abs(open_now / args.n * 100 - args.open) > 0.5:
            clear()
            started = time.perf_counter()
            load(args.n, args.open / 100)
            print(f"loaded {args.n:,} tasks in {time.perf_counter() - started:.1f}s")
            if connection.vendor == "mysql":
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE TABLE {Task._meta.db_table}")
        now = timezone.now()
        since = now - timedelta(hours=24)
        panels = {
            "open by status x node, deadlines, oldest": lambda: selectors.open_by_node_and_status(
                now
            ),
            "finished in 24 h by hour, cause and node": lambda: selectors.finished_since(since),
            "nodes with liveness": lambda: list(Node.objects.with_liveness(now).values()),
            "every panel (the snapshot)": lambda: dashboard._compute(timezone.now(), "default"),
        }
        for label, query in panels.items():
            print(f"{label:42} {median_ms(query):8.1f} ms")
        admin, _ = User.objects.get_or_create(
            email="bench-dash-admin@example.com", defaults={"role": Role.ADMIN, "name": "Bench"}
        )
        client = Client()
        client.force_login(admin)

        def page():
            response = client.get("/admin/")
            assert response.status_code == 200, response.status_code

        page()
        full = median_ms(page)
        print(f"{'GET /admin/ (the whole page, uncached)':42} {full:8.1f} ms")
        from django.test import override_settings

        with override_settings(DASHBOARD_CACHE_SECONDS=600):
            page()
            cached = median_ms(page)
        print(f"{'GET /admin/ (figures cached: the rest)':42} {cached:8.1f} ms")
        node = User.objects.nodes().order_by("email").first()

        def node_page():
            response = client.get(f"/admin/node/{node.pk}/")
            assert response.status_code == 200, response.status_code

        node_page()
        one_node = median_ms(node_page)
        print(f"{'GET /admin/node/<id>/ (1/20 of the tasks)':42} {one_node:8.1f} ms")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(
            f"| {connection.vendor} | {args.n:,} | {args.open:g} % | {full:.0f} ms"
            f" | {one_node:.0f} ms |"
        )
        if not args.keep:
            clear()


if __name__ == "__main__":
    main()
