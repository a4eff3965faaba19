"""Benchmark of the expiry sweep; run it as `make bench-sweep N=100000`.

Uses its own database, never the dev or test one: `taskmgmt_bench` on the server
of DATABASE_URL when that is a MySQL/MariaDB URL, else a temporary SQLite file.
It creates N expired tasks, runs `manage.py collect_failed` in a subprocess (so
the peak memory measured is the sweep's own), checks that exactly N tasks failed
with N history rows, then resets the same data and times the simplest
hand-written SQL sweep, one INSERT … SELECT and one UPDATE in a transaction:
the floor that ours is compared with.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import django_setup

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB_NAME = "taskmgmt_bench"
INSERT_CHUNK = 10_000


def bench_database_url(workdir: Path) -> str:
    return django_setup.bench_database_url(workdir, BENCH_DB_NAME)


def setup_django(database_url: str) -> None:
    django_setup.setup_django(database_url, LOG_LEVEL="INFO")


def tables():
    from tasks.models import Task, TaskHistory

    return Task._meta.db_table, TaskHistory._meta.db_table


def clear_data() -> None:
    from django.db import connection

    from accounts.models import User

    task_table, history_table = tables()
    empty = "TRUNCATE TABLE" if connection.vendor == "mysql" else "DELETE FROM"
    with connection.cursor() as cursor:
        cursor.execute(f"{empty} {history_table}")
        cursor.execute(f"DELETE FROM {task_table}")
    User.objects.filter(email="bench-node@example.com").delete()


def create_expired_tasks(n: int) -> None:
    """N open tasks past their deadline, a quarter in progress; multi-row INSERTs.

    Ids ascend in their last 12 digits, which MariaDB's uuid type sorts by
    first, so rows append to the table instead of landing all over it (much
    faster to load). Deadlines are random, so the order of the deadline index
    has nothing to do with the order of the ids, as with real, random ids.
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import Role, User
    from tasks.models import Task

    node = User.objects.create(email="bench-node@example.com", name="Bench node", role=Role.NODE)
    task_table, _ = tables()
    ops = connection.ops
    now = timezone.now()
    created = ops.adapt_datetimefield_value(now - timedelta(days=2))
    columns = [
        "id", "name", "details", "assigned_node_id", "status", "locked_at", "active",
        "created_at", "updated_at",
    ]  # fmt: skip
    # Every other NOT NULL column at its model default (attempts, priority, …), so the
    # loader keeps working as columns are added.
    defaults = [
        (field.column, field.get_db_prep_save(field.get_default(), connection))
        for field in Task._meta.concrete_fields
        if field.column not in columns and not field.null
    ]
    columns += [column for column, _ in defaults]
    sql = (
        f"INSERT INTO {task_table} ({', '.join(columns)})"
        f" VALUES ({', '.join(['%s'] * len(columns))})"
    )
    rng = random.Random(n)  # the same data for the same N
    cache_size = set_sqlite_cache_size("-262144")  # 256 MiB while loading only
    for start in range(0, n, INSERT_CHUNK):
        rows = [
            (
                uuid.UUID(int=rng.getrandbits(80) << 48 | i, version=4).hex,
                f"bench task {i}",
                "benchmark",
                node.pk.hex,
                "in_progress" if i % 4 == 0 else "pending",
                ops.adapt_datetimefield_value(
                    now - timedelta(hours=1, seconds=rng.randrange(30 * 86_400))
                ),
                True,
                created,
                created,
                *(value for _, value in defaults),
            )
            for i in range(start, min(start + INSERT_CHUNK, n))
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)
    set_sqlite_cache_size(cache_size)


def set_sqlite_cache_size(size: str | None) -> str | None:
    """SQLite's page cache for this connection; returns the previous size (None elsewhere).

    The loader gets a large one; both sweeps run with SQLite's default.
    """
    from django.db import connection

    if connection.vendor != "sqlite" or size is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size")
        (previous,) = cursor.fetchone()
        cursor.execute(f"PRAGMA cache_size = {int(size)}")
    return str(previous)


def counts() -> tuple[int, int, int]:
    """(expired open tasks, failed tasks, status_change history rows)."""
    from django.db import connection

    task_table, history_table = tables()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM {task_table} WHERE status IN ('pending', 'in_progress')"
        )
        (open_count,) = cursor.fetchone()
        cursor.execute(f"SELECT COUNT(*) FROM {task_table} WHERE status = 'failed'")
        (failed_count,) = cursor.fetchone()
        cursor.execute(f"SELECT COUNT(*) FROM {history_table} WHERE action = 'status_change'")
        (history_count,) = cursor.fetchone()
    return open_count, failed_count, history_count


def check_swept(n: int, label: str) -> None:
    open_count, failed_count, history_count = counts()
    if (open_count, failed_count, history_count) != (0, n, n):
        sys.exit(
            f"{label}: expected 0 open, {n} failed, {n} history rows; "
            f"got {open_count}, {failed_count}, {history_count}"
        )


