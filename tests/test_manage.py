"""A fresh clone's commands: `make run` writes a development .env, and a manage.py
command without a setting it needs says so in one line instead of a traceback.

Each test works on a copy of the project in a temp dir with a bare environment,
so neither this checkout's .env nor the suite's own settings take part.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ["manage.py", "Makefile", "requirements.txt", "requirements-dev.txt"]
PACKAGES = ["taskmgmt", "accounts", "nodes", "tasks", "fixtures"]


@pytest.fixture
def clone(tmp_path) -> Path:
    """The project's files, as a fresh clone has them (no .env, no database)."""
    for name in PROJECT:
        shutil.copy2(ROOT / name, tmp_path / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def bare_environment() -> dict:
    """A login shell's environment: none of the settings the suite or a developer set."""
    return {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}


def manage(clone: Path, *args: str):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=clone,
        env=bare_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def make(clone: Path, *args: str):
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=clone,
        env=bare_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [["collect_failed"], ["migrate"], ["check"]])
def test_a_command_without_a_secret_key_says_so_in_one_line_and_exits_1(clone, command):
    result = manage(clone, *command)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("manage.py: SECRET_KEY is not set.")
    assert "make run" in result.stderr


def test_a_wrong_setting_is_one_line_too(clone):
    (clone / ".env").write_text("DEBUG=true\nFAILOVER=sometimes\n")

    result = manage(clone, "collect_failed")

    assert result.returncode == 1
    assert result.stderr == "manage.py: FAILOVER must be off or reassign, not 'sometimes'.\n"


