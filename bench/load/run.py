"""Load benchmark: taskmgmt under gunicorn on MariaDB, driven by wrk over loopback.

    make bench-load                 # every scenario, medians of 3 rounds of 20 s, 16 connections
    DURATION=5 REPEAT=1 make bench-load
    SCENARIOS=list_all,detail REPEAT=5 make bench-load
    SCENARIOS=heartbeat,progress,list_all,filter_pending,claim,work_data make bench-load
    PIN=1 make bench-load           # server on core 1, wrk on core 0 (CPU per request, quietly)

Drops and recreates its own MariaDB database (BENCH_DB_NAME, default
`taskmgmt_load`), migrates it, seeds it (seed.py: 10 nodes + 1 admin and
100,000 tasks, a fleet of nodes for the heartbeat, pending tasks for the
claim), and starts gunicorn exactly as `make serve` does (gunicorn.conf.py
defaults, DEBUG off, Redis cache). By default nothing is pinned: server,
MariaDB, Redis and wrk share the cores, as on a small box. Rounds alternate:
each round runs every scenario once, `/healthz` first, so every figure is also
given as a ratio to the `/healthz` floor of the same run. Rate limits are
raised for the run so they never answer 429, but still counted in Redis as in
production. Prints a table and writes it with the raw numbers to
bench/results/. Traffic goes to 127.0.0.1 only; every wrk run is bounded by
DURATION.
"""

import contextlib
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import MySQLdb
import redis

ROOT = Path(__file__).resolve().parents[2]
LUA_DIR = ROOT / "bench" / "load"
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


DURATION = int(os.environ.get("DURATION", 20))
CONNECTIONS = int(os.environ.get("CONNECTIONS", 16))
REPEAT = int(os.environ.get("REPEAT", 3))
# 0 (the default): a free port, so two benchmarks on one machine never meet.
PORT = int(os.environ.get("PORT", 0)) or free_port()
TASKS = int(os.environ.get("TASKS", 100_000))
NODES = int(os.environ.get("NODES", 10))
# The heartbeat's fleet: each request beats as the next of these nodes, each with its token.
HEARTBEAT_NODES = int(os.environ.get("HEARTBEAT_NODES", 1000))
CLAIM_NODES = int(os.environ.get("CLAIM_NODES", 16))
# Pending tasks for the claim scenario: enough for 1,200 claims/s through every round.
CLAIM_TASKS = int(os.environ.get("CLAIM_TASKS", (DURATION + 2) * REPEAT * 1200))
DB_HOST = os.environ.get("DB_HOST", "127.0.0.1")
DB_PORT = int(os.environ.get("DB_PORT", 3306))
DB_USER = os.environ.get("DB_USER", "root")
DB_PASSWORD = os.environ.get("DB_PASSWORD", "")
DB_NAME = os.environ.get("BENCH_DB_NAME", "taskmgmt_load")
CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/5")
# PIN=1: the server on SERVER_CORES and wrk on CLIENT_CORES (the CPU per request with
# nothing else on the server's core); by default nothing is pinned, as users run it.
PIN = os.environ.get("PIN") == "1"
# SERVER_CMD: another server command for the same app ({port} is replaced), e.g. to
# measure a different production server against gunicorn in one sitting.
SERVER_CMD = os.environ.get("SERVER_CMD", "")
SERVER_CORES = os.environ.get("SERVER_CORES", "1")
CLIENT_CORES = os.environ.get("CLIENT_CORES", "0")
# Pinned, server and wrk run at a higher priority (root only) so that other work on
# the machine disturbs them less; unpinned, everything keeps its priority, as deployed.
NICE = int(os.environ.get("NICE", -10 if PIN and os.geteuid() == 0 else 0))
# PROFILE=1: py-spy samples every gunicorn worker during each run and writes a profile
# (PROFILE_FORMAT: flamegraph SVG, speedscope JSON or raw collapsed stacks) to bench/results/.
PROFILE = os.environ.get("PROFILE") == "1"
PROFILE_FORMAT = os.environ.get("PROFILE_FORMAT", "flamegraph")
PROFILE_SUFFIX = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}
BASE_URL = f"http://127.0.0.1:{PORT}"

