"""prometheus_client's multiprocess files: a dead process's folded into one archive per type.

In multiprocess mode every process writes its own files (`counter_<pid>.db`,
`histogram_<pid>.db`, ...) and a scrape reads them all. Nothing removed them before
gunicorn's next start, so the sweep (one process a minute) left 2,880 files a day and
each scrape read every one. `compact()` adds a dead process's values into one archive
file per type (`counter_archive.db`, ...; prometheus_client's own format, so its reader
sums it like any other) and removes the process's files: the totals stay the same,
so no counter goes down.

One lock file orders it: compactions take it exclusively, `ArchivedMultiProcessCollector`
(the scrape) shared, so a scrape sees a dead process's values either in its files or in
the archive, never both and never neither. A compaction commits through a journal: one
killed half-way is finished by the next compaction or scrape, never counted twice.

Imports nothing of Django or taskmgmt: gunicorn's master calls it (child_exit).
"""

import fcntl
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

logger = logging.getLogger("taskmgmt.metrics")

ARCHIVE = "archive"  # stands where prometheus_client's file names have the pid
LOCK = "compaction.lock"
JOURNAL = "compaction.journal"
NEW = ".new"  # an archive being written: not `*.db`, so no scrape reads it


def _add(values):
    """Rounded up, never down: a scrape after the fold must not read less than one
    before it, which Prometheus takes for a reset. Counts (whole numbers) add exactly;
    a histogram's `_sum` may gain a last bit."""
    values = [value for value, _ in values]
    total = math.fsum(values)
    if Fraction(total) < sum(map(Fraction, values)):
        total = math.nextafter(total, math.inf)
    return total, 0.0


# How each file prefix's values of several processes fold into one, as
# prometheus_client's reader would fold them: counters, histograms (their raw
# per-bucket counts and sums) and summaries add up; gauges follow their mode.
# `gauge_live*` of a dead process are dropped (prometheus_client's mark_process_dead);
# `gauge_all` keeps one series per pid, so those files stay as they are.
_FOLD = {
    "counter": _add,
    "histogram": _add,
    "summary": _add,
    "gauge_sum": _add,
    "gauge_max": lambda values: (max(value for value, _ in values), 0.0),
    "gauge_min": lambda values: (min(value for value, _ in values), 0.0),
    "gauge_mostrecent": lambda values: max(values, key=lambda pair: pair[1]),
}


def _prefix_and_pid(name: str) -> tuple[str, int | None]:
    """`counter_123.db` -> ("counter", 123); an archive or another file's pid is None."""
    prefix, _, pid = name.removesuffix(".db").rpartition("_")
    return prefix, int(pid) if pid.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


@contextmanager
def _locked(directory: Path, operation: int, wait: float | None = None):
    """Holds the directory's lock (shared or exclusive) and gives True; with `wait`,
    gives False if it stays taken that many seconds."""
    descriptor = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield _acquire(descriptor, operation, wait)
    finally:
        os.close(descriptor)  # releases the lock


def _acquire(descriptor: int, operation: int, wait: float | None) -> bool:
    if wait is None:
        fcntl.flock(descriptor, operation)
        return True
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


class ArchivedMultiProcessCollector(MultiProcessCollector):
    """prometheus_client's collector, reading the files under the compactions' lock and
    adding each sample's values up exactly (math.fsum): its running sum depends on the
    order of the files, which a compaction changes, and a float `_sum` read one bit
    lower after it would be a reset to Prometheus."""

    @staticmethod
    def merge(files, accumulate=True):
        # Its own reading and accumulating (private to prometheus_client 0.26, pinned in
        # requirements.txt), with the running sums made exact in between.
        metrics = MultiProcessCollector._read_metrics(files)
        for metric in metrics.values():
            if metric.type != "gauge":
                metric.samples = _summed(metric.samples)
        return MultiProcessCollector._accumulate_metrics(metrics, accumulate)

    def collect(self):
        directory = Path(self._path)
        with _locked(directory, fcntl.LOCK_SH):
            if not (directory / JOURNAL).exists():
                return self.merge(_written(directory), accumulate=True)
        with _locked(directory, fcntl.LOCK_EX):  # a compaction was killed half-way
            _finish_or_undo(directory)
            return self.merge(_written(directory), accumulate=True)