@pytest.mark.parametrize("share", ["0", "1.5", "-0.5"])
def test_a_down_share_outside_zero_to_one_is_refused(clone, share):
    (clone / ".env").write_text(f"DEBUG=true\nFAILOVER_MAX_DOWN_SHARE={share}\n")

    result = manage(clone, "collect_failed")

    assert result.returncode == 1
    assert result.stderr == ("manage.py: FAILOVER_MAX_DOWN_SHARE must be above 0 and at most 1.\n")


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param("* * * * * *", id="six-fields"),  # the sixth would start cron's command
        pytest.param("*/5 * * *", id="four-fields"),
        pytest.param("every 5 minutes please", id="words"),
        pytest.param("", id="empty"),
        pytest.param("@reboot", id="not-periodic"),
    ],
)
def test_a_sweep_schedule_that_is_not_a_cron_schedule_is_refused(clone, schedule):
    (clone / ".env").write_text(f"DEBUG=true\nSWEEP_SCHEDULE={schedule}\n")

    result = manage(clone, "check")

    assert result.returncode == 1
    assert result.stderr.startswith("manage.py: SWEEP_SCHEDULE must be a cron schedule")
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(
    "schedule", ["*/5 * * * *", "0 3 * * mon-fri", "15,45 8-18 * * *", "@hourly"]
)
def test_a_cron_schedule_is_taken(clone, schedule):
    (clone / ".env").write_text(f"DEBUG=true\nSWEEP_SCHEDULE={schedule}\n")

    result = manage(clone, "check")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("RATELIMIT_API", "lots", "RATELIMIT_API must be a rate"),  # was a 500 on every call
        ("RATELIMIT_LOGIN_IP", "abc", "RATELIMIT_LOGIN_IP must be a rate"),  # a 500 at login
        ("RATELIMIT_LOGIN_USER", "5/x", "RATELIMIT_LOGIN_USER must be a rate"),  # was 5/s
        ("RATELIMIT_API", "600/M", "RATELIMIT_API must be a rate"),  # was 600 a second
        ("RATELIMIT_API", "600/0m", "RATELIMIT_API must be a rate"),  # a window of 0 s
        ("JWT_ACCESS_MINUTES", "0", "JWT_ACCESS_MINUTES and JWT_REFRESH_DAYS must be"),
        ("JWT_REFRESH_DAYS", "-1", "JWT_ACCESS_MINUTES and JWT_REFRESH_DAYS must be"),
        ("MAX_PAGE_SIZE", "0", "MAX_PAGE_SIZE must be at least 1"),
        # Every node down at once, or down before it has missed a beat.
        ("NODE_DOWN_AFTER", "0", "NODE_DOWN_AFTER must be more than 1.5 x"),
        ("NODE_DOWN_AFTER", "15", "NODE_DOWN_AFTER must be more than 1.5 x"),
        ("NODE_HEARTBEAT_SECONDS", "0", "NODE_HEARTBEAT_SECONDS must be at least 1"),
    ],
)
def test_a_rate_lifetime_or_page_size_that_cannot_work_is_refused(clone, setting, value, message):
    (clone / ".env").write_text(f"DEBUG=true\n{setting}={value}\n")

    result = manage(clone, "check")

    assert result.returncode == 1
    assert result.stderr.startswith(f"manage.py: {message}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("rate", ["30/m", "100/5m", "10/min", "1000/h", "5/s", "20000/d"])
def test_a_rate_django_ratelimit_reads_is_taken(clone, rate):
    (clone / ".env").write_text(f"DEBUG=true\nRATELIMIT_API={rate}\n")

    assert manage(clone, "check").returncode == 0


@pytest.mark.parametrize(
    "setting, value",
    [("JWT_ACCESS_MINUTES", "abc"), ("MAX_PAGE_SIZE", "1e3"), ("FAILOVER_MAX_DOWN_SHARE", "half")],
)
def test_a_number_that_cannot_be_read_is_one_line_naming_it(clone, setting, value):
    (clone / ".env").write_text(f"DEBUG=true\n{setting}={value}\n")

    result = manage(clone, "check")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"manage.py: {setting} cannot be read"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("url", ["mysql//root@127.0.0.1/taskmgmt", "127.0.0.1:3306/taskmgmt"])
def test_a_database_url_without_a_known_scheme_is_one_line(clone, url):
    (clone / ".env").write_text(f"DEBUG=true\nDATABASE_URL={url}\n")

    result = manage(clone, "check")

    assert result.returncode == 1
    assert result.stderr.startswith("manage.py: DATABASE_URL must be a database URL"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_make_run_writes_a_development_env_first(clone):
    plan = make(clone, "-n", "run").stdout.splitlines()

    writes_env = next(i for i, line in enumerate(plan) if "> .env" in line)
    starts = next(i for i, line in enumerate(plan) if "manage.py migrate" in line)
    assert writes_env < starts


def test_the_written_env_makes_the_readme_commands_work(clone):
    assert make(clone, ".env").returncode == 0
    values = dict(
        line.split("=", 1) for line in (clone / ".env").read_text().splitlines() if "=" in line
    )

    assert values["DEBUG"] == "true"
    assert len(values["SECRET_KEY"]) >= 50
    # The demo's failover, quick enough to watch (README.md, the tour's step 5).
    assert values["FAILOVER"] == "reassign"
    assert (values["NODE_HEARTBEAT_SECONDS"], values["NODE_DOWN_AFTER"]) == ("5", "20")
    assert manage(clone, "migrate", "-v", "0").returncode == 0
    swept = manage(clone, "collect_failed")
    assert swept.returncode == 0, swept.stderr
    assert "Traceback" not in swept.stderr


def test_make_run_runs_the_sweep_beside_the_server_and_stops_it_with_it(clone):
    plan = make(clone, "-n", "run").stdout

    assert "manage.py collect_failed --every 5 & sweep=$!" in plan
    assert "trap 'kill $sweep 2>/dev/null' EXIT INT TERM HUP" in plan
    assert plan.index("collect_failed --every") < plan.index("manage.py runserver")


def test_each_env_gets_its_own_secret_key(clone, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    shutil.copy2(clone / "Makefile", other / "Makefile")

    make(clone, ".env")
    make(other, ".env")

    assert (clone / ".env").read_text() != (other / ".env").read_text()


def test_make_run_never_overwrites_an_existing_env(clone):
    mine = "SECRET_KEY=my-own-production-key\nDEBUG=false\n"
    (clone / ".env").write_text(mine)

    result = make(clone, ".env")

    assert result.returncode == 0
    assert (clone / ".env").read_text() == mine


def fake_venv(clone: Path) -> None:
    """A .venv whose python does nothing and whose gunicorn prints the address it would
    bind, read from the clone's gunicorn.conf.py as gunicorn reads it."""
    bin_ = clone / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "gunicorn").write_text(
        f'#!/bin/sh\nPROMETHEUS_MULTIPROC_DIR="{clone}" exec {sys.executable} -c '
        "\"import runpy; print('bind', runpy.run_path('gunicorn.conf.py')['bind'])\"\n"
    )
    for script in bin_.iterdir():
        script.chmod(0o755)
    (clone / ".venv" / ".installed").touch()


@pytest.mark.parametrize(
    ("args", "bind"),
    [
        ([], "10.0.0.11:8000"),  # .env's GUNICORN_BIND, as .env.example offers it
        (["PORT=8765"], "127.0.0.1:8765"),  # HOST or PORT named on the command line win
    ],
)
def test_make_serve_binds_the_env_files_address_unless_told_another(clone, args, bind):
    shutil.copy2(ROOT / "gunicorn.conf.py", clone / "gunicorn.conf.py")
    fake_venv(clone)
    (clone / ".env").write_text("SECRET_KEY=x\nGUNICORN_BIND=10.0.0.11:8000\n")

    result = make(clone, "serve", *args)

    assert result.returncode == 0, result.stderr
    assert f"bind {bind}" in result.stdout.splitlines()
