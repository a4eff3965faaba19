"""CPU per request in-process: the WSGI application called in a loop, no server.

    make bench-inprocess                               # every scenario, medians of 3 rounds
    SCENARIOS=heartbeat,shift_status make bench-inprocess
    PROFILE=heartbeat make bench-inprocess             # and a CPU-time cProfile of one scenario

What a request costs the app itself (Django, DRF, the middleware, our code and the
database driver's client side), measured with `time.process_time`: this process's
CPU, which other work on the machine barely moves, unlike req/s under wrk. The
requests are the ones `make bench-load` sends, through every middleware, with real
JWTs, MariaDB and Redis.

Uses a database of its own on MariaDB (BENCH_DB_NAME, default `taskmgmt_inprocess`
on DB_HOST:DB_PORT), seeded once by bench/load/seed.py (100,000 tasks over 10 nodes,
a fleet of nodes for the heartbeat, pending tasks to claim) and kept between runs:
shift-status and claim use up pending tasks (a run takes about 2,000 of them),
RESEED=1 starts again. Redis: BENCH_CACHE_URL (default db 5, as bench-load).
Log lines are written to /dev/null (their formatting is still counted).
"""

import cProfile
import io
import itertools
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import MySQLdb

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("N", 300))
WARMUP = int(os.environ.get("WARMUP", 30))
ROUNDS = int(os.environ.get("ROUNDS", 3))
DB_HOST = os.environ.get("DB_HOST", "127.0.0.1")
DB_PORT = int(os.environ.get("DB_PORT", 3306))
DB_USER = os.environ.get("DB_USER", "root")
DB_PASSWORD = os.environ.get("DB_PASSWORD", "")
DB_NAME = os.environ.get("BENCH_DB_NAME", "taskmgmt_inprocess")
CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/5")
ALL_SCENARIOS = ["healthz", "detail", "heartbeat", "progress", "claim", "shift_status"]
UNLIMITED = "10000000/m"

