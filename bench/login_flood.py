"""Heartbeat latency while anonymous clients flood the login with the costliest garbage.

Run it as `make bench-login-flood` (README, Benchmarks). It starts gunicorn exactly as
`make serve` does (gunicorn.conf.py, DEBUG off) over a temporary SQLite file, counting
in Redis (`BENCH_CACHE_URL`, default redis://127.0.0.1:6379/15, flushed first), with
`NODE_HEARTBEAT_SECONDS=2`. One node beats every 0.2 s throughout; meanwhile
`ATTACKERS` threads (default 8) post the largest body accepted to /api/auth/login: a
username of U+FDFA, which NFKC expands 18-fold. Phases of `DURATION` seconds (default 12):

- quiet: no attack, the baseline;
- one IP: the attack from one address under the default login limits (30/m per IP);
- no limits: both login limits raised out of reach (an attacker with many addresses and
  a new name each time), so every request is parsed and refused on its merits (400).

It prints, per phase, the heartbeat latencies (median, p99, max) and the attack's
requests per second and answers; a max below NODE_HEARTBEAT_SECONDS is the goal.
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "flood-bench-password-1"
NODE_EMAIL = "node@flood.bench"
HEARTBEAT_SECONDS = 2
DURATION = float(os.environ.get("DURATION", 12))
ATTACKERS = int(os.environ.get("ATTACKERS", 8))
CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/15")
LIMIT = 1024 * 1024  # DATA_UPLOAD_MAX_MEMORY_SIZE's default
GARBAGE = json.dumps(
    {"password": "x", "username": "\ufdfa" * ((LIMIT - 40) // 3)}, ensure_ascii=False
).encode()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(port, method, path, body=b"", headers=None, timeout=30):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Server:
    def __init__(self, env: dict, workdir: Path):
        self.port = free_port()
        self.log = (workdir / "gunicorn.log").open("w")
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if request(self.port, "GET", "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("gunicorn did not answer")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=40)
        self.log.close()


def beat_latencies(port, token, stop: threading.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {token}"}
        status, body = request(port, "POST", "/api/nodes/heartbeat", b"", headers)
        assert status == 200, body
        latencies.append(time.monotonic() - started)
        stop.wait(0.2)
    return latencies


def attack(port, stop: threading.Event, answers: Counter, lock: threading.Lock):
    while not stop.is_set():
        try:
            status, _ = request(port, "POST", "/api/auth/login", GARBAGE)
        except OSError as error:
            status = type(error).__name__
        with lock:
            answers[status] += 1


def phase(port, token, attackers: int) -> dict:
    stop, lock, answers = threading.Event(), threading.Lock(), Counter()
    threads = [
        threading.Thread(target=attack, args=(port, stop, answers, lock)) for _ in range(attackers)
    ]
    for thread in threads:
        thread.start()
    result = {}
    beats = threading.Thread(target=lambda: result.update(beats=beat_latencies(port, token, stop)))
    beats.start()
    time.sleep(DURATION)
    stop.set()
    for thread in [*threads, beats]:
        thread.join()
    latencies = sorted(result["beats"])
    return {
        "beats": len(latencies),
        "median_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "attack_rps": round(sum(answers.values()) / DURATION, 1),
        "answers": dict(answers),
    }


def serve_and_measure(workdir: Path, env: dict, attackers: int) -> dict:
    redis.Redis.from_url(CACHE_URL).flushdb()
    server = Server(env, workdir)
    try:
        status, body = request(
            server.port, "POST", "/api/auth/login",
            json.dumps({"username": NODE_EMAIL, "password": PASSWORD}).encode(),
        )  # fmt: skip
        assert status == 200, body
        redis.Redis.from_url(CACHE_URL).flushdb()  # the node's login spends no attack budget
        return phase(server.port, json.loads(body)["token"], attackers)
    finally:
        server.stop()


def main():
    with tempfile.TemporaryDirectory(prefix="login-flood-") as directory:
        workdir = Path(directory)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))},
            "DJANGO_SETTINGS_MODULE": "taskmgmt.settings",
            "DEBUG": "false",
            "SECRET_KEY": "login-flood-bench-not-secret-0123456789abcdef",
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "CACHE_URL": CACHE_URL,
            "ALLOWED_HOSTS": "127.0.0.1",
            "NODE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "RATELIMIT_API": "100000/m",
            "STATIC_ROOT": str(workdir / "static"),
            "LOG_LEVEL": "WARNING",
        }
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        create = (
            "from accounts.models import User; "
            f"User.objects.create_user({NODE_EMAIL!r}, {PASSWORD!r}, name='Node')"
        )
        subprocess.run([*manage, "shell", "-c", create], cwd=ROOT, env=env, check=True)
        phases = {
            "quiet": (env, 0),
            "one IP": (env, ATTACKERS),
            "no limits": (
                {**env, "RATELIMIT_LOGIN_IP": "1000000/m", "RATELIMIT_LOGIN_USER": "1000000/m"},
                ATTACKERS,
            ),
        }
        print(
            f"{ATTACKERS} attackers x {len(GARBAGE)} B logins, {DURATION:.0f} s a phase; "
            f"a node beats every 0.2 s (NODE_HEARTBEAT_SECONDS={HEARTBEAT_SECONDS})"
        )
        print(f"{'phase':10} {'beats':>6} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} "
              f"{'attack/s':>9}  answers")  # fmt: skip
        worst = 0.0
        for name, (phase_env, attackers) in phases.items():
            row = serve_and_measure(workdir, phase_env, attackers)
            worst = max(worst, row["max_ms"])
            print(
                f"{name:10} {row['beats']:>6} {row['median_ms']:>10} {row['p99_ms']:>8} "
                f"{row['max_ms']:>8} {row['attack_rps']:>9}  {row['answers']}"
            )
        verdict = "below" if worst < HEARTBEAT_SECONDS * 1000 else "NOT below"
        print(f"slowest beat {worst} ms: {verdict} NODE_HEARTBEAT_SECONDS ({HEARTBEAT_SECONDS} s)")


if __name__ == "__main__":
    main()
