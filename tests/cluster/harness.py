"""Several app hosts on one machine: network namespaces, and the real programs in them.

Layout (every address is in 198.18.0.0/15, the benchmarking range, and exists only on
the veth links this harness creates between its own namespaces; the test reaches
them through unix sockets, so nothing is added to the machine's own network):

    hub namespace: HAProxy (deploy/haproxy.cfg) on :80, MariaDB primary :3306 and
                   replica :3307 (MariaDB's own replication), Redis :6379, the workers
    host k (k=1..3): gunicorn (gunicorn.conf.py) on 198.18.k.2:8000 and a sweep loop;
                   it reaches the hub at 198.18.k.1
"""

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import MySQLdb

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The worker package's console script (`pip install ./worker`, make setup), as tests/fleet runs it.
WORKER = BIN / "taskmgmt-worker"
DB_USER, DB_PASSWORD, DB_NAME = "tm", "cluster-db-password", "taskmgmt"
METRICS_TOKEN = "cluster-metrics-token"


def wait_for(condition, timeout: float, what: str, poll: float = 0.1):
    """`condition()`'s first truthy value, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (OSError, MySQLdb.Error):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(poll)


def run(*command: str, timeout: float = 30) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


class Namespaces:
    """The hub and the app hosts' namespaces, linked by veth pairs; deleted on close."""

    def __init__(self, hosts: int):
        prefix = f"tmc{os.getpid() % 100000}"
        self.hub = f"{prefix}hub"
        self.hosts = [f"{prefix}h{k}" for k in range(1, hosts + 1)]
        self.created: list[str] = []

    def create(self) -> None:
        prefix = self.hub.removesuffix("hub")
        for name in [self.hub, *self.hosts]:
            run("ip", "netns", "add", name)
            self.created.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        for k, host in enumerate(self.hosts, start=1):
            hub_end, host_end = f"{prefix}a{k}", f"{prefix}b{k}"
            # Both ends are made inside the namespaces: the machine's own never sees them.
            run(
                "ip", "link", "add", hub_end, "netns", self.hub, "type", "veth",
                "peer", "name", host_end, "netns", host,
            )  # fmt: skip
            run("ip", "-n", self.hub, "addr", "add", f"198.18.{k}.1/24", "dev", hub_end)
            run("ip", "-n", self.hub, "link", "set", hub_end, "up")
            run("ip", "-n", host, "addr", "add", f"198.18.{k}.2/24", "dev", host_end)
            run("ip", "-n", host, "link", "set", host_end, "up")

    @staticmethod
    def hub_address(k: int) -> str:
        """The hub as host k sees it."""
        return f"198.18.{k}.1"

    @staticmethod
    def host_address(k: int) -> str:
        return f"198.18.{k}.2"

    def close(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self.created = []


class Process:
    """A program in a namespace, in a process group of its own, its output in a file."""

    def __init__(self, namespace: str, command: list[str], log_path: Path, **popen):
        self.log_path = log_path
        self.log = log_path.open("a")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> None:
        """`sig` to the whole group, then SIGKILL if it has not exited within `timeout`."""
        if self.alive():
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.kill_group()
        self.log.close()

    def kill_group(self) -> None:
        """SIGKILL to whatever is left of the group (a dead master's workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


class MariaDB:
    """A mariadbd of the test's own in the hub: its datadir, port and socket."""

    def __init__(self, hub: str, workdir: Path, port: int, server_id: int):
        self.hub, self.workdir, self.port = hub, workdir, port
        self.server_id = server_id
        self.socket = workdir / "mariadb.sock"
        self.process = None
        workdir.mkdir(parents=True)
        run(
            "mariadb-install-db", "--no-defaults", f"--datadir={workdir / 'data'}",
            "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db",
            timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        self.process = Process(
            self.hub,
            [
                "mariadbd", "--no-defaults", "--user=root", f"--datadir={self.workdir / 'data'}",
                f"--port={self.port}", "--bind-address=0.0.0.0", f"--socket={self.socket}",
                f"--pid-file={self.workdir / 'pid'}", f"--server-id={self.server_id}",
                "--log-bin=mariadb-bin", "--binlog-format=ROW", "--innodb-buffer-pool-size=32M",
                "--skip-name-resolve", "--max-connections=300",
            ],
            self.workdir / "server.log",
        )  # fmt: skip
        wait_for(self.connect, 60, f"mariadbd on port {self.port} did not answer")

    def stop(self) -> None:
        """A clean shutdown, as `systemctl stop mariadb` does it."""
        if self.process:
            self.process.stop(timeout=60)

    def connect(self, database: str = ""):
        return MySQLdb.connect(
            unix_socket=str(self.socket), user="root", database=database, connect_timeout=5
        )

    def query(self, sql: str, args=None, database: str = DB_NAME) -> list[tuple]:
        connection = self.connect(database)
        try:
            cursor = connection.cursor()
            cursor.execute(sql, args)
            rows = list(cursor.fetchall())
            connection.commit()
            return rows
        finally:
            connection.close()

    def execute(self, *statements: str) -> None:
        connection = self.connect()
        try:
            cursor = connection.cursor()
            for statement in statements:
                cursor.execute(statement)
        finally:
            connection.close()


def replicate(primary: MariaDB, replica: MariaDB) -> None:
    """The replica follows the primary from its first binlog event (both start empty)."""
    primary.execute(
        "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-password'",
        "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'",
    )
    replica.execute(
        f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
        "MASTER_USER='repl', MASTER_PASSWORD='repl-password', MASTER_USE_GTID=slave_pos, "
        # A primary restarted mid-run is found again within a second, not the default 60.
        "MASTER_CONNECT_RETRY=1",
        "START SLAVE",
    )
    primary.execute(
        f"CREATE USER '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}'",
        f"GRANT ALL ON *.* TO '{DB_USER}'@'%'",
        f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4",
    )
    wait_for(lambda: replica.query("SHOW DATABASES LIKE %s", [DB_NAME], ""), 30, "no replication")


def caught_up(primary: MariaDB, replica: MariaDB) -> bool:
    """The replica has applied everything the primary has logged."""
    (position,) = primary.query("SELECT @@gtid_binlog_pos", database="")[0]
    (applied,) = replica.query("SELECT @@gtid_slave_pos", database="")[0]
    return position == applied


class Redis:
    def __init__(self, hub: str, workdir: Path):
        self.hub, self.workdir = hub, workdir
        self.socket = workdir / "redis.sock"
        self.process = None

    def start(self) -> None:
        self.process = Process(
            self.hub,
            [
                "redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",
                "--save", "", "--appendonly", "no", "--unixsocket", str(self.socket),
                "--dir", str(self.workdir),
            ],
            self.workdir / "redis.log",
        )  # fmt: skip
        wait_for(self.answers, 20, "redis did not answer")

    def answers(self) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(self.socket))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.process:
            self.process.stop()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("127.0.0.1", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class HAProxy:
    """deploy/haproxy.cfg as shipped, with this cluster's hosts in its `server` lines and
    one more way in for the test itself: a unix socket."""

    def __init__(self, hub: str, workdir: Path, hosts: list[str]):
        self.hub, self.workdir = hub, workdir
        self.http_socket = workdir / "http.sock"
        self.admin_socket = workdir / "admin.sock"
        shipped = (ROOT / "deploy" / "haproxy.cfg").read_text()
        servers = "".join(f"    server app{k} {address}:8000 check\n" for k, address in hosts)
        config, count = re.subn(r"(    server app\d .*\n)+", servers, shipped)
        assert count == 1, "deploy/haproxy.cfg has no block of server lines"
        (workdir / "taskmgmt.cfg").write_text(config)
        (workdir / "global.cfg").write_text(
            "global\n"
            "    log stderr format raw local0 notice\n"
            f"    stats socket {self.admin_socket} mode 600 level admin\n"
        )
        (workdir / "probe.cfg").write_text(
            "frontend test_probe\n"
            f"    bind unix@{self.http_socket}\n"
            "    http-request set-header X-Real-IP 198.18.255.1\n"
            "    default_backend taskmgmt_hosts\n"
        )
        self.process = None

    def start(self) -> None:
        files = ["global.cfg", "taskmgmt.cfg", "probe.cfg"]
        config = [arg for name in files for arg in ("-f", str(self.workdir / name))]
        run("haproxy", "-c", *config)
        self.process = Process(self.hub, ["haproxy", "-db", *config], self.workdir / "haproxy.log")
        wait_for(self.http_socket.exists, 20, "haproxy did not start")

    def request(self, method: str, path: str, body=None, token=None, timeout=15.0):
        """(status, JSON or text) of one request through the balancer."""
        connection = UnixHTTPConnection(str(self.http_socket), timeout)
        headers = {"Content-Type": "application/json", "Host": "127.0.0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            data = json.dumps(body) if body is not None else None
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text
        finally:
            connection.close()

    def server_states(self) -> dict[str, str]:
        """{app1: UP/DOWN/…} from HAProxy's own stats."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        states = {}
        for line in data.decode().splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "taskmgmt_hosts" and fields[1].startswith("app"):
                states[fields[1]] = fields[17]
        return states

    def stop(self) -> None:
        if self.process:
            self.process.stop()


class AppHost:
    """One app host: gunicorn from this checkout and a sweep loop, in namespace k."""

    def __init__(self, namespace: str, k: int, env: dict, workdir: Path):
        self.namespace, self.k, self.env, self.workdir = namespace, k, env, workdir
        self.gunicorn = self.sweep = None

    def start(self) -> None:
        self.gunicorn = Process(
            self.namespace,
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
            self.workdir / f"app{self.k}.log",
            cwd=ROOT,
            env=self.env,
        )
        self.sweep = Process(
            self.namespace,
            [sys.executable, str(Path(__file__).parent / "sweep_loop.py")],
            self.workdir / f"sweep{self.k}.log",
            cwd=ROOT,
            env=self.env,
        )

    def kill(self) -> None:
        """Every process of the host, at once, as a power cut would."""
        for process in (self.gunicorn, self.sweep):
            if process:
                process.kill_group()

    def stop(self) -> None:
        for process in (self.gunicorn, self.sweep):
            if process:
                process.stop(timeout=20)

    def requests_served(self) -> int:
        log = (self.workdir / f"app{self.k}.log").read_text()
        return log.count('"logger": "taskmgmt.request"')


def app_env(k: int, secret_key: str) -> dict:
    """What deploy/taskmgmt.env says, for host k of this cluster."""
    hub = Namespaces.hub_address(k)
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")
    }
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        # Log lines reach the files as they happen: the test counts what each host served.
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "taskmgmt.settings",
        "DEBUG": "false",
        "SECRET_KEY": secret_key,
        "DATABASE_URL": f"mysql://{DB_USER}:{DB_PASSWORD}@{hub}:3306/{DB_NAME}",
        "REPLICA_DATABASE_URL": f"mysql://{DB_USER}:{DB_PASSWORD}@{hub}:3307/{DB_NAME}",
        "CACHE_URL": f"redis://{hub}:6379/0",
        "METRICS_TOKEN": METRICS_TOKEN,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "RATELIMIT_IP_META_KEY": "HTTP_X_REAL_IP",
        "FORWARDED_ALLOW_IPS": hub,
        "GUNICORN_BIND": f"{Namespaces.host_address(k)}:8000",
        # Three hosts share two cores with everything else here: one worker each.
        "WEB_CONCURRENCY": "1",
        # The workers poll every 0.2 s when idle and log in again after a restart: far
        # above the production limits, which would make them wait a minute.
        "RATELIMIT_API": "100000/m",
        "RATELIMIT_LOGIN_USER": "10000/m",
        "RATELIMIT_LOGIN_IP": "10000/m",
        # The figures are read at every scrape, so a scrape shows the replica's state now.
        "DASHBOARD_CACHE_SECONDS": "0",
        "LOG_LEVEL": "INFO",
    }


def completions_reported(log_dir: Path) -> dict[str, int]:
    """How many times the workers logged each task completed."""
    counts: dict[str, int] = {}
    for path in log_dir.glob("worker-*.log"):
        for line in path.read_text().splitlines():
            if line.startswith('{"') and '"event": "completed"' in line:
                task = json.loads(line)["task"]
                counts[task] = counts.get(task, 0) + 1
    return counts