# Linux counts a parent's memory at fork into its child's peak RSS, so the
# sweep is started by this small process, itself started before Django loads.
LAUNCHER = """
import json, os, subprocess, sys, time
request = json.loads(sys.stdin.readline())
with open(request["output"], "w") as output:
    started = time.perf_counter()
    child = subprocess.Popen(
        request["command"], cwd=request["cwd"], env=request["env"],
        stdout=output, stderr=subprocess.STDOUT,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
print(json.dumps({"wall": wall, "exit": os.waitstatus_to_exitcode(status),
                  "peak_kb": usage.ru_maxrss}))
"""


def start_launcher() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def run_our_sweep(launcher: subprocess.Popen, batch_size: int | None) -> dict:
    """`manage.py collect_failed` in a child process: wall time, its own timing, peak RSS."""
    command = [sys.executable, str(ROOT / "manage.py"), "collect_failed"]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    with tempfile.NamedTemporaryFile("r") as output:
        request = {"command": command, "cwd": str(ROOT), "env": dict(os.environ)}
        launcher.stdin.write(json.dumps({**request, "output": output.name}) + "\n")
        launcher.stdin.flush()
        result = json.loads(launcher.stdout.readline())
        text = output.read()
    launcher.wait()
    if result["exit"] != 0:
        sys.exit(f"collect_failed exited with {result['exit']}:\n{text}")
    log = next(
        json.loads(line)
        for line in text.splitlines()
        if line.startswith("{") and json.loads(line).get("event") == "sweep"
    )
    return {
        "wall": result["wall"],
        "sweep": log["duration_ms"] / 1000,
        "failed": log["failed_count"],
        "peak_mb": result["peak_kb"] / 1024,
    }


def reset_to_expired() -> None:
    """Undo a sweep: each task gets back the status its history row recorded."""
    from django.db import connection, transaction

    task_table, history_table = tables()
    empty = "TRUNCATE TABLE" if connection.vendor == "mysql" else "DELETE FROM"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {task_table} SET status = (SELECT h.from_value FROM {history_table} h"
            f" WHERE h.task_id = {task_table}.id AND h.action = 'status_change')"
        )
    with connection.cursor() as cursor:
        cursor.execute(f"{empty} {history_table}")


def run_floor_sweep() -> float:
    """The same sweep as two statements in one transaction: what the database alone needs."""
    from django.db import connection, transaction
    from django.utils import timezone

    task_table, history_table = tables()
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    expired = "active = %s AND status IN ('pending', 'in_progress') AND locked_at < %s"
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {history_table}"
            " (task_id, action, from_value, to_value, performed_by_id, created_at, cause)"
            f" SELECT id, 'status_change', status, 'failed', NULL, %s, 'deadline' FROM {task_table}"
            f" WHERE {expired}",
            [now, True, now],
        )
        cursor.execute(
            f"UPDATE {task_table} SET status = 'failed', failure_cause = 'deadline',"
            f" updated_at = %s WHERE {expired}",
            [now, True, now],
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of expired tasks, e.g. 100000")
    parser.add_argument("--batch-size", type=int, help="passed on to collect_failed")
    args = parser.parse_args()
    launcher = start_launcher()

    with tempfile.TemporaryDirectory(prefix="taskmgmt-bench-") as workdir:
        database_url = bench_database_url(Path(workdir))
        setup_django(database_url)
        from django.db import connection

        print(f"database: {connection.vendor} {connection.settings_dict['NAME']}")
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        clear_data()
        started = time.perf_counter()
        create_expired_tasks(args.n)
        print(f"created {args.n:,} expired tasks in {time.perf_counter() - started:.1f}s")

        ours = run_our_sweep(launcher, args.batch_size)
        check_swept(args.n, "collect_failed")
        print(
            f"collect_failed: {ours['sweep']:.2f}s sweeping ({ours['wall']:.2f}s with start-up),"
            f" {args.n / ours['sweep']:,.0f} tasks/s, peak memory {ours['peak_mb']:.0f} MB"
        )

        reset_to_expired()
        if counts() != (args.n, 0, 0):
            sys.exit(f"reset failed: {counts()}")
        floor = run_floor_sweep()
        check_swept(args.n, "floor")
        print(f"hand-written SQL floor: {floor:.2f}s, {args.n / floor:,.0f} tasks/s")
        print(
            f"ours/floor: {ours['sweep'] / floor:.2f}x sweeping,"
            f" {ours['wall'] / floor:.2f}x with start-up"
        )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        rate = args.n / ours["sweep"]
        print(
            f"| {connection.vendor} | {args.n:,} | {ours['sweep']:.1f} s | {rate:,.0f}"
            f" | {ours['peak_mb']:.0f} MB | {floor:.1f} s | {ours['sweep'] / floor:.2f}x |"
        )
        clear_data()


if __name__ == "__main__":
    main()
