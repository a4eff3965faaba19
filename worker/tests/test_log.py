"""The worker's log: one JSON object per line, whichever threads write at once."""

import json
import subprocess
import sys

# The heartbeat's thread and the main loop log at the same moments (a retry, a task
# started); eight threads here make lines that were interleaved show up every run.
WRITERS = """
import threading
from taskmgmt_worker.client import log

def write(n):
    for i in range(2000):
        log("event", thread=n, i=i, filler="x" * 100)

threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_lines_logged_by_threads_at_once_stay_whole():
    written = subprocess.run(
        [sys.executable, "-c", WRITERS], capture_output=True, text=True, timeout=60, check=True
    )

    lines = written.stdout.splitlines()
    assert len(lines) == 8 * 2000
    assert len({(event["thread"], event["i"]) for event in map(json.loads, lines)}) == 8 * 2000
