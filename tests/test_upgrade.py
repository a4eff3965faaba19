"""A database made by the previous release upgrades with this release's `migrate` and
keeps every task and history row (CONTRIBUTING.md, upgrades are part of the change).

The previous release's code (0.2.0, the last commit of its round) is taken from git
history, not copied into the tree. It migrates a database of its own, loads its demo
and works on it (claims, a completion, a failure, a reassignment, a soft delete, the
sweep failing an overdue task), all with its own code; then this checkout migrates the
same database and its code reads and sweeps it. On SQLite in `make test`, on MariaDB in
CI's MariaDB pass (the suite's DATABASE_URL names the server).
"""

import json
import os
import subprocess
import sys
import tarfile
import uuid
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import MySQLdb
import pytest
from django.conf import settings

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS_RELEASE = "3a6b74db8473bbbd68a6b1e7f10699a47bf328fd"  # 0.2.0, 2026-12-01

# Run by the previous release: work that leaves history rows of every kind it wrote.
WORK = """
from datetime import timedelta
from django.utils import timezone
from accounts.models import User
from tasks import services
from tasks.models import Task

node1, node2 = (User.objects.get(email=f"node{n}@example.com") for n in (1, 2))
for number in range(3):  # work for node1 to claim, whatever the demo left it
    services.task_create(
        name=f"job {number}", details="d", assigned_node=node1,
        locked_at=timezone.now() + timedelta(days=1),
    )
done = services.task_claim(node=node1)
services.task_change_status(task_id=done.pk, node=node1, status="completed")
broken = services.task_claim(node=node1)
services.task_change_status(task_id=broken.pk, node=node1, status="failed", reason="disk " * 40)
moved = Task.objects.filter(assigned_node=node1, status="pending").first()
services.task_assign(task_id=moved.pk, node=node2, locked_at=timezone.now() + timedelta(days=3))
late = services.task_create(
    name="late", details="d", assigned_node=node2, locked_at=timezone.now() + timedelta(hours=1)
)
Task.objects.filter(pk=late.pk).update(locked_at=timezone.now() - timedelta(minutes=1))
services.task_set_active(task=Task.objects.filter(status="pending").last(), active=False)
"""

# Every column both releases have, read as text by plain SQL (either release's code).
SNAPSHOT = """
import json
from django.db import connection

TABLES = {
    "tasks": "SELECT id, name, details, assigned_node_id, status, locked_at, active, attempts,"
    " failure_cause, failure_reason, created_at, updated_at FROM tasks_task ORDER BY id",
    "history": "SELECT id, task_id, action, from_value, to_value, performed_by_id, cause,"
    " created_at FROM tasks_taskhistory ORDER BY id",
    "users": "SELECT id, email, password, is_active FROM accounts_user ORDER BY id",
}
with connection.cursor() as cursor:
    rows = {}
    for name, sql in TABLES.items():
        cursor.execute(sql)
        rows[name] = [[None if v is None else str(v) for v in row] for row in cursor.fetchall()]
print(json.dumps(rows))
"""

# Run by this release on the upgraded database: its models read every row.
READ = """
import json
from tasks.models import Task, TaskHistory
tasks = list(Task.objects.all())
history = list(TaskHistory.objects.all())
print(json.dumps({
    "tasks": len(tasks),
    "history": len(history),
    "statuses": sorted({task.status for task in tasks}),
    "actions": sorted({row.action for row in history}),
}))
"""


def previous_release(into: Path) -> Path:
    """The previous release's files, from this clone's history."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", PREVIOUS_RELEASE],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode:
        pytest.fail(
            f"git cannot read the previous release {PREVIOUS_RELEASE[:7]} (a shallow clone? "
            f"`git fetch --unshallow`): {archive.stderr.decode().strip()}"
        )
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as files:
        files.extractall(into, filter="data")
    return into


@pytest.fixture
def database_url(tmp_path):
    """A database of the test's own: a file on SQLite, a new database on the suite's
    MariaDB server when the suite runs there."""
    configured = settings.DATABASES["default"]
    if configured["ENGINE"] == "django.db.backends.sqlite3":
        yield f"sqlite:///{tmp_path / 'upgrade.sqlite3'}"
        return
    server = {
        "host": configured["HOST"] or "127.0.0.1",
        "port": int(configured["PORT"] or 3306),
        "user": configured["USER"],
        "password": configured["PASSWORD"],
    }
    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    connection = MySQLdb.connect(**server)
    connection.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        url = urlsplit(os.environ.get("DATABASE_URL", "mysql://root@127.0.0.1:3306/x"))
        yield urlunsplit((url.scheme, url.netloc, f"/{name}", url.query, ""))
    finally:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        connection.close()


def manage(tree: Path, database_url: str, *args: str) -> str:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))},
        "DJANGO_SETTINGS_MODULE": "taskmgmt.settings",
        "DEBUG": "false",
        "SECRET_KEY": "upgrade-test-key-not-secret-0123456789abcdef",
        "DATABASE_URL": database_url,
        "CACHE_URL": "",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{tree.name}: manage.py {args[0]}\n{done.stdout}{done.stderr}"
    return done.stdout


def shell(tree: Path, database_url: str, code: str):
    """What `code` prints last, as JSON (log lines may come before it)."""
    printed = manage(tree, database_url, "shell", "-v", "0", "-c", code)
    return json.loads(printed.strip().splitlines()[-1])


def test_a_database_of_the_previous_release_upgrades_keeping_every_task_and_history_row(
    tmp_path, database_url
):
    old = previous_release(tmp_path / "previous")
    manage(old, database_url, "migrate", "--noinput", "-v", "0")
    manage(old, database_url, "loaddata", "demo", "-v", "0")
    manage(old, database_url, "shell", "-v", "0", "-c", WORK)
    manage(old, database_url, "collect_failed")
    before = shell(old, database_url, SNAPSHOT)
    # The work above is in it: the sweep's failure, the claims, the move, the delete.
    assert {"completed", "failed"} <= {row[4] for row in before["tasks"]}
    assert {row[6] for row in before["tasks"]} & {"False", "0"}  # active, as each driver says

    manage(ROOT, database_url, "migrate", "--noinput", "-v", "0")

    after = shell(ROOT, database_url, SNAPSHOT)
    assert after == before
    read = shell(ROOT, database_url, READ)
    assert (read["tasks"], read["history"]) == (len(before["tasks"]), len(before["history"]))
    assert {"status_change", "assignee_change"} <= set(read["actions"])
    # This release's sweep runs on it, and nothing is left to migrate.
    manage(ROOT, database_url, "collect_failed")
    manage(ROOT, database_url, "migrate", "--check")
