"""prometheus_client's multiprocess files (taskmgmt/metrics_files.py): a process that ended
leaves no files, its counts stay in the scrape, and a scrape never sees them twice or not
at all, with real processes counting, ending, being killed and compacting at once."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskmgmt.metrics_files import JOURNAL, ArchivedMultiProcessCollector, compact
from tests.test_metrics import TOKEN, scrape, value

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent

# A process that counts `argv[1]` and ends as manage.py does: compacting its files at exit.
COUNT = """
import atexit, sys
from prometheus_client import Counter, Histogram
from taskmgmt.metrics_files import compact_at_exit
atexit.register(compact_at_exit)
Counter("test_counted", "Counted by a test process.").inc(float(sys.argv[1]))
Histogram("test_waited_seconds", "Observed by a test process.", buckets=(5, 50)).observe(
    float(sys.argv[1])
)
if sys.argv[2:] == ["wait"]:  # stays alive, counted, until its stdin closes
    print("counted", flush=True)
    sys.stdin.read()
if sys.argv[2:] == ["killed"]:  # ends without its exit handlers, as SIGKILL does
    import os
    os._exit(9)
"""


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


def run_count(directory: Path, amount: float, *how: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    return subprocess.Popen(
        [sys.executable, "-c", COUNT, str(amount), *how], cwd=ROOT, env=env, **popen
    )


def totals(directory: Path) -> tuple[float, float, float]:
    """(counted, observations, their sum) as a scrape of `directory` reads them."""
    registry = CollectorRegistry()
    ArchivedMultiProcessCollector(registry, path=str(directory))
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    return (
        samples.get("test_counted_total", 0.0),
        samples.get("test_waited_seconds_count", 0.0),
        samples.get("test_waited_seconds_sum", 0.0),
    )


def metric_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.db"))


@pytest.mark.django_db
def test_many_manage_py_runs_leave_two_files_and_the_scrape_has_every_count(
    tmp_path, client, metrics_token, monkeypatch
):
    """The sweep is a manage.py run a minute, each writing a counter and a histogram file:
    they piled up until gunicorn's next start (2,880 a day), and every scrape read them all."""
    directory = tmp_path / "metrics"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SECRET_KEY": "metrics-files-test-key",
        "DEBUG": "true",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    amounts = [1, 2, 3, 5, 8, 13]
    for amount in amounts:
        count = f"from taskmgmt.metrics import PROGRESS_REPORTS; PROGRESS_REPORTS.inc({amount})"
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", count],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
        )

    assert metric_files(directory) == ["counter_archive.db", "histogram_archive.db"]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    assert value(scrape(client), "taskmgmt_progress_reports_total") == sum(amounts)


