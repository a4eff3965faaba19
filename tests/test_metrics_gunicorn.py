"""/metrics under the real server: gunicorn.conf.py with two worker processes.

Each worker counts the requests it serves in its own file; a scrape, whichever worker
answers it, must show the sum, and keep a killed worker's counts, folded into the archive.
"""

import os
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port
from tests.test_faults import wait_until

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "gunicorn-scrape-token-0123456789"
REQUESTS = 40


def get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=15) as response:
        return response.status, response.read().decode()


def healthz_count(port: int) -> float:
    _, body = get(port, "/metrics", TOKEN)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "taskmgmt_http_requests_total" and sample.labels == {
                "method": "GET",
                "view": "healthz",
                "status": "200",
            }:
                return sample.value
    return 0.0


@pytest.fixture
def server(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SECRET_KEY": "gunicorn-metrics-test-key-long-enough-for-hs256",
        "DEBUG": "false",
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        "WEB_CONCURRENCY": "2",
        # Sync workers: one request at a time each, so concurrent requests use both.
        "GUNICORN_THREADS": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("CACHE_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=ROOT,
        env={k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        check=True,
        timeout=120,
    )
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_1.db").write_bytes(b"")  # a stale file: must be cleared
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])

    def workers() -> set[int]:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    try:
        wait_until(lambda: len(workers()) == 2, 30, "gunicorn did not boot 2 workers")
        wait_until(lambda: _answers(port), 30, "gunicorn did not answer")
        # A worker accepts requests once it has loaded the app itself (preload_app is
        # off), so the first to boot may answer everything until the other is ready.
        wait_until(
            lambda: _all_serving(port, tmp_path / "metrics", workers()),
            30,
            "a gunicorn worker never answered",
        )
        yield {"port": port, "workers": workers, "dir": tmp_path / "metrics"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def counted_pids(metrics_dir: Path) -> set[str]:
    """The workers with counts on file: each writes its own (prometheus_client); "archive"
    for the dead ones' (taskmgmt/metrics_files.py)."""
    return {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}


def _all_serving(port: int, metrics_dir: Path, workers: set[int]) -> bool:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: _answers(port), range(16)))
    return counted_pids(metrics_dir) >= {str(pid) for pid in workers}


def _answers(port: int) -> bool:
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False


def test_a_scrape_sums_every_workers_counts_and_keeps_a_dead_workers(server):
    port = server["port"]
    start = healthz_count(port)  # the readiness probes already counted
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: get(port, "/healthz")[0], range(REQUESTS)))
    assert statuses == [200] * REQUESTS

    pids = counted_pids(server["dir"])
    assert pids == {str(pid) for pid in server["workers"]()}  # both served; the stale file went
    # Whichever worker answers each scrape, the total is the same.
    for _ in range(6):
        assert healthz_count(port) == start + REQUESTS

    victim = min(server["workers"]())
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in server["workers"]() and len(server["workers"]()) == 2,
        30,
        "gunicorn did not replace the killed worker",
    )
    wait_until(lambda: _answers(port), 30, "gunicorn did not answer after the kill")
    assert healthz_count(port) >= start + REQUESTS + 1  # + the probe just now, nothing lost
    # The master folded the dead worker's files into the archive (child_exit): a worker
    # replaced now and then no longer leaves two files a time for every scrape to read.
    assert str(victim) not in counted_pids(server["dir"])
    assert "archive" in counted_pids(server["dir"])
