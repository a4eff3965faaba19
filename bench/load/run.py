"""Load benchmark: taskmgmt under gunicorn on MariaDB, driven by wrk over loopback.

    make bench-load                 # every scenario, 20 s each at 16 connections
    DURATION=5 make bench-load      # a quick run
    SCENARIOS=list_all,detail REPEAT=3 make bench-load

Drops and recreates the MariaDB database `taskmgmt_load`, migrates it, seeds
10 nodes + 1 admin and 100,000 tasks (seed.py), starts gunicorn as `make serve`
does (gunicorn.conf.py, DEBUG off, Redis cache) pinned to core 1, and runs wrk
pinned to core 0, one scenario at a time. Rate limits are raised for the run so
they never answer 429, but still counted in Redis as in production. Prints a
table and writes it with the raw numbers to bench/results/. Traffic goes to
127.0.0.1 only; every wrk run is bounded by DURATION.
"""

import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
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

DURATION = int(os.environ.get("DURATION", 20))
CONNECTIONS = int(os.environ.get("CONNECTIONS", 16))
REPEAT = int(os.environ.get("REPEAT", 1))
PORT = int(os.environ.get("PORT", 8050))
TASKS = int(os.environ.get("TASKS", 100_000))
NODES = int(os.environ.get("NODES", 10))
DB_HOST = os.environ.get("DB_HOST", "127.0.0.1")
DB_PORT = int(os.environ.get("DB_PORT", 3306))
DB_USER = os.environ.get("DB_USER", "root")
DB_PASSWORD = os.environ.get("DB_PASSWORD", "")
DB_NAME = os.environ.get("BENCH_DB_NAME", "taskmgmt_load")
CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/5")
SERVER_CORES = os.environ.get("SERVER_CORES", "1")
CLIENT_CORES = os.environ.get("CLIENT_CORES", "0")
# Server and wrk run at a higher priority (root only) so that other work on the
# machine disturbs them less; MariaDB and Redis keep theirs.
NICE = int(os.environ.get("NICE", -10 if os.geteuid() == 0 else 0))
# PROFILE=1: py-spy samples every gunicorn worker during each run and writes a profile
# (PROFILE_FORMAT: flamegraph SVG, speedscope JSON or raw collapsed stacks) to bench/results/.
PROFILE = os.environ.get("PROFILE") == "1"
PROFILE_FORMAT = os.environ.get("PROFILE_FORMAT", "flamegraph")
PROFILE_SUFFIX = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}
BASE_URL = f"http://127.0.0.1:{PORT}"


def pinned(cores: str) -> list[str]:
    return ["nice", "-n", str(NICE), "taskset", "-c", cores]


# Far above what 16 connections can send in a run: limits are checked but never hit.
UNLIMITED = "10000000/m"


@dataclass
class Scenario:
    name: str
    title: str
    script: str
    path: str
    token: str | None = None
    env: dict = field(default_factory=dict)


@dataclass
class Result:
    scenario: str
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    peak_rss_mib: float
    app_cpu_ms: float  # gunicorn CPU time per request
    db_cpu_ms: float  # mariadbd + redis-server CPU time per request
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


def store_pids() -> list[int]:
    """mariadbd's and redis-server's process ids: their CPU is part of each request's cost."""
    connection = MySQLdb.connect(host=DB_HOST, port=DB_PORT, user=DB_USER, password=DB_PASSWORD)
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@pid_file")
        (pid_file,) = cursor.fetchone()
    connection.close()
    return [
        int(Path(pid_file).read_text()),
        redis.Redis.from_url(CACHE_URL).info("server")["process_id"],
    ]


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


def prepare(env: dict, workdir: Path) -> dict:
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
        env={**env, "TASKS": str(TASKS), "NODES": str(NODES)},
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(seeded.stdout)
    log(f"seeded {data['tasks']} tasks on {NODES} nodes in {time.perf_counter() - started:.1f}s")
    (workdir / "detail_ids.txt").write_text("\n".join(data["detail_ids"]) + "\n")
    (workdir / "pending.txt").write_text("\n".join(f"{n} {i}" for n, i in data["pending"]) + "\n")
    return data