def test_a_scrape_sums_the_same_before_and_after_a_compaction(tmp_path):
    alive = run_count(tmp_path, 100, "wait", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert alive.stdout.readline() == b"counted\n"
        run_count(tmp_path, 7, "killed").wait(timeout=60)
        run_count(tmp_path, 11, "killed").wait(timeout=60)
        # Killed: no exit handler ran, their files are there beside the live process's.
        assert len(metric_files(tmp_path)) == 6
        before = totals(tmp_path)

        # The next compaction (any process's exit) folds the dead ones, not the live one.
        assert compact(tmp_path) == 4

        assert metric_files(tmp_path) == sorted(
            [
                "counter_archive.db",
                f"counter_{alive.pid}.db",
                "histogram_archive.db",
                f"histogram_{alive.pid}.db",
            ]
        )
        assert totals(tmp_path) == before == (118, 3, 118)
    finally:
        alive.communicate(timeout=60)
    assert alive.returncode == 0
    # The live one compacted its own files as it ended.
    assert metric_files(tmp_path) == ["counter_archive.db", "histogram_archive.db"]
    assert totals(tmp_path) == (118, 3, 118)


def test_a_float_sum_read_after_a_compaction_is_never_lower_than_before(tmp_path):
    """Floats added in another order may round lower: a dead process's 0.029 s added to
    the archive's 0.217 s first, then the live one's 0.422 s, gave 0.6679999999999999 where
    the scrape before read 0.668, and Prometheus takes any decrease for a reset."""
    run_count(tmp_path, 0.217, "killed").wait(timeout=60)
    compact(tmp_path)
    alive = run_count(tmp_path, 0.422, "wait", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert alive.stdout.readline() == b"counted\n"
        run_count(tmp_path, 0.029, "killed").wait(timeout=60)
        before = totals(tmp_path)

        assert compact(tmp_path) == 2

        after = totals(tmp_path)
    finally:
        alive.communicate(timeout=60)
    assert before[2] == 0.668
    assert after[2] >= before[2]
    assert after[2] == pytest.approx(0.668, rel=1e-15)


def test_scrapes_during_many_exits_never_count_a_value_twice_or_miss_one(tmp_path):
    """Each exit compacts while scrapes read: a total that went down would be read by
    Prometheus as a counter reset, one too high would be a count that never happened."""
    amounts = list(range(1, 25))
    seen, done = [], []

    def scrape_until_done():
        while not done:
            seen.append(totals(tmp_path))

    with ThreadPoolExecutor(5) as pool:
        scraper = pool.submit(scrape_until_done)
        try:
            list(pool.map(lambda amount: run_count(tmp_path, amount).wait(timeout=120), amounts))
        finally:
            done.append(True)
        scraper.result()

    final = (float(sum(amounts)), float(len(amounts)), float(sum(amounts)))
    assert len(seen) > 10
    went_down = [(a, b) for a, b in pairwise(seen) if any(map(float.__gt__, a, b))]
    assert went_down == [], "a total went down"
    assert all(map(float.__le__, total, final) for total in seen), "a value was counted twice"
    assert totals(tmp_path) == final
    assert metric_files(tmp_path) == ["counter_archive.db", "histogram_archive.db"]


GAUGES = """
import sys
from prometheus_client import Gauge
for mode in ("livesum", "sum", "max", "min", "mostrecent", "all"):
    Gauge(f"test_{mode}", "Set by a test process.", multiprocess_mode=mode).set(float(sys.argv[1]))
"""


def test_a_dead_process_s_gauges_fold_by_their_mode(tmp_path):
    """As prometheus_client reads them: live* gauges of a dead process are dropped, sum,
    min, max and the most recent value folded, `all` keeps a series per pid (its files)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pids = []
    for number in (3, 7, 5):
        run = subprocess.Popen([sys.executable, "-c", GAUGES, str(number)], cwd=ROOT, env=env)
        run.wait(timeout=60)
        pids.append(run.pid)

    def gauges() -> dict:
        registry = CollectorRegistry()
        ArchivedMultiProcessCollector(registry, path=str(tmp_path))
        return {
            (sample.name, sample.labels.get("pid")): sample.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples
        }

    before = gauges()
    assert compact(tmp_path) == 15  # all but the three `gauge_all` files

    assert sorted(path.name for path in tmp_path.glob("gauge_all_*.db")) == sorted(
        f"gauge_all_{pid}.db" for pid in pids
    )
    after = gauges()
    assert {name: value for (name, _), value in after.items() if "all" not in name} == {
        "test_sum": 15,
        "test_min": 3,
        "test_max": 7,
        "test_mostrecent": 5,
    }
    assert before[("test_livesum", None)] == 15  # until the compaction, as before
    assert {key: value for key, value in after.items() if key[0] == "test_all"} == {
        ("test_all", str(pid)): number for pid, number in zip(pids, (3, 7, 5), strict=True)
    }


@pytest.mark.parametrize("killed", ["before its commit", "after its commit"])
def test_a_compaction_killed_half_way_counts_every_value_once(tmp_path, killed):
    """Its journal's rename is the commit: killed before it, the archives it was writing
    are dropped and the files stay; after it, the next scrape or compaction finishes."""
    for amount in (3, 4):
        run_count(tmp_path, amount, "killed").wait(timeout=60)
    run_count(tmp_path, 5).wait(timeout=60)  # one compaction done: an archive to add to
    run_count(tmp_path, 6, "killed").wait(timeout=60)
    die = """
import os, sys
from taskmgmt import metrics_files
replace = os.replace
def replace_then_die(source, target):
    if str(target).endswith(metrics_files.JOURNAL):
        if sys.argv[2] == "after its commit":
            replace(source, target)
        os._exit(9)
    replace(source, target)
os.replace = replace_then_die
metrics_files.compact(sys.argv[1])
"""
    compaction = subprocess.run(
        [sys.executable, "-c", die, str(tmp_path), killed], cwd=ROOT, timeout=60
    )
    assert compaction.returncode == 9
    assert any(path.name.endswith(".new") for path in tmp_path.iterdir())  # left half-way
    assert (tmp_path / JOURNAL).exists() == (killed == "after its commit")

    assert totals(tmp_path) == (18, 4, 18)
    compact(tmp_path)
    assert totals(tmp_path) == (18, 4, 18)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "compaction.lock",
        "counter_archive.db",
        "histogram_archive.db",
    ]


def test_a_compaction_waits_for_a_scrape_then_gives_up(tmp_path):
    """gunicorn's master compacts (child_exit): it must not hang on a scrape that does."""
    run_count(tmp_path, 1, "killed").wait(timeout=60)
    hold = "import fcntl, os, sys, time; d = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    hold += "fcntl.flock(d, fcntl.LOCK_SH); print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path / "compaction.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        started = time.monotonic()
        assert compact(tmp_path, wait=0.5) == 0
        assert 0.5 <= time.monotonic() - started < 5
        assert len(metric_files(tmp_path)) == 2
    finally:
        holder.communicate(timeout=30)
    assert compact(tmp_path, wait=0.5) == 2
