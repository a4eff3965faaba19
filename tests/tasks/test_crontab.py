"""`manage.py crontab add` writes a line that really sweeps when cron runs it.

CRONTAB_EXECUTABLE points at crontab_double.sh, which keeps the table in a file.
The recorded line then runs as cron runs it: `/bin/sh -c`, a bare environment,
started in the home directory. Everything happens in child processes, against a
database they can share with this test.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

pytestmark = pytest.mark.process

MANAGE = Path(settings.BASE_DIR) / "manage.py"
CRONTAB_DOUBLE = Path(__file__).with_name("crontab_double.sh")
NODE_ID = "b0000000-0000-4000-8000-00000000c001"
EXPIRED_ID = "c0000000-0000-4000-8000-00000000c001"
NOT_DUE_ID = "c0000000-0000-4000-8000-00000000c002"


def manage(*args, env):
    return subprocess.run(
        [sys.executable, MANAGE, *args], env=env, capture_output=True, text=True, timeout=120
    )


def project_env(**variables):
    """The environment of an operator's shell: the settings need a key, nothing else."""
    return {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "taskmgmt.settings",
        "SECRET_KEY": "tests-only",
        **variables,
    }


@pytest.fixture
def child_database_url(tmp_path):
    """A database the child processes share with this test: on MariaDB the test
    database itself (the test is transactional: their writes are flushed after it);
    on SQLite, whose test database lives in this process's memory, a migrated file."""
    if connection.vendor == "sqlite":
        url = f"sqlite:///{tmp_path / 'cron.sqlite3'}"
        migrated = manage("migrate", "--noinput", env=project_env(DATABASE_URL=url))
        assert migrated.returncode == 0, migrated.stderr
        return url
    db = connection.settings_dict
    return f"mysql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 3306}/{db['NAME']}"


@pytest.fixture
def crontab(tmp_path):
    """Runs `manage.py crontab <subcommand>` on a table kept in a file; returns the table."""
    table = tmp_path / "crontab"

    def run(*subcommand, **variables):
        result = manage(
            "crontab",
            *subcommand,
            env=project_env(
                CRONTAB_EXECUTABLE=str(CRONTAB_DOUBLE), CRONTAB_FILE=str(table), **variables
            ),
        )
        assert result.returncode == 0, result.stderr
        return table.read_text().splitlines() if table.exists() else []

    run.table = table
    return run


def our_line(lines):
    (line,) = [line for line in lines if line.endswith(f"# taskmgmt sweep in {settings.BASE_DIR}")]
    fields = line.split(maxsplit=5)
    schedule, command = " ".join(fields[:5]), fields[5].rsplit(" # ", 1)[0]
    return schedule, command


def run_as_cron(command, home):
    """As cron runs a job: /bin/sh -c, only cron's few variables, in the home directory."""
    cron_env = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "HOME": str(home), "LOGNAME": "cron"}
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=cron_env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_tasks(database_url, tmp_path):
    """One node with an expired task and a task not yet due (loaddata: no history rows)."""
    fixture = tmp_path / "tasks.json"
    task = {
        "details": "-",
        "assigned_node": NODE_ID,
        "status": "in_progress",
        "created_at": "2019-12-01T00:00:00Z",
        "updated_at": "2019-12-01T00:00:00Z",
    }
    fixture.write_text(
        json.dumps(
            [
                {
                    "model": "accounts.user",
                    "pk": NODE_ID,
                    "fields": {"email": "cron-node@example.com", "name": "Cron", "role": "node"},
                },
                {
                    "model": "tasks.task",
                    "pk": EXPIRED_ID,
                    "fields": {**task, "name": "expired", "locked_at": "2020-01-01T00:00:00Z"},
                },
                {
                    "model": "tasks.task",
                    "pk": NOT_DUE_ID,
                    "fields": {**task, "name": "not due", "locked_at": "2999-01-01T00:00:00Z"},
                },
            ]
        )
    )
    loaded = manage("loaddata", fixture, env=project_env(DATABASE_URL=database_url))
    assert loaded.returncode == 0, loaded.stderr


def dump(database_url, model):
    dumped = manage("dumpdata", model, env=project_env(DATABASE_URL=database_url))
    assert dumped.returncode == 0, dumped.stderr
    return json.loads(dumped.stdout)


@pytest.mark.django_db(transaction=True)
def test_the_line_crontab_add_writes_fails_expired_tasks_in_crons_bare_environment(
    crontab, child_database_url, tmp_path
):
    load_tasks(child_database_url, tmp_path)
    # FAILOVER as production has it, whatever the checkout's development .env says.
    prefix = f"DATABASE_URL={child_database_url} SECRET_KEY=cron-only FAILOVER=off"

    _, command = our_line(crontab("add", CRONTAB_COMMAND_PREFIX=prefix))
    ran = run_as_cron(command, home=tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert "failed 1 expired task(s)" in ran.stdout
    statuses = {
        task["pk"]: task["fields"]["status"] for task in dump(child_database_url, "tasks.task")
    }
    assert statuses == {EXPIRED_ID: "failed", NOT_DUE_ID: "in_progress"}
    history = [row["fields"] for row in dump(child_database_url, "tasks.taskhistory")]
    assert [
        (row["task"], row["from_value"], row["to_value"], row["performed_by"]) for row in history
    ] == [(EXPIRED_ID, "in_progress", "failed", None)]


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_sweep_that_fails_under_cron_exits_non_zero_with_its_reason(crontab, tmp_path):
    unreachable = f"mysql://root@127.0.0.1:{closed_port()}/taskmgmt"
    prefix = f"DATABASE_URL={unreachable} SECRET_KEY=cron-only"

    _, command = our_line(crontab("add", CRONTAB_COMMAND_PREFIX=prefix))
    ran = run_as_cron(command, home=tmp_path)

    assert ran.returncode == 1
    assert "collect_failed: The sweep stopped on a database error" in ran.stderr
    assert "Can't connect" in ran.stderr


def test_the_schedule_is_the_sweep_schedule_setting_every_minute_by_default(crontab):
    assert our_line(crontab("add"))[0] == "* * * * *"
    # django-crontab cannot name the job it replaces once the schedule changed,
    # unless quiet: docs/operations.md says to add with -v 0 after a change.
    assert our_line(crontab("add", "-v", "0", SWEEP_SCHEDULE="*/5 * * * *"))[0] == "*/5 * * * *"


def test_add_and_remove_leave_the_users_other_cron_jobs_alone(crontab):
    crontab.table.write_text("0 3 * * * /usr/local/bin/backup\n")

    added = crontab("add")
    added_again = crontab("add")
    removed = crontab("remove")

    assert added[0] == "0 3 * * * /usr/local/bin/backup"
    assert added_again == added
    assert removed == ["0 3 * * * /usr/local/bin/backup"]