class Server:
    """gunicorn as `make serve` starts it, pinned to SERVER_CORES, its RSS sampled meanwhile."""

    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process = None
        self.peak_rss = 0
        self.peak_pss = 0
        self._sampling = threading.Event()

    def start(self) -> None:
        self.log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*pinned(SERVER_CORES), GUNICORN, "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
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

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def memory_kib(self, file: str, field: str) -> int:
        """`field` (Rss, Pss) summed over the master and its workers."""
        total = 0
        for pid in [self.process.pid, *self.worker_pids()]:
            try:
                text = Path(f"/proc/{pid}/{file}").read_text()
            except OSError:
                continue
            match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
            total += int(match.group(1)) if match else 0
        return total

    def rss_kib(self) -> int:
        # smaps_rollup walks the page tables; /proc/PID/status's VmRSS may lag behind.
        return self.memory_kib("smaps_rollup", "Rss")

    def _sample_rss(self) -> None:
        while self._sampling.is_set():
            self.peak_rss = max(self.peak_rss, self.rss_kib())
            # PSS counts the pages workers share with the master (preload_app) once.
            self.peak_pss = max(self.peak_pss, self.memory_kib("smaps_rollup", "Pss"))
            time.sleep(0.2)

    def cpu(self) -> float:
        return sum(process_cpu(pid) for pid in [self.process.pid, *self.worker_pids()])

    def reset_peak(self) -> None:
        self.peak_rss = self.rss_kib()

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
        return json.load(response)


def login(email: str, password: str) -> str:
    return http_json("POST", "/api/auth/login", {"username": email, "password": password})["token"]


def scenarios(data: dict, workdir: Path) -> list[Scenario]:
    admin_token = login(data["admin"], data["password"])
    node_tokens = [login(email, data["password"]) for email in data["nodes"]]
    (workdir / "tokens.txt").write_text("\n".join(node_tokens) + "\n")
    return [
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
        Scenario("login", "(e) POST /api/auth/login", "login.lua", "/api/auth/login", None,
                 {"BENCH_EMAIL": data["nodes"][-1], "BENCH_PASSWORD": data["password"]}),
    ]  # fmt: skip


def health_scenario() -> Scenario:
    """The floor: gunicorn + Django + one SELECT 1, no auth. Not one of the targets."""
    return Scenario("healthz", "GET /healthz (floor, no auth)", "get.lua", "/healthz")


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


def run_wrk(scenario: Scenario, server: Server, shift_offset: int, db_pids: list[int]) -> Result:
    command = [
        *pinned(CLIENT_CORES), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s",
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
    before = (server.cpu(), sum(map(process_cpu, db_pids)), machine_busy_cpu(), children_cpu())
    output = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=DURATION + 60, check=True
    ).stdout
    app_cpu, db_cpu, busy, wrk_cpu = (
        after - start
        for after, start in zip(
            (server.cpu(), sum(map(process_cpu, db_pids)), machine_busy_cpu(), children_cpu()),
            before,
            strict=True,
        )
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
        socket_errors=raw["socket_errors"],
        peak_rss_mib=server.peak_rss / 1024,
        app_cpu_ms=app_cpu * 1000 / requests,
        db_cpu_ms=db_cpu * 1000 / requests,
        other_cores=max(busy - app_cpu - db_cpu - wrk_cpu, 0) / seconds,
    )