def _summed(samples: list[Sample]) -> list[Sample]:
    """One sample per name and labels, the exactly rounded sum of the files' values."""
    alike = {}
    for sample in samples:
        alike.setdefault((sample.name, sample.labels), []).append(sample)
    return [
        group[0]._replace(value=math.fsum(sample.value for sample in group))
        for group in alike.values()
    ]


def _written(directory: Path) -> list[Path]:
    """The `*.db` files but those still empty: a process making its file creates it, then
    sizes it, and prometheus_client's reader fails on one caught in between."""
    return [path for path in directory.glob("*.db") if path.stat().st_size]


def compact(directory: str | os.PathLike, ended: Iterable[int] = (), wait: float = 5.0) -> int:
    """Fold into the archives the files of `ended` (processes that have ended, or this one
    as it exits) and of every other process no longer running; return how many files went.

    The pids are this host's (os.kill(pid, 0)): every process writing to the directory
    must run in one PID namespace, as deploy/'s units do. Gives up after `wait` seconds
    if the lock stays taken (a long scrape): the files wait for the next compaction.
    """
    directory = Path(directory)
    ended = set(ended)
    with _locked(directory, fcntl.LOCK_EX, wait) as held:
        if not held:
            logger.warning(
                "metric files not compacted: the lock stayed taken",
                extra={"event": "metrics_compaction_skipped", "wait": wait},
            )
            return 0
        _finish_or_undo(directory)
        gone = {}  # file name: its prefix
        for path in directory.glob("*.db"):
            prefix, pid = _prefix_and_pid(path.name)
            if (prefix in _FOLD or prefix.startswith("gauge_live")) and (
                pid is not None and (pid in ended or not _running(pid))
            ):
                gone[path.name] = prefix
        if not gone:
            return 0
        archives = {}
        for prefix in sorted(set(gone.values()) & _FOLD.keys()):
            archive = f"{prefix}_{ARCHIVE}.db"
            names = [archive, *sorted(name for name, of in gone.items() if of == prefix)]
            archives[archive] = _fold(directory, names, _FOLD[prefix])
        _commit(directory, archives, sorted(gone))
        return len(gone)


def _fold(directory: Path, names: list[str], fold) -> dict[str, tuple[float, float]]:
    values: dict[str, list[tuple[float, float]]] = {}
    for name in names:
        path = directory / name
        if not path.exists() or not path.stat().st_size:  # no archive yet; made, never sized
            continue
        entries = MmapedDict.read_all_values_from_file(path)
        for key, value, timestamp, _ in entries:
            values.setdefault(key, []).append((value, timestamp))
    return {key: fold(pairs) for key, pairs in values.items()}


def _commit(directory: Path, archives: dict, gone: list[str]) -> None:
    for name, values in archives.items():
        archive = MmapedDict(str(directory / (name + NEW)))
        try:
            for key, (value, timestamp) in values.items():
                archive.write_value(key, value, timestamp)
        finally:
            archive.close()
    # The journal's rename is the commit: from here on the new archives count and
    # the files in `gone` do not, whether or not this process lives to finish.
    written = directory / (JOURNAL + NEW)
    written.write_text(json.dumps({"archives": sorted(archives), "gone": gone}))
    os.replace(written, directory / JOURNAL)
    _finish_or_undo(directory)


def _finish_or_undo(directory: Path) -> None:
    """Finish a committed compaction (its journal there); drop the half-written rest."""
    try:
        journal = json.loads((directory / JOURNAL).read_text())
    except FileNotFoundError:
        journal = None
    if journal:
        for name in journal["archives"]:
            if (directory / (name + NEW)).exists():
                os.replace(directory / (name + NEW), directory / name)
        for name in journal["gone"]:
            (directory / name).unlink(missing_ok=True)
        (directory / JOURNAL).unlink()
    for stray in directory.glob("*" + NEW):
        stray.unlink()


def compact_at_exit() -> None:
    """This process's files, as it ends (manage.py registers it with atexit). A warning,
    never a failed command: the files then wait for the next compaction."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # Unset, or unset by taskmgmt.metrics (it could not be made), or never made (the
    # process ended before Django's set-up): this process wrote no files there.
    if not directory or not os.path.isdir(directory):
        return
    try:
        compact(directory, ended=[os.getpid()])
    except OSError as error:
        logger.warning(
            "metric files not compacted",
            extra={"event": "metrics_compaction_failed", "error": str(error)},
        )
