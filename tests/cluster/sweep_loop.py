"""The sweep on an app host, as its timer runs it (deploy/taskmgmt-sweep.timer), but
every SWEEP_EVERY seconds and in one process: a Python start per run would take
more of this machine's two cores than the app."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402

SWEEP_EVERY = 2.0

while True:
    try:
        call_command("collect_failed", verbosity=0)
    except Exception as error:  # the database or Redis away: the next run tries again
        print(f"sweep failed: {type(error).__name__}: {error}", flush=True)
        connections.close_all()
    time.sleep(SWEEP_EVERY)