def children_cpu() -> float:
    """CPU seconds of finished child processes (wrk runs as one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_result(results: list[Result]) -> Result:
    """Medians of each figure over the repeats (counts summed)."""
    return Result(
        scenario=results[0].scenario,
        requests=sum(r.requests for r in results),
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        non2xx=sum(r.non2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        peak_rss_mib=max(r.peak_rss_mib for r in results),
        app_cpu_ms=statistics.median(r.app_cpu_ms for r in results),
        db_cpu_ms=statistics.median(r.db_cpu_ms for r in results),
        other_cores=max(r.other_cores for r in results),
    )


def table(rows: list[tuple[Scenario, Result]], peak_mib: float, peak_pss_mib: float) -> str:
    lines = [
        "| scenario | req/s | p50 ms | p99 ms | non-2xx | app CPU ms/req | DB CPU ms/req "
        "| peak RSS MiB | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.title} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
        f"{r.non2xx + r.socket_errors} | {r.app_cpu_ms:.2f} | {r.db_cpu_ms:.2f} | "
        f"{r.peak_rss_mib:.0f} | {r.other_cores:.2f} |"
        for s, r in rows
    ]
    lines.append(
        f"\nServer peak memory: {peak_mib:.0f} MiB RSS summed over the gunicorn processes "
        f"({peak_pss_mib:.0f} MiB PSS, counting pages they share once)."
    )
    lines.append(
        "app / DB CPU ms/req: CPU time of gunicorn / mariadbd + redis-server per request. "
        "other load: cores "
        "kept busy meanwhile by unrelated processes (0 on a quiet machine)."
    )
    return "\n".join(lines)


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
    return f"{os.cpu_count()} cores ({cpu}); {mariadb}"


def main() -> int:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    wanted = os.environ.get("SCENARIOS", "list_all,filter_pending,detail,shift_status,login")
    wanted = [name.strip() for name in wanted.split(",") if name.strip()]
    env = server_env()
    workdir = Path(tempfile.mkdtemp(prefix="taskmgmt-load-"))
    data = prepare(env, workdir)
    server = Server(env, workdir / "gunicorn.log")
    server.start()
    db_pids = store_pids()
    threads = int(os.environ.get("GUNICORN_THREADS", 4))  # gunicorn.conf.py's default
    worker_kind = "sync" if threads == 1 else f"gthread ({threads} threads)"
    try:
        every = [health_scenario()]
        if set(wanted) - {"healthz"}:
            every += scenarios(data, workdir)
        chosen = [s for s in every if s.name in wanted]
        warm_up(chosen)
        shift_offset = 0
        rows = []
        for scenario in chosen:
            results = []
            for attempt in range(REPEAT):
                if scenario.name == "shift_status" and shift_offset >= len(data["pending"]):
                    raise RuntimeError("out of pending tasks: seed more TASKS or shorten DURATION")
                result = run_wrk(scenario, server, shift_offset, db_pids)
                if scenario.name == "shift_status":
                    shift_offset += result.requests + CONNECTIONS
                log(
                    f"{scenario.name} #{attempt + 1}: {result.rps:.0f} req/s, "
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                    f"non-2xx {result.non2xx}, socket errors {result.socket_errors}, "
                    f"app CPU {result.app_cpu_ms:.2f} ms/req, "
                    f"DB CPU {result.db_cpu_ms:.2f} ms/req, "
                    f"other load {result.other_cores:.2f} cores"
                )
                results.append(result)
            rows.append((scenario, median_result(results)))
        peak, peak_pss = server.peak_rss, server.peak_pss
        workers = len(server.worker_pids())  # counted now: at start some may still be booting
    finally:
        server.stop()
    report = (
        f"{machine()}\ngunicorn: {workers} {worker_kind} workers, "
        f"{CONNECTIONS} connections, {DURATION} s x {REPEAT}, {TASKS} tasks, "
        f"server on core {SERVER_CORES}, wrk on core {CLIENT_CORES}\n\n"
        + table(rows, max(peak, *(r.peak_rss_mib * 1024 for _, r in rows)) / 1024, peak_pss / 1024)
    )
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"load-{stamp}.md").write_text(report + "\n")
    (RESULTS_DIR / f"load-{stamp}.json").write_text(
        json.dumps([r.__dict__ for _, r in rows], indent=1)
    )
    log(f"gunicorn log: {workdir / 'gunicorn.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