ALL_SCENARIOS = [
    "healthz", "list_all", "filter_pending", "detail", "shift_status", "heartbeat", "progress",
    "claim", "claim_payload", "list_all_payload", "filter_pending_payload", "login",
]  # fmt: skip
# Shorthand for the work-data rows: each beside the figure it is compared with.
GROUPS = {
    "work_data": {"progress", "claim_payload", "list_all_payload", "filter_pending_payload"},
}
# The newest tasks that get a payload before the `_payload` list scenarios: every task
# their pages read (the first page of /all, the first node's newest pending ones).
PAYLOAD_TASKS = int(os.environ.get("PAYLOAD_TASKS", 5000))
# Far above what 16 connections can send in a run: limits are checked but never hit.
UNLIMITED = "10000000/m"


def launcher(cores: str) -> list[str]:
    """The prefix that starts the server or wrk: pinned and reniced, or nothing."""
    prefix = ["nice", "-n", str(NICE)] if NICE else []
    return [*prefix, "taskset", "-c", cores] if PIN else prefix


@dataclass
class Scenario:
    name: str
    title: str
    script: str
    path: str
    token: str | None = None
    env: dict = field(default_factory=dict)
    # (method, path, token) of a request that tells whether this build has the endpoint.
    probe: tuple | None = None
    # Run after every other scenario's rounds, once the newest tasks have payloads.
    after_payloads: bool = False


@dataclass
class Result:
    scenario: str
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    no_content: int  # 204 answers (a claim that found nothing)
    socket_errors: int
    peak_rss_mib: float
    app_cpu_ms: float  # gunicorn (master and workers) CPU time per request
    db_cpu_ms: float  # mariadbd CPU time per request
    redis_cpu_ms: float  # redis-server CPU time per request
    app_cores: float  # cores gunicorn kept busy
    other_cores: float  # cores busy with anything else meanwhile: above ~0.1 the run was disturbed


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_cpu() -> float:
    """CPU seconds all cores have spent busy since boot."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                queue += [int(child) for child in (task / "children").read_text().split()]
    return found


def store_pids() -> tuple[int, int]:
    """mariadbd's and redis-server's process ids: their CPU is part of each request's cost."""
    connection = MySQLdb.connect(host=DB_HOST, port=DB_PORT, user=DB_USER, password=DB_PASSWORD)
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@pid_file")
        (pid_file,) = cursor.fetchone()
    connection.close()
    return (
        int(Path(pid_file).read_text()),
        redis.Redis.from_url(CACHE_URL).info("server")["process_id"],
    )


def server_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DEBUG"}}
    env.update(
        DEBUG="false",
        SECRET_KEY=f"load-bench-{secrets.token_hex(24)}",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"mysql://{DB_USER}:{DB_PASSWORD}@{DB_HOST}:{DB_PORT}/{DB_NAME}",
        CACHE_URL=CACHE_URL,
        GUNICORN_BIND=f"127.0.0.1:{PORT}",
        JWT_ACCESS_MINUTES="600",
        RATELIMIT_API=UNLIMITED,
        RATELIMIT_LOGIN_IP=UNLIMITED,
        RATELIMIT_LOGIN_USER=UNLIMITED,
    )
    return env


