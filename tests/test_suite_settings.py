"""The suite's settings (tests/settings.py) pin production values against the
development .env, yet a server a test starts on them keeps what the test gives it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
PRINT_LIVENESS = (
    "import django; django.setup(); from django.conf import settings as s;"
    "print(s.NODE_HEARTBEAT_SECONDS, s.NODE_DOWN_AFTER, s.FAILOVER, s.DEBUG)"
)


def test_the_suite_runs_on_the_pinned_defaults():
    assert (settings.NODE_HEARTBEAT_SECONDS, settings.NODE_DOWN_AFTER) == (10, 30)
    assert (settings.FAILOVER, settings.DEBUG) == ("off", False)


@pytest.mark.process
def test_a_process_the_suite_starts_keeps_the_liveness_it_is_given():
    # As tests/fleet/test_outage.py starts gunicorn: the suite's environment (its
    # DJANGO_SETTINGS_MODULE too) and short liveness times. Pinned again in the child,
    # the server answered heartbeatSeconds 10 while the sweep counted 3 s as down.
    env = {
        **os.environ,
        "NODE_HEARTBEAT_SECONDS": "1",
        "NODE_DOWN_AFTER": "3",
        "FAILOVER": "reassign",
    }
    assert env["DJANGO_SETTINGS_MODULE"] == "tests.settings"
    result = subprocess.run(
        [sys.executable, "-c", PRINT_LIVENESS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip

    assert result.stdout.split() == ["1", "3", "reassign", "False"]
