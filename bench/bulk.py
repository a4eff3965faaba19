"""Bulk create against single creates: `python bench/bulk.py` (or `make bench-bulk`).

Uses its own database, never the dev or test one: `<name>_bulk_bench` on the server
of DATABASE_URL when that is a MySQL/MariaDB URL, else a temporary SQLite file. It
times, in this process (the DRF view, serializers and queries; no network), one
POST /api/tasks/bulk of N tasks (default 1,000, BULK_MAX_TASKS) against N POST
/api/tasks of the same bodies, each the median of --runs after one warm-up, and
prints both and their ratio, and the CPU this process spent on a bulk request
(steadier than wall-clock time on a busy machine; the database's work is not in
it). Half the bulk items name a node, half carry a nodeSelector for placement.
`--payload BYTES` gives every item a JSON payload of about that size (the body may then
pass DATA_UPLOAD_MAX_MEMORY_SIZE, up to BULK_MAX_BODY_BYTES).
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import django_setup

ROOT = Path(__file__).resolve().parent.parent
NODES = 10


def bench_database_url(workdir: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    name = (urlsplit(url).path.strip("/") or "taskmgmt") if url.startswith("mysql") else "bulk"
    return django_setup.bench_database_url(workdir, f"{name}_bulk_bench")


def setup_django(database_url: str) -> None:
    django_setup.setup_django(
        database_url,
        ALLOWED_HOSTS="testserver",
        RATELIMIT_API="1000000/m",
        # The bench nodes beat once, at the start: they must stay alive throughout.
        NODE_HEARTBEAT_SECONDS="3600",
        NODE_DOWN_AFTER="7200",
    )


def measure(n: int, runs: int, payload: int) -> None:
    from django.utils import timezone
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import RefreshToken

    from accounts.models import Role, User
    from nodes.services import node_set_labels

    admin, _ = User.objects.get_or_create(
        email="bench-admin@example.com", defaults={"name": "Bench admin", "role": Role.ADMIN}
    )
    nodes = []
    for i in range(NODES):
        node, _ = User.objects.get_or_create(
            email=f"bench-node{i}@example.com",
            defaults={"name": f"Bench node {i}", "role": Role.NODE},
        )
        node_set_labels(node=node, labels={"gpu": "true" if i % 2 else "false"})
        nodes.append(node)
    User.objects.filter(role=Role.NODE).update(last_seen=timezone.now())
    client = APIClient()
    token = RefreshToken.for_user(admin).access_token
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    deadline = (timezone.now() + timedelta(days=7)).isoformat()

    def body(i: int) -> dict:
        item = {"taskName": f"bench {i}", "taskDetails": "bench", "lockedAt": deadline}
        if i % 2:
            item["nodeSelector"] = {"gpu": "true"}
        else:
            item["assignedNode"] = str(nodes[i % NODES].pk)
        if payload:
            item["payload"] = {"input": "x" * max(payload - 13, 0)}  # {"input": ""} is 13
        return item

    bodies = [body(i) for i in range(n)]
    if payload:
        size = len(json.dumps({"tasks": bodies}))
        print(f"each item with a {payload:,}-byte payload: a body of {size:,} bytes")

    cpu = []

    def one_bulk() -> float:
        started, cpu_started = time.perf_counter(), time.process_time()
        response = client.post("/api/tasks/bulk", {"tasks": bodies}, format="json")
        elapsed = time.perf_counter() - started
        cpu.append(time.process_time() - cpu_started)
        assert response.status_code == 201, response.content[:500]
        return elapsed

    def singles() -> float:
        started = time.perf_counter()
        for item in bodies:
            response = client.post("/api/tasks", item, format="json")
            assert response.status_code == 201, response.content[:500]
        return time.perf_counter() - started

    one_bulk()  # warm-up
    bulk = statistics.median(one_bulk() for _ in range(runs))
    single = statistics.median(singles() for _ in range(max(1, runs // 2)))
    print(
        f"bulk create of {n} tasks, one request: {bulk * 1000:.0f} ms (median of {runs}),"
        f" of which this process's CPU {statistics.median(cpu[1:]) * 1000:.0f} ms"
    )
    print(f"{n} single creates: {single * 1000:.0f} ms")
    print(f"ratio: bulk takes {bulk / single:.1%} of the single creates' time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--payload", type=int, default=0, metavar="BYTES")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        setup_django(bench_database_url(Path(workdir)))
        measure(args.n, args.runs, args.payload)


if __name__ == "__main__":
    main()
