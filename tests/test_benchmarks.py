"""The in-process benchmarks still run: each loads its own data with plain SQL, which a
new NOT NULL column breaks without any other test noticing (bench-sweep did, unseen,
from the work-data columns until this test). Tiny sizes on SQLite; the figures
themselves are not asserted (docs/performance.md)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.process


def run_bench(*args: str) -> str:
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    }
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_sweep_benchmark_sweeps_every_task_and_its_floor():
    out = run_bench("bench/sweep.py", "300")
    assert "created 300 expired tasks" in out
    assert "hand-written SQL floor" in out


def test_bulk_benchmark_creates_in_one_request():
    out = run_bench("bench/bulk.py", "20")
    assert "bulk create of 20 tasks, one request" in out
    assert "20 single creates" in out
