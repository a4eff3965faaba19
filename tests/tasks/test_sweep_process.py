"""`manage.py collect_failed` as cron and `make run` start it: a process of its own
over a database with the demo's two expired tasks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.process


@pytest.fixture
def env(tmp_path):
    """The project's own settings (not the suite's) over a fresh SQLite file with the demo."""
    unset = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CACHE_URL", "LOG_LEVEL")
    environment = {key: value for key, value in os.environ.items() if key not in unset}
    environment |= {
        "FAILOVER": "off",  # whatever the development .env says
        "SECRET_KEY": "tests-only-not-secret",
        "DB_ENGINE": "sqlite",
        "DB_NAME": str(tmp_path / "db.sqlite3"),
    }
    for command in (["migrate", "--noinput", "-v", "0"], ["loaddata", "demo", "-v", "0"]):
        manage(environment, *command, check=True)
    return environment


def manage(env, *args, check=False):
    """`manage.py …` in a process of its own: (stdout, stderr) as it printed them."""
    return subprocess.run(
        [sys.executable, settings.BASE_DIR / "manage.py", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def test_a_run_with_nothing_to_do_prints_nothing_at_all(env):
    manage(env, "collect_failed", check=True)  # fails the demo's two expired tasks

    second = manage(env, "collect_failed", check=True)

    assert (second.stdout, second.stderr) == ("", "")


def test_a_run_that_fails_tasks_prints_the_count_and_logs_to_stderr(env):
    result = manage(env, "collect_failed", check=True)

    assert result.stdout.startswith("failed 2 expired task(s) in ")
    (line,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert (line["message"], line["failed_count"]) == ("sweep finished", 2)


def test_verbosity_0_keeps_stdout_empty_and_the_log_line_follows_log_level(env):
    quiet = manage(env, "collect_failed", "-v", "0", check=True)
    assert quiet.stdout == ""
    assert "sweep finished" in quiet.stderr

    manage(env, "shell", "-c", EXPIRE_ONE, check=True)
    silent = manage({**env, "LOG_LEVEL": "WARNING"}, "collect_failed", "-v", "0", check=True)
    assert (silent.stdout, silent.stderr) == ("", "")
    assert manage(env, "shell", "-v", "0", "-c", STATUS_OF_ONE).stdout.strip() == "failed"


EXPIRE_ONE = (
    "from datetime import timedelta; from django.utils import timezone;"
    "from tasks.models import Task;"
    "Task.objects.filter(pk='c0000000-0000-4000-8000-000000000001')"
    ".update(locked_at=timezone.now() - timedelta(hours=1))"
)
STATUS_OF_ONE = (
    "from tasks.models import Task;"
    "print(Task.objects.get(pk='c0000000-0000-4000-8000-000000000001').status)"
)


def test_every_sweeps_in_a_loop_until_sigterm(env):
    loop = subprocess.Popen(
        [sys.executable, settings.BASE_DIR / "manage.py", "collect_failed", "--every", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert loop.stdout.readline().startswith("failed 2 expired task(s) in ")
        manage(env, "shell", "-c", EXPIRE_ONE, check=True)
        # The next runs take the task that expired meanwhile, and say so.
        assert loop.stdout.readline().startswith("failed 1 expired task(s) in ")
    finally:
        loop.send_signal(signal.SIGTERM)
        stdout, stderr = loop.communicate(timeout=30)

    assert loop.returncode == 0
    assert stdout == ""  # the idle runs in between printed nothing
    assert [json.loads(line)["failed_count"] for line in stderr.splitlines()] == [2, 1]


def test_every_ends_with_the_process_that_started_it(env, tmp_path):
    # A shell starts the loop in the background and exits: the loop must not linger,
    # even when the shell is gone before Django's set-up is done (a loaded machine).
    pid_file = tmp_path / "loop.pid"
    script = (
        f"{sys.executable} {settings.BASE_DIR / 'manage.py'} collect_failed --every 0.2 "
        f">/dev/null 2>&1 & echo $! > {pid_file}; sleep 0.5"
    )
    subprocess.run(["/bin/sh", "-c", script], env=env, timeout=60, check=True)
    pid = int(pid_file.read_text())

    for _ in range(100):
        if not running(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the sweep loop outlived the shell that started it")


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


NODE1_DOWN = (
    "from datetime import timedelta; from django.utils import timezone;"
    "from accounts.models import User;"
    "User.objects.filter(email='node1@example.com')"
    ".update(last_seen=timezone.now() - timedelta(hours=1))"
)


def test_every_reports_stranded_tasks_once_not_on_every_run(env):
    env = {**env, "FAILOVER": "reassign"}
    manage(env, "shell", "-c", NODE1_DOWN, check=True)  # down, and no other node alive
    loop = subprocess.Popen(
        [sys.executable, settings.BASE_DIR / "manage.py", "collect_failed", "--every", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        loop.stdout.readline()  # the first run: the demo's expired tasks and node1's
        time.sleep(2)  # many more runs, each finding the same stranded tasks
    finally:
        loop.send_signal(signal.SIGTERM)
        _, stderr = loop.communicate(timeout=30)

    # Once per count, about 20 runs in all: the first run fails node1's started task
    # (node_lost), which is not left in place, so every run finds the same count.
    told = [line for line in stderr.splitlines() if line.startswith("no alive schedulable node")]
    logged = [line for line in stderr.splitlines() if "failover_stranded" in line]
    assert len(told) == 1
    assert len(set(told)) == len(told)
    assert len(logged) == len(told)
