"""Three app hosts behind HAProxy, a replicated MariaDB, Redis and a worker fleet, on
this machine in network namespaces (tests/cluster/harness.py), as deploy/ runs them.

Mid-run one app host is killed, Redis is restarted and the primary is restarted,
no app host ever restarted; then: nothing lost, no task done twice, every history
a chain of allowed steps, and the heavy reads served by the replica (and by the
primary once it is gone).

Marked `cluster`, left out of the normal run; `.ci/run` and `make test-cluster` run
it as its own bounded step. Needs root (namespaces), haproxy, mariadbd, redis-server.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests.cluster.harness import (
    METRICS_TOKEN,
    ROOT,
    WORKER,
    AppHost,
    HAProxy,
    MariaDB,
    Namespaces,
    Process,
    Redis,
    app_env,
    caught_up,
    completions_reported,
    replicate,
    wait_for,
)

MISSING = [
    name
    for name in ("ip", "haproxy", "mariadbd", "mariadb-install-db", "redis-server")
    if not shutil.which(name)
]
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.process,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (make test-cluster)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

HOSTS, NODES, PER_NODE = 3, 6, 50
EXPIRING, EXPIRE_AFTER = 10, 30  # tasks of an idle node, failed by the sweeps mid-run
PASSWORD = "cluster-password-1"
WORK_SECONDS = 0.05
STEP = 30  # completions between one fault and the next
# On a busy two-core machine: a fault's effect and the recovery after it.
NOTICE, RECOVER = 20, 90


class Cluster:
    def __init__(self, workdir):
        self.workdir = workdir
        self.parts: list = []  # stopped in reverse order, whatever happens
        self.workers: list[Process] = []
        self.ns = None

    def build(self) -> None:
        self.ns = Namespaces(HOSTS)
        self.ns.create()
        self.primary = self.started(MariaDB(self.ns.hub, self.workdir / "primary", 3306, 1))
        self.replica = self.started(MariaDB(self.ns.hub, self.workdir / "replica", 3307, 2))
        replicate(self.primary, self.replica)
        self.redis = self.started(Redis(self.ns.hub, self.workdir))
        secret_key = secrets.token_urlsafe(50)
        self.hosts = [
            AppHost(namespace, k, app_env(k, secret_key), self.workdir)
            for k, namespace in enumerate(self.ns.hosts, start=1)
        ]
        first = self.hosts[0]
        self.in_host(first, "manage.py", "migrate", "--noinput", "-v", "0", timeout=240)
        seeded = self.in_host(
            first, "tests/cluster/seed.py", str(NODES), str(PER_NODE), str(EXPIRING),
            str(EXPIRE_AFTER), PASSWORD,
        )  # fmt: skip
        self.seed = json.loads(seeded.splitlines()[-1])
        for host in self.hosts:
            self.started(host)
        addresses = [(k, Namespaces.host_address(k)) for k in range(1, HOSTS + 1)]
        self.balancer = self.started(HAProxy(self.ns.hub, self.workdir, addresses))

    def started(self, part):
        self.parts.append(part)
        part.start()
        return part

    def in_host(self, host, *command, timeout=120) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", host.namespace, sys.executable, *command],
            cwd=ROOT, env=host.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def start_worker(self, email: str) -> None:
        command = [
            str(WORKER), "--server", "http://127.0.0.1:80", "--email", email,
            "--work-seconds", str(WORK_SECONDS), "--idle-seconds", "0.2",
        ]  # fmt: skip
        log_path = self.workdir / f"worker-{len(self.workers) + 1}.log"
        env = {**os.environ, "TASKMGMT_PASSWORD": PASSWORD}
        self.workers.append(Process(self.ns.hub, command, log_path, env=env))

    def close(self) -> None:
        for process in self.workers:
            process.stop(signal.SIGKILL, timeout=10)
        for part in reversed(self.parts):
            try:
                part.stop()
            except Exception as error:  # the rest must still go
                print(f"stopping {part}: {error}")
        if self.ns:
            self.ns.close()

    # --- What the test watches ------------------------------------------------------

    def count(self, status: str) -> int:
        return self.primary.query("SELECT COUNT(*) FROM tasks_task WHERE status = %s", [status])[0][
            0
        ]

    def health(self) -> int:
        try:
            return self.balancer.request("GET", "/healthz", timeout=5)[0]
        except OSError:
            return 0

    def progress(self, more: int, what: str) -> None:
        """Wait until `more` tasks beyond now are completed: the fleet works on."""
        target = min(self.count("completed") + more, NODES * PER_NODE)
        wait_for(lambda: self.count("completed") >= target, RECOVER, f"{what}: no progress")

    def metric(self, name: str) -> float:
        status, text = self.balancer.request("GET", "/metrics", token=METRICS_TOKEN)
        assert status == 200, text
        (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
        return float(line.split()[-1])

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-3000:]}"
            for path in sorted(self.workdir.glob("*.log"))
        )


def stop_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


@pytest.fixture
def cluster(tmp_path):
    # `timeout` (in .ci/run and make test-cluster) ends a hung run with SIGTERM: it must
    # still stop the servers and delete the namespaces.
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    built = Cluster(tmp_path)
    try:
        built.build()
        yield built
    finally:
        built.close()
        signal.signal(signal.SIGTERM, previous)


def test_hosts_redis_and_the_database_fail_mid_run_and_nothing_is_lost(cluster):
    total = NODES * PER_NODE
    balancer = cluster.balancer
    wait_for(lambda: set(balancer.server_states().values()) == {"UP"}, NOTICE, "hosts not all UP")
    for email in cluster.seed["nodes"]:
        cluster.start_worker(email)
    try:
        cluster.progress(STEP, "the fleet's start")
        served_before = [host.requests_served() for host in cluster.hosts]
        assert all(served_before), f"a host served nothing: {served_before}"

        # An app host dies: the balancer stops sending it requests, the others carry on.
        cluster.hosts[-1].kill()
        wait_for(
            lambda: balancer.server_states()[f"app{HOSTS}"].startswith("DOWN"),
            NOTICE,
            "HAProxy did not notice the dead host",
        )
        cluster.progress(STEP, "after a host died")

        # Redis restarts: every host says so on /healthz (503), then recovers by itself.
        cluster.redis.stop()
        wait_for(lambda: cluster.health() == 503, NOTICE, "no 503 while Redis was away")
        cluster.redis.start()
        wait_for(lambda: cluster.health() == 200, RECOVER, "no recovery after Redis came back")
        cluster.progress(STEP, "after Redis restarted")

        # The primary restarts: 503 while it is away, then the same hosts carry on.
        cluster.primary.stop()
        wait_for(lambda: cluster.health() == 503, NOTICE, "no 503 while the database was away")
        cluster.primary.start()
        wait_for(lambda: cluster.health() == 200, RECOVER, "no recovery after the database")
        cluster.progress(STEP, "after the database restarted")

        wait_for(lambda: cluster.count("completed") == total, 2 * RECOVER, "tasks left undone")
        wait_for(lambda: cluster.count("failed") == EXPIRING, RECOVER, "expired tasks not failed")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{cluster.logs()}") from None
    exits = [process.stop(signal.SIGTERM, timeout=30) or process.process.returncode
             for process in cluster.workers]  # fmt: skip
    assert exits == [0] * NODES, cluster.logs()

    # Nothing lost, nothing done twice, every history a chain of allowed steps.
    primary = cluster.primary
    tasks = primary.query("SELECT id, status, assigned_node_id FROM tasks_task")
    assert len(tasks) == total + EXPIRING
    expiring = set(cluster.seed["expiring"])
    history: dict[str, list] = {}
    for task_id, action, from_value, to_value, by, cause in primary.query(
        "SELECT task_id, action, from_value, to_value, performed_by_id, cause"
        " FROM tasks_taskhistory ORDER BY id"
    ):
        history.setdefault(task_id, []).append((action, from_value, to_value, by, cause))
    for task_id, status, node_id in tasks:
        rows = history[task_id]
        assert rows[0][0] == "initial_assign", rows
        changes = [row[1:] for row in rows[1:]]
        if task_id in expiring:
            # Failed once, by one sweep, though several swept at once.
            assert status == "failed", (task_id, rows)
            assert changes == [("pending", "failed", None, "deadline")], (task_id, rows)
        else:
            assert status == "completed", (task_id, rows)
            assert changes == [
                ("pending", "in_progress", node_id, ""),
                ("in_progress", "completed", node_id, ""),
            ], (task_id, rows)
    reported = completions_reported(cluster.workdir)
    assert sorted(reported.values()) == [1] * total, "a task reported done twice or never"

    # The surviving hosts served through the faults; the killed one served no more.
    served_after = [host.requests_served() for host in cluster.hosts]
    assert all(a > b for a, b in zip(served_after[:-1], served_before[:-1], strict=True))

    # The heavy reads are the replica's: with its replication paused, /metrics shows the
    # replica's figures while the API (the primary) has the new task.
    wait_for(lambda: caught_up(cluster.primary, cluster.replica), RECOVER, "replica behind")
    assert cluster.metric('taskmgmt_tasks_open{status="pending"}') == 0
    cluster.replica.execute("STOP SLAVE SQL_THREAD")
    status, login = balancer.request(
        "POST", "/api/auth/login", {"username": "admin@cluster.test", "password": PASSWORD}
    )
    assert status == 200, login
    (node_id,) = primary.query(
        "SELECT id FROM accounts_user WHERE email = %s", [cluster.seed["nodes"][0]]
    )[0]
    deadline = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    body = {"taskName": "After", "taskDetails": "Work.", "assignedNode": node_id}
    body["lockedAt"] = deadline
    status, created = balancer.request("POST", "/api/tasks", body, token=login["token"])
    assert status == 201, created
    task_path = f"/api/tasks/{created['task']['id']}"
    assert balancer.request("GET", task_path, token=login["token"])[0] == 200
    assert cluster.metric('taskmgmt_tasks_open{status="pending"}') == 0  # the replica lags
    cluster.replica.execute("START SLAVE SQL_THREAD")
    wait_for(
        lambda: cluster.metric('taskmgmt_tasks_open{status="pending"}') == 1,
        NOTICE,
        "the replica's figures did not catch up",
    )
    # The replica lost: the same figures, from the primary; the API as before.
    cluster.replica.stop()
    assert cluster.metric('taskmgmt_tasks_open{status="pending"}') == 1
    assert balancer.request("GET", task_path, token=login["token"])[0] == 200
