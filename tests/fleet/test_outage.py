"""A control-plane outage does not fail the fleet's work (issue 17, item 7).

Five real workers (the `taskmgmt-worker` package, worker/) against a real gunicorn
(gunicorn.conf.py, two processes, Redis-coalesced beats, MariaDB) while the sweep runs
every second from another process, as cron runs it. gunicorn is stopped mid-run for
longer than NODE_DOWN_AFTER, then started again: no task fails node_lost, every one completes
exactly once. The down-share guard is off here (FAILOVER_MAX_DOWN_SHARE=1), so
this is the serving record alone at work (nodes/serving.py).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from tasks.models import FailureCause, SweepRun, Task, TaskHistory
from tests.factories import PASSWORD, NodeFactory, TaskFactory
from tests.fleet.harness import (
    COMPLETED,
    IN_PROGRESS,
    Fleet,
    assert_every_history_consistent,
    wait_for,
)
from tests.ports import free_port
from tests.redis_server import redis_cache, redis_database

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.mysql,
    pytest.mark.fleet,
    pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="gunicorn's processes beside the test's writes need MariaDB",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HEARTBEAT_SECONDS, DOWN_AFTER = 1, 3
OUTAGE_SECONDS = 5  # longer than NODE_DOWN_AFTER
SWEEP_EVERY = 1.0
REDIS_DB = 14
NODES, TASKS_PER_NODE, WORK_SECONDS = 5, 6, 1.0
SERVER_ENV = {
    "NODE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    "NODE_DOWN_AFTER": str(DOWN_AFTER),
    "FAILOVER": "reassign",
    "FAILOVER_MAX_DOWN_SHARE": "1",
    "TASK_MAX_ATTEMPTS": "10",
    # Five workers polling and logging in again: far above the production limits.
    "RATELIMIT_API": "100000/m",
    "RATELIMIT_LOGIN_IP": "10000/m",
    "RATELIMIT_LOGIN_USER": "10000/m",
}


class Gunicorn:
    """gunicorn.conf.py on its own port, on the test's database and Redis."""

    def __init__(self, tmp_path: Path, cache_url: str):
        db = connection.settings_dict
        self.port = free_port()
        self.env = {
            **os.environ,
            **SERVER_ENV,
            "DATABASE_URL": (
                f"mysql://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 3306}/{db['NAME']}"
            ),
            "CACHE_URL": cache_url,
            "SECRET_KEY": "fleet-outage-test-key-long-enough-for-hs256",
            "DEBUG": "false",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
            "LOG_LEVEL": "WARNING",
        }
        (tmp_path / "metrics").mkdir()
        self.log = (tmp_path / "gunicorn.log").open("a")
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        wait_for(self.answers, 60, "gunicorn never answered", poll=0.1)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


class Sweeper(threading.Thread):
    """`collect_failed` every SWEEP_EVERY seconds, outside gunicorn, as cron runs it."""

    def __init__(self):
        super().__init__(name="sweeper", daemon=True)
        self.done = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.done.is_set():
                call_command("collect_failed", verbosity=0)
                self.done.wait(SWEEP_EVERY)
        except BaseException as error:  # reported by the test, not lost in a thread
            self.errors.append(error)
        finally:
            connection.close()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=60)


@pytest.fixture
def cache_url(settings):
    with redis_database(REDIS_DB) as url:
        # The sweep (in this process) reads the beats gunicorn leaves in Redis.
        settings.CACHES = redis_cache(url)
        settings.NODE_HEARTBEAT_SECONDS = HEARTBEAT_SECONDS
        settings.NODE_DOWN_AFTER = DOWN_AFTER
        settings.FAILOVER = "reassign"
        settings.FAILOVER_MAX_DOWN_SHARE = 1
        settings.TASK_MAX_ATTEMPTS = 10
        yield url


def test_a_server_outage_longer_than_down_after_fails_no_task_over(cache_url, tmp_path):
    nodes = NodeFactory.create_batch(NODES)
    deadline = timezone.now() + timedelta(hours=1)
    tasks = [
        TaskFactory(assigned_node=node, locked_at=deadline)
        for node in nodes
        for _ in range(TASKS_PER_NODE)
    ]
    task_ids = [task.pk for task in tasks]
    server = Gunicorn(tmp_path, cache_url)
    fleet = Fleet(server.url, tmp_path, PASSWORD, WORK_SECONDS)
    sweeper = Sweeper()
    try:
        server.start()
        for node in nodes:
            fleet.start(node)
        sweeper.start()
        wait_for(
            lambda: Task.objects.filter(pk__in=task_ids, status=IN_PROGRESS).count() == NODES,
            60,
            f"every node at work\n{fleet.logs()}",
        )

        server.stop()
        stopped = timezone.now()
        time.sleep(OUTAGE_SECONDS)
        server.start()
        restarted = timezone.now()

        wait_for(
            lambda: Task.objects.filter(pk__in=task_ids, status=COMPLETED).count() == len(tasks),
            120,
            f"every task completed\n{fleet.logs()}",
            poll=0.2,
        )
        sweeper.stop()
        exits = fleet.stop()
    finally:
        sweeper.stop()
        fleet.abort()
        server.stop()

    assert sweeper.errors == []
    assert set(exits.values()) == {0}, fleet.logs()
    # The sweep ran all through the outage, and after it while the nodes came back.
    assert SweepRun.objects.filter(started_at__gt=stopped, started_at__lt=restarted).count() >= 2
    assert SweepRun.objects.filter(started_at__gt=restarted).count() >= 2
    lost = TaskHistory.objects.filter(task__in=task_ids, cause=FailureCause.NODE_LOST)
    assert not lost, f"outage {stopped} to {restarted}\n{fleet.logs()}"
    assert Task.objects.filter(pk__in=task_ids, attempts=1).count() == len(tasks)
    assert_every_history_consistent(Task.objects.filter(pk__in=task_ids))
    reported = fleet.completions_reported()
    assert set(reported) == {str(pk) for pk in task_ids}
    assert set(reported.values()) == {1}
    # The workers felt the outage, and retried their beats at least every interval.
    beat_retries = _logged_beat_retries(tmp_path)
    assert beat_retries, fleet.logs()
    assert max(event["pause"] for event in beat_retries) <= HEARTBEAT_SECONDS


def _logged_beat_retries(log_dir: Path) -> list[dict]:
    events = (
        json.loads(line)
        for path in log_dir.glob("worker-*.log")
        for line in path.read_text().splitlines()
        if line.startswith("{")
    )
    return [e for e in events if e["event"] == "retry" and e["path"] == "/api/nodes/heartbeat"]