def recreate_database() -> None:
    connection = MySQLdb.connect(host=DB_HOST, port=DB_PORT, user=DB_USER, password=DB_PASSWORD)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{DB_NAME}`")
        cursor.execute(f"CREATE DATABASE `{DB_NAME}` CHARACTER SET utf8mb4")
    connection.close()


def prepare(env: dict, workdir: Path, claim_tasks: int) -> dict:
    started = time.perf_counter()
    recreate_database()
    manage = [PYTHON, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    log(f"database {DB_NAME} migrated in {time.perf_counter() - started:.1f}s; seeding")
    started = time.perf_counter()
    seeded = subprocess.run(
        [PYTHON, str(LUA_DIR / "seed.py")],
        cwd=ROOT,
        env={
            **env,
            "TASKS": str(TASKS),
            "NODES": str(NODES),
            "CLAIM_TASKS": str(claim_tasks),
            "CLAIM_NODES": str(CLAIM_NODES),
            "HEARTBEAT_NODES": str(HEARTBEAT_NODES),
        },
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(seeded.stdout)
    log(
        f"seeded {data['tasks']} tasks on {NODES} nodes, {data['claim_tasks']} to claim, "
        f"{HEARTBEAT_NODES} beating nodes in {time.perf_counter() - started:.1f}s"
    )
    (workdir / "detail_ids.txt").write_text("\n".join(data["detail_ids"]) + "\n")
    (workdir / "pending.txt").write_text("\n".join(f"{n} {i}" for n, i in data["pending"]) + "\n")
    (workdir / "in_progress.txt").write_text(
        "\n".join(f"{n} {i}" for n, i in data["in_progress"]) + "\n"
    )
    claim_payload_tokens = "\n".join(data["claim_payload_tokens"]) + "\n"
    (workdir / "claim_payload_tokens.txt").write_text(claim_payload_tokens)
    (workdir / "claim_tokens.txt").write_text("\n".join(data["claim_tokens"]) + "\n")
    (workdir / "beat_tokens.txt").write_text("\n".join(data["heartbeat_tokens"]) + "\n")
    return data


class Server:
    """gunicorn as `make serve` starts it, its tree's RSS sampled meanwhile."""

    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process = None
        self.peak_rss = 0
        self.peak_pss = 0
        self._sampling = threading.Event()

    def command(self) -> list[str]:
        if SERVER_CMD:
            return [*launcher(SERVER_CORES), *shlex.split(SERVER_CMD.format(port=PORT))]
        return [*launcher(SERVER_CORES), GUNICORN, "-c", "gunicorn.conf.py"]

    def config(self) -> dict:
        """gunicorn's resolved settings for this launch (workers, threads, preload)."""
        if SERVER_CMD:
            return {}
        printed = subprocess.run(
            [*self.command(), "--print-config"],
            cwd=ROOT, env=self.env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return dict(re.findall(r"^(\w+)\s+= (.*)$", printed, re.MULTILINE))

    def start(self) -> None:
        self.log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{BASE_URL}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"gunicorn did not answer /healthz in 30 s; see {self.log_path}")
        self._sampling.set()
        threading.Thread(target=self._sample_rss, daemon=True).start()
        log(f"gunicorn up (pid {self.process.pid}, workers {self.worker_pids()})")

    def pids(self) -> list[int]:
        return descendants(self.process.pid)

    def worker_pids(self) -> list[int]:
        return self.pids()[1:]

    def memory_kib(self, field: str) -> int:
        """`field` (Rss, Pss) summed over the server's whole process tree."""
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
            total += int(match.group(1)) if match else 0
        return total

    def _sample_rss(self) -> None:
        # smaps_rollup walks the page tables; /proc/PID/status's VmRSS may lag behind.
        while self._sampling.is_set():
            self.peak_rss = max(self.peak_rss, self.memory_kib("Rss"))
            # PSS counts the pages processes share (their libraries, a preloaded master) once.
            self.peak_pss = max(self.peak_pss, self.memory_kib("Pss"))
            time.sleep(0.2)

    def cpu(self) -> float:
        return sum(process_cpu(pid) for pid in self.pids())

    def reset_peak(self) -> None:
        self.peak_rss, self.peak_pss = self.memory_kib("Rss"), self.memory_kib("Pss")

    def stop(self) -> None:
        self._sampling.clear()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def http_json(method: str, path: str, body: dict | None = None, token: str | None = None):
    request = urllib.request.Request(
        f"{BASE_URL}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response) if response.status != 204 else None


def login(email: str, password: str) -> str:
    return http_json("POST", "/api/auth/login", {"username": email, "password": password})["token"]


def health_scenario() -> Scenario:
    """The floor: gunicorn + Django + one SELECT 1, no auth. Not one of the targets."""
    return Scenario("healthz", "GET /healthz (the floor)", "get.lua", "/healthz")


def scenarios(data: dict, workdir: Path, wanted: set[str]) -> list[Scenario]:
    every = [health_scenario()]
    lists = {"list_all", "filter_pending", "list_all_payload", "filter_pending_payload"}
    if not wanted & {*lists, "detail", "shift_status", "progress"}:
        node_tokens, admin_token = [], None
    else:
        admin_token = login(data["admin"], data["password"])
        node_tokens = [login(email, data["password"]) for email in data["nodes"]]
        (workdir / "tokens.txt").write_text("\n".join(node_tokens) + "\n")
        every += [
            Scenario("list_all", "(a) GET /api/tasks/all?limit=50, admin", "get.lua",
                     "/api/tasks/all?limit=50", admin_token),
            Scenario("filter_pending", "(b) GET /api/tasks/filter/pending?limit=50, node",
                     "get.lua", "/api/tasks/filter/pending?limit=50", node_tokens[0]),
            Scenario("detail", "(c) GET /api/tasks/{id}, its node", "detail.lua", "/",
                     node_tokens[0], {"BENCH_IDS": str(workdir / "detail_ids.txt")}),
            Scenario("shift_status", "(d) PUT /api/tasks/shift-status pending→in_progress",
                     "shift.lua", "/", None,
                     {"BENCH_IDS": str(workdir / "pending.txt"),
                      "BENCH_TOKENS": str(workdir / "tokens.txt")}),
            Scenario("progress", "PUT /api/tasks/progress, its node", "progress.lua", "/", None,
                     {"BENCH_IDS": str(workdir / "in_progress.txt"),
                      "BENCH_TOKENS": str(workdir / "tokens.txt")},
                     ("PUT", "/api/tasks/progress", node_tokens[0])),
            Scenario("list_all_payload",
                     f"(a) GET /api/tasks/all?limit=50, {data['payload_bytes']} B payloads",
                     "get.lua", "/api/tasks/all?limit=50", admin_token, after_payloads=True),
            Scenario("filter_pending_payload",
                     f"(b) GET /api/tasks/filter/pending?limit=50, {data['payload_bytes']} B "
                     "payloads", "get.lua", "/api/tasks/filter/pending?limit=50", node_tokens[0],
                     after_payloads=True),
        ]  # fmt: skip
    if "heartbeat" in wanted:
        every.append(
            Scenario("heartbeat", f"POST /api/nodes/heartbeat, {HEARTBEAT_NODES} nodes",
                     "post.lua", "/api/nodes/heartbeat", None,
                     {"BENCH_TOKENS": str(workdir / "beat_tokens.txt")},
                     ("POST", "/api/nodes/heartbeat", data["heartbeat_tokens"][0]))
        )  # fmt: skip
    if "claim" in wanted:  # its nodes and tasks are seeded only then
        every.append(
            Scenario("claim", f"POST /api/tasks/claim, {CLAIM_NODES} nodes", "post.lua",
                     "/api/tasks/claim", None, {"BENCH_TOKENS": str(workdir / "claim_tokens.txt")},
                     ("POST", "/api/tasks/claim", data["claim_tokens"][0]))
        )  # fmt: skip
    if "claim_payload" in wanted:
        every.append(
            Scenario("claim_payload",
                     f"POST /api/tasks/claim, {CLAIM_NODES} nodes, {data['payload_bytes']} B "
                     "payloads", "post.lua", "/api/tasks/claim", None,
                     {"BENCH_TOKENS": str(workdir / "claim_payload_tokens.txt")})
        )  # fmt: skip
    every.append(
        Scenario("login", "(e) POST /api/auth/login", "login.lua", "/api/auth/login", None,
                 {"BENCH_EMAIL": data["nodes"][-1], "BENCH_PASSWORD": data["password"]})
    )  # fmt: skip
    return [s for s in every if s.name in wanted]


def missing_endpoint(scenario: Scenario) -> str | None:
    """Why the scenario cannot run on this build (its endpoint is not routed), or None."""
    if scenario.probe is None:
        return None
    method, path, token = scenario.probe
    try:
        http_json(method, path, token=token)
    except urllib.error.HTTPError as error:
        # 405: the path matched another route (/api/tasks/<taskId> takes "claim").
        if error.code == 400:
            return None  # routed: an empty body is a 400 (progress)
        if error.code in (404, 405):
            return f"{method} {path} answers {error.code}: not in this build"
        raise
    return None


def add_payloads(payload: str) -> None:
    """The newest PAYLOAD_TASKS tasks get `payload` (JSON text), for the `_payload` lists."""
    started = time.perf_counter()
    connection = MySQLdb.connect(
        host=DB_HOST, port=DB_PORT, user=DB_USER, password=DB_PASSWORD, database=DB_NAME
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tasks_task SET payload = %s ORDER BY created_at DESC LIMIT %s",
            (payload, PAYLOAD_TASKS),
        )
    connection.commit()
    connection.close()
    log(f"{PAYLOAD_TASKS} newest tasks given a payload in {time.perf_counter() - started:.1f}s")


def warm_up(scenario_list: list[Scenario]) -> None:
    """A few requests per read scenario, so imports and connections are not timed."""
    for scenario in scenario_list:
        if scenario.script != "get.lua":
            continue
        for _ in range(20):
            with contextlib.suppress(urllib.error.HTTPError):
                http_json("GET", scenario.path, token=scenario.token)


def start_profiler(server: Server, scenario: Scenario) -> subprocess.Popen:
    """py-spy on gunicorn's workers for one run: the thread holding the GIL, so CPU, not waits."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = RESULTS_DIR / (f"profile-{scenario.name}-{stamp}.{PROFILE_SUFFIX[PROFILE_FORMAT]}")
    log(f"profiling {scenario.name} into {output}")
    return subprocess.Popen(
        [
            str(Path(PYTHON).with_name("py-spy")), "record", "--pid", str(server.process.pid),
            "--subprocesses", "--duration", str(DURATION), "--format", PROFILE_FORMAT,
            "--output", str(output), "--nonblocking", "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def children_cpu() -> float:
    """CPU seconds of finished child processes (wrk runs as one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(scenario: Scenario, server: Server, shift_offset: int, stores: tuple) -> Result:
    command = [
        *launcher(CLIENT_CORES), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s",
        "--timeout", "30s", "-s", str(LUA_DIR / scenario.script),
    ]  # fmt: skip
    if scenario.token:
        command += ["-H", f"Authorization: Bearer {scenario.token}"]
    command.append(f"{BASE_URL}{scenario.path}")
    env = {
        **os.environ,
        "BENCH_LUA_DIR": str(LUA_DIR),
        "BENCH_OFFSET": str(shift_offset),
        **scenario.env,
    }
    server.reset_peak()
    profiler = start_profiler(server, scenario) if PROFILE else None

    def clocks():
        return (
            server.cpu(),
            *map(process_cpu, stores),
            machine_busy_cpu(),
            children_cpu(),
        )

    before = clocks()
    output = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=DURATION + 60, check=True
    ).stdout
    app_cpu, db_cpu, redis_cpu, busy, wrk_cpu = (
        after - start for after, start in zip(clocks(), before, strict=True)
    )
    if profiler:
        profiler.wait(timeout=60)
    match = re.search(r"^RESULT (\{.*\})$", output, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk printed no result for {scenario.name}:\n{output}")
    raw = json.loads(match.group(1))
    requests, seconds = max(raw["requests"], 1), raw["duration_us"] / 1e6
    return Result(
        scenario=scenario.name,
        requests=raw["requests"],
        rps=raw["requests"] / seconds,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        non2xx=raw["non2xx"],
        no_content=raw["no_content"],
        socket_errors=raw["socket_errors"],
        peak_rss_mib=server.peak_rss / 1024,
        app_cpu_ms=app_cpu * 1000 / requests,
        db_cpu_ms=db_cpu * 1000 / requests,
        redis_cpu_ms=redis_cpu * 1000 / requests,
        app_cores=app_cpu / seconds,
        other_cores=max(busy - app_cpu - db_cpu - redis_cpu - wrk_cpu, 0) / seconds,
    )


def median_result(results: list[Result]) -> Result:
    """Medians of each figure over the rounds (counts summed, peaks the highest)."""
    summed = {"requests", "non2xx", "no_content", "socket_errors"}
    highest = {"peak_rss_mib", "other_cores"}
    values = {}
    for name in Result.__dataclass_fields__:
        column = [getattr(r, name) for r in results]
        if name == "scenario":
            values[name] = column[0]
        elif name in summed:
            values[name] = sum(column)
        elif name in highest:
            values[name] = max(column)
        else:
            values[name] = statistics.median(column)
    return Result(**values)


def ratio(value: float, floor: float | None) -> str:
    return f" ({value / floor:.2f}x)" if floor else ""


def table(rows: list[tuple[Scenario, Result]], skipped: list[tuple[Scenario, str]]) -> str:
    floor = next((r for s, r in rows if s.name == "healthz"), None)
    lines = [
        "| scenario | req/s (x healthz) | p50 ms | p99 ms (x healthz) | non-2xx "
        "| server CPU ms/req (x healthz) | server cores | MariaDB CPU ms/req "
        "| Redis CPU ms/req | peak RSS MiB | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, r in rows:
        rps_ratio = ratio(r.rps, floor.rps if floor else None)
        p99_ratio = ratio(r.p99_ms, floor.p99_ms if floor else None)
        cpu_ratio = ratio(r.app_cpu_ms, floor.app_cpu_ms if floor else None)
        lines.append(
            f"| {s.title} | {r.rps:.0f}{rps_ratio} | {r.p50_ms:.1f} | {r.p99_ms:.1f}{p99_ratio} "
            f"| {r.non2xx + r.socket_errors} | {r.app_cpu_ms:.2f}{cpu_ratio} | {r.app_cores:.2f} "
            f"| {r.db_cpu_ms:.2f} | {r.redis_cpu_ms:.2f} | {r.peak_rss_mib:.0f} "
            f"| {r.other_cores:.2f} |"
        )
    lines += [f"| {s.title} | skipped: {reason} | | | | | | | | | |" for s, reason in skipped]
    return "\n".join(lines)


# Issue 13 and issue 11's targets, unpinned at 16 connections: (scenario, min req/s, max p99 ms).
TARGETS = {
    "list_all": (260, 100),
    "filter_pending": (260, 100),
    "detail": (830, 100),
    "shift_status": (460, 100),
    "heartbeat": (1000, 50),
}
RSS_TARGET_MIB = 256


def verdicts(rows: list[tuple[Scenario, Result]]) -> list[str]:
    """One line per target: the figure, the bar, met or not."""
    results = {s.name: r for s, r in rows}
    lines = []
    for name, (min_rps, max_p99) in TARGETS.items():
        if name in results:
            r = results[name]
            met = r.rps >= min_rps and r.p99_ms < max_p99 and r.non2xx + r.socket_errors == 0
            lines.append(
                f"- {name}: {r.rps:.0f} req/s (≥ {min_rps}), p99 {r.p99_ms:.1f} ms "
                f"(< {max_p99}): {'met' if met else 'NOT met'}"
            )
    if "claim" in results and "shift_status" in results:
        claim, shift = results["claim"].rps, results["shift_status"].rps
        lines.append(
            f"- claim: {claim:.0f} req/s, shift-status {shift:.0f}: "
            f"{'met' if claim >= shift else 'NOT met'} (claim at least as fast)"
        )
    # Work data (issue 19): each beside its counterpart of the same run.
    for name, base, least, max_p99 in (
        ("progress", "heartbeat", 0.9, 50),
        ("list_all_payload", "list_all", 0.8, None),
        ("filter_pending_payload", "filter_pending", 0.8, None),
        ("claim_payload", "claim", 0.9, None),
    ):
        if name in results and base in results:
            r, b = results[name], results[base]
            share = r.rps / b.rps
            met = share >= least and (max_p99 is None or r.p99_ms < max_p99)
            met = met and r.non2xx + r.socket_errors == 0
            bar = f"≥ {least}x {base}" + (f", p99 < {max_p99} ms" if max_p99 else "")
            lines.append(
                f"- {name}: {r.rps:.0f} req/s = {share:.2f}x {base} ({b.rps:.0f}), "
                f"p99 {r.p99_ms:.1f} ms ({bar}): {'met' if met else 'NOT met'}"
            )
    outside_login = [r.peak_rss_mib for s, r in rows if s.name != "login"]
    if outside_login:
        peak = max(outside_login)
        lines.append(
            f"- peak server RSS outside login: {peak:.0f} MiB (≤ {RSS_TARGET_MIB}): "
            f"{'met' if peak <= RSS_TARGET_MIB else 'NOT met'}"
        )
    return lines


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    mariadb = subprocess.run(
        ["mariadbd", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return f"{os.cpu_count()} cores ({cpu}), {memory / 2**20:.0f} GiB; {mariadb}"


def main() -> int:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    wanted = os.environ.get("SCENARIOS", ",".join(ALL_SCENARIOS))
    # /healthz always runs: every figure is also given as a ratio to it.
    wanted = {"healthz"} | {name.strip() for name in wanted.split(",") if name.strip()}
    for group, names in GROUPS.items():
        if group in wanted:
            wanted = (wanted - {group}) | names
    if wanted & {"list_all_payload", "filter_pending_payload", "claim_payload"}:
        wanted |= {"healthz"}
    if unknown := wanted - set(ALL_SCENARIOS):
        sys.exit(f"unknown scenarios {sorted(unknown)}; known: {', '.join(ALL_SCENARIOS)}")
    env = server_env()
    workdir = Path(tempfile.mkdtemp(prefix="taskmgmt-load-"))
    load_before = os.getloadavg()[0]
    claiming = wanted & {"claim", "claim_payload"}
    data = prepare(env, workdir, CLAIM_TASKS if claiming else 0)
    server = Server(env, workdir / "gunicorn.log")
    config = server.config()
    server.start()
    stores = store_pids()
    try:
        chosen = scenarios(data, workdir, wanted)
        skipped = [(s, reason) for s in chosen if (reason := missing_endpoint(s))]
        for s, reason in skipped:
            log(f"{s.name} skipped: {reason}")
        chosen = [s for s in chosen if s not in [s for s, _ in skipped]]
        warm_up(chosen)
        shift_offset = 0
        results = {s.name: [] for s in chosen}
        # Logins last, in rounds of their own: the memory their Argon2 hashes took stays
        # with the workers and would count as every later scenario's peak. The lists
        # with payloads before them, once the payloads are written.
        steady = [s for s in chosen if s.name != "login" and not s.after_payloads]
        with_payloads = [s for s in chosen if s.after_payloads]
        logins = [s for s in chosen if s.name == "login"]
        plan = [
            (n, s)
            for group in (steady, with_payloads, logins)
            for n in range(1, REPEAT + 1)
            for s in group
        ]
        payloads_added = False
        for round_number, scenario in plan:
            if scenario.after_payloads and not payloads_added:
                add_payloads(data["payload_text"])
                payloads_added = True
                warm_up(with_payloads)
            if scenario.name == "shift_status" and shift_offset >= len(data["pending"]):
                log("shift_status: out of pending tasks; seed more TASKS or shorten DURATION")
                continue
            result = run_wrk(scenario, server, shift_offset, stores)
            if scenario.name == "shift_status":
                shift_offset += result.requests + CONNECTIONS
            log(
                f"round {round_number} {scenario.name}: {result.rps:.0f} req/s, "
                f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"non-2xx {result.non2xx}, 204 {result.no_content}, "
                f"socket errors {result.socket_errors}, "
                f"server CPU {result.app_cpu_ms:.2f} ms/req on {result.app_cores:.2f} cores, "
                f"MariaDB {result.db_cpu_ms:.2f} ms/req, Redis {result.redis_cpu_ms:.2f}, "
                f"RSS {result.peak_rss_mib:.0f} MiB, other load {result.other_cores:.2f} cores"
            )
            results[scenario.name].append(result)
        rows = [(s, median_result(results[s.name])) for s in chosen if results[s.name]]
        peak_pss = server.peak_pss
    finally:
        server.stop()
    worker_kind = "sync" if config.get("threads") == "1" else f"gthread x {config.get('threads')}"
    placement = (
        f"server on core {SERVER_CORES}, wrk on core {CLIENT_CORES} (PIN=1)"
        if PIN
        else "unpinned: server, MariaDB, Redis and wrk share every core"
    )
    notes = []
    if any(r.no_content for s, r in rows if s.name == "claim"):
        notes.append("claim ran out of pending tasks (204 answers): raise CLAIM_TASKS")
    report = "\n".join(
        [
            machine(),
            f"gunicorn: {config.get('workers')} workers ({worker_kind}), preload "
            f"{config.get('preload_app')}; {placement}",
            f"{CONNECTIONS} connections, medians of {REPEAT} alternating rounds x {DURATION} s, "
            f"{TASKS} tasks on {NODES} nodes; load average before the run {load_before:.2f}",
            "",
            table(rows, skipped),
            "",
            "server CPU: gunicorn's whole process tree; server cores: how many cores it kept "
            "busy; MariaDB / Redis CPU: mariadbd's / redis-server's CPU time per request; "
            "peak RSS: the server tree's, summed "
            f"(highest PSS {peak_pss / 1024:.0f} MiB); other load: cores kept busy by unrelated "
            "processes meanwhile (0 on a quiet machine).",
            "",
            "Targets (issue 13 item 2, issue 11 item 8; they are set for unpinned runs):",
            *verdicts(rows),
            *notes,
        ]
    )
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"load-{stamp}.md").write_text(report + "\n")
    (RESULTS_DIR / f"load-{stamp}.json").write_text(
        json.dumps(
            {
                "median": [r.__dict__ for _, r in rows],
                "rounds": {name: [r.__dict__ for r in rs] for name, rs in results.items()},
            },
            indent=1,
        )
    )
    log(f"gunicorn log: {workdir / 'gunicorn.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
