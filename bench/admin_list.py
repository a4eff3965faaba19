"""Server time of the admin's task list at N tasks: `python bench/admin_list.py 100000`.

Uses its own database, never the dev or test one: `<name>_admin_bench` on the
server of DATABASE_URL when that is a MySQL/MariaDB URL, else a temporary SQLite
file. It loads N tasks over 10 nodes, created over the last two years, logs in
an admin and times GET /admin/tasks/task/ in this process (the Django view,
template and queries; no network), unfiltered and with a few filters. Each
figure is the median of --runs requests after one warm-up; the query that took
longest is named. `--stock` renders Django's own date_hierarchy instead of ours,
for the comparison. CPU is this process's (on SQLite the database's work
too): on a busy machine it is steadier than the wall-clock figures.
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
from urllib.parse import urlsplit

import django_setup

ROOT = Path(__file__).resolve().parent.parent
INSERT_CHUNK = 10_000
NODES = 10
PAGES = {
    "unfiltered": "",
    "one year": "?created_at__year={year}",
    "failed": "?status__exact=failed",
    "overdue": "?overdue=yes",
    "deleted too": "?deleted=all",
}


def bench_database_url(workdir: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    name = (urlsplit(url).path.strip("/") or "taskmgmt") if url.startswith("mysql") else "admin"
    return django_setup.bench_database_url(workdir, f"{name}_admin_bench")


def setup_django(database_url: str, workdir: Path) -> None:
    django_setup.setup_django(
        database_url, STATIC_ROOT=str(workdir / "static"), ALLOWED_HOSTS="testserver"
    )
    from django.core.management import call_command

    call_command("collectstatic", verbosity=0, interactive=False)  # as `make serve` does


def load(n: int) -> None:
    """N tasks (statuses mixed, 1 % soft-deleted), skipped when the database has them."""
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import Role, User
    from tasks.models import Task

    existing = Task.objects.count()
    if existing == n:  # kept from an earlier run (BENCH_DIR, or the MariaDB database)
        return
    if existing:
        sys.exit(f"The bench database holds {existing} tasks, not {n}: drop it first.")
    nodes = [
        User.objects.get_or_create(
            email=f"bench-node{i}@example.com",
            defaults={"name": f"Bench node {i}", "role": Role.NODE},
        )[0]
        for i in range(NODES)
    ]
    ops = connection.ops
    now = timezone.now()
    rng = random.Random(n)
    statuses = ["pending"] * 5 + ["in_progress", "completed", "completed", "failed"]
    sql = (
        f"INSERT INTO {Task._meta.db_table} (id, name, details, assigned_node_id, status,"
        " locked_at, active, created_at, updated_at, attempts, failure_cause, failure_reason)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0, '', '')"
    )
    for start in range(0, n, INSERT_CHUNK):
        rows = []
        for i in range(start, min(start + INSERT_CHUNK, n)):
            created = now - timedelta(seconds=rng.randrange(730 * 86_400))
            deadline = created + timedelta(hours=rng.randrange(1, 72))
            rows.append(
                (
                    uuid.UUID(int=rng.getrandbits(128), version=4).hex,
                    f"Nightly re-index of shard {i} for the search cluster",
                    "benchmark",
                    nodes[i % NODES].pk.hex,
                    statuses[i % len(statuses)],
                    ops.adapt_datetimefield_value(deadline),
                    i % 100 != 0,
                    ops.adapt_datetimefield_value(created),
                    ops.adapt_datetimefield_value(created),
                )
            )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)


def measure(runs: int, stock: bool) -> None:
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from accounts.models import Role, User
    from tasks.admin import TaskAdmin

    if stock:
        TaskAdmin.change_list_template = "admin/change_list.html"
    admin, _ = User.objects.get_or_create(
        email="bench-admin@example.com", defaults={"name": "Bench admin", "role": Role.ADMIN}
    )
    client = Client()
    client.force_login(admin)
    print(f"{connection.vendor}, {'stock' if stock else 'our'} date hierarchy, median of {runs}")
    slowest, in_sql = {}, []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            took = time.perf_counter() - started
            in_sql.append(took)
            if took > slowest.get("took", 0):
                slowest.update(took=took, sql=sql)

    for label, query in PAGES.items():
        url = "/admin/tasks/task/" + query.format(year=timezone.now().year - 1)
        times, cpu = [], []
        slowest.clear()
        in_sql.clear()
        client.get(url)  # warm-up: caches, compiled templates
        with connection.execute_wrapper(timed):
            for _ in range(runs):
                started, cpu_started = time.perf_counter(), time.process_time()
                response = client.get(url)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
                assert response.status_code == 200, response.status_code
        print(
            f"  {label:12} median {statistics.median(times) * 1000:6.1f} ms,"
            f" best {min(times) * 1000:6.1f} ms, CPU {statistics.median(cpu) * 1000:6.1f} ms,"
            f" {sum(in_sql) / runs * 1000:6.1f} ms of it in {len(in_sql) // runs} queries;"
            f" slowest {slowest['took'] * 1000:6.1f} ms: {slowest['sql'][:70]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--stock", action="store_true", help="Django's own date_hierarchy")
    args = parser.parse_args()
    workdir = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="admin-bench-"))
    setup_django(bench_database_url(workdir), workdir)
    started = time.perf_counter()
    load(args.n)
    print(f"{args.n} tasks ready in {time.perf_counter() - started:.1f} s ({workdir})")
    measure(args.runs, args.stock)


if __name__ == "__main__":
    main()