os.environ.update(
    DEBUG="false",
    SECRET_KEY=os.environ.get("SECRET_KEY") or "bench-only-not-secret-" + "x" * 40,
    ALLOWED_HOSTS="127.0.0.1,localhost",
    DATABASE_URL=f"mysql://{DB_USER}:{DB_PASSWORD}@{DB_HOST}:{DB_PORT}/{DB_NAME}",
    CACHE_URL=CACHE_URL,
    JWT_ACCESS_MINUTES="600",
    RATELIMIT_API=UNLIMITED,
    RATELIMIT_LOGIN_IP=UNLIMITED,
    RATELIMIT_LOGIN_USER=UNLIMITED,
    DJANGO_SETTINGS_MODULE="taskmgmt.settings",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_database() -> None:
    """Create, migrate and seed the benchmark's database unless it is there already; a
    kept one is migrated to this checkout's schema (a new column: every write failed)."""
    server = MySQLdb.connect(host=DB_HOST, port=DB_PORT, user=DB_USER, password=DB_PASSWORD)
    cursor = server.cursor()
    if os.environ.get("RESEED") == "1":
        cursor.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
    python = sys.executable
    migrate = [python, "manage.py", "migrate", "--noinput", "-v", "0"]
    if cursor.execute("SHOW DATABASES LIKE %s", [DB_NAME]):
        server.close()
        subprocess.run(migrate, cwd=ROOT, check=True)
        return
    cursor.execute(f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4")
    server.close()
    log(f"migrating and seeding {DB_NAME} (a minute or two, once)")
    subprocess.run(migrate, cwd=ROOT, check=True)
    seed_env = {"TASKS": "100000", "NODES": "10", "CLAIM_TASKS": "20000", "CLAIM_NODES": "16"}
    subprocess.run(
        [python, str(ROOT / "bench" / "load" / "seed.py")],
        cwd=ROOT,
        env={**os.environ, **seed_env, "HEARTBEAT_NODES": "1000"},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def setup(wanted: list[str]):
    """Django set up on the benchmark's database: (the WSGI app, {scenario: a function
    returning the next request's environ}, call(app, environ) -> status line)."""
    prepare_database()
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import django

    django.setup()
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User
    from taskmgmt.wsgi import application as app  # sets Django up again, logging too
    from tasks.models import Task, TaskStatus

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (for the whole run)

    def token(user) -> str:
        return str(AccessToken.for_user(user))

    def tasks_of(nodes, status, limit):
        # Newest first: claims (of older seeds' nodes) take the oldest.
        rows = Task.objects.filter(assigned_node__in=nodes, status=status, active=True)
        rows = rows.order_by("-created_at").only("id", "assigned_node")[:limit]
        return [(tokens[task.assigned_node_id], str(task.pk)) for task in rows]

    nodes = list(User.objects.filter(email__regex=r"^node[0-9]+@load"))
    node1 = next(node for node in nodes if node.email == "node1@load.test")
    tokens = {node.pk: token(node) for node in nodes}
    beaters = [token(u) for u in User.objects.filter(email__startswith="beat")[:1000]]
    claimers = list(User.objects.filter(email__regex=r"^claim[0-9]+@"))
    if not Task.objects.filter(assigned_node__in=claimers, status=TaskStatus.PENDING).exists():
        claimers = list(User.objects.filter(email__regex=r"^node([2-9]|10)@"))  # an older seed
    claim_tokens = [token(u) for u in claimers]
    needed = (WARMUP + N) * ROUNDS + 1
    if os.environ.get("PROFILE"):
        needed += N  # the profiled pass after the rounds
    details = [t for _, t in tasks_of([node1], TaskStatus.PENDING, 1000)]
    in_progress = tasks_of([node1], TaskStatus.IN_PROGRESS, 1000)
    pending = tasks_of(nodes, TaskStatus.PENDING, needed + 1000)
    shown = set(details)
    pending = [(bearer, task) for bearer, task in pending if task not in shown]
    if len(pending) < needed:
        sys.exit(f"{len(pending)} pending tasks left for shift_status, {needed} needed: RESEED=1")

    def environ(method, path, body=None, bearer=None):
        raw = json.dumps(body).encode() if body is not None else b""
        env = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "HTTP_HOST": "127.0.0.1:8000",
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_LENGTH": str(len(raw)),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(raw),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        if body is not None:
            env["CONTENT_TYPE"] = "application/json"
        if bearer:
            env["HTTP_AUTHORIZATION"] = f"Bearer {bearer}"
        return env

    detail_ids, beats = itertools.cycle(details), itertools.cycle(beaters)
    reports, claims = itertools.cycle(in_progress), itertools.cycle(claim_tokens)
    starts = iter(pending)
    node1_token = tokens[node1.pk]

    def progress():
        bearer, task_id = next(reports)
        body = {"taskId": task_id, "percent": 50, "message": "half", "checkpoint": {"row": 1}}
        return environ("PUT", "/api/tasks/progress", body, bearer)

    def shift_status():
        bearer, task_id = next(starts)
        body = {"taskId": task_id, "taskStatus": "in_progress"}
        return environ("PUT", "/api/tasks/shift-status", body, bearer)

    scenarios = {
        "healthz": lambda: environ("GET", "/healthz"),
        "detail": lambda: environ("GET", f"/api/tasks/{next(detail_ids)}", bearer=node1_token),
        "heartbeat": lambda: environ("POST", "/api/nodes/heartbeat", bearer=next(beats)),
        "progress": progress,
        "claim": lambda: environ("POST", "/api/tasks/claim", bearer=next(claims)),
        "shift_status": shift_status,
    }

    if "heartbeat" in wanted:  # each token verified once, as in a server that has run a while
        for _ in beaters:
            call(app, scenarios["heartbeat"]())
    return app, scenarios


def call(app, env) -> str:
    status = []
    b"".join(app(env, lambda s, h, *a: status.append(s)))
    return status[0]


def main() -> None:
    wanted = [s for s in os.environ.get("SCENARIOS", ",".join(ALL_SCENARIOS)).split(",") if s]
    app, scenarios = setup(wanted)

    results = {name: [] for name in wanted}
    for round_ in range(ROUNDS):
        for name in wanted:
            make = scenarios[name]
            for _ in range(WARMUP):
                status = call(app, make())
                if not status.startswith("2"):
                    sys.exit(f"{name} answered {status}")
            envs = [make() for _ in range(N)]  # built outside the timed loop
            started = time.process_time()
            statuses = [call(app, env) for env in envs]
            results[name].append((time.process_time() - started) / N * 1000)
            refused = sum(not s.startswith("2") for s in statuses)
            if refused:
                sys.exit(f"{name}: {refused} of {N} answers were not 2xx")
        log(f"round {round_ + 1}/{ROUNDS} done")

    print(f"in-process CPU per request, ms (median of {ROUNDS} rounds x {N}; all rounds)")
    for name in wanted:
        runs = results[name]
        listed = " ".join(f"{r:.3f}" for r in runs)
        print(f"{name:14} {statistics.median(runs):7.3f}   [{listed}]")

    profiled = os.environ.get("PROFILE")
    if profiled:
        envs = [scenarios[profiled]() for _ in range(N)]
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        for env in envs:
            call(app, env)
        profile.disable()
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(30)
        if os.environ.get("CALLERS"):
            stats.print_callers(os.environ["CALLERS"])


if __name__ == "__main__":
    main()
