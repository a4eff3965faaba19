"""deploy/ holds together with the code: the env file names only settings the code
reads, and among what every host must share, each limit on what a request may hold
(deploy/README.md, What is shared)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / "deploy" / "taskmgmt.env"
# Where the settings are read: Django's settings and gunicorn's.
READERS = [ROOT / "taskmgmt" / "settings.py", ROOT / "gunicorn.conf.py"]
# A line `NAME=value` or a commented-out `# NAME=value`.
VARIABLE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
SHARED_HEADING = "=== Must be the same on every host"

# Hosts that disagree on these would take on one what another refuses (or, for the
# origins, answer a browser's preflight one way here and another way there).
MUST_BE_SHARED = {
    "SECRET_KEY",
    "DATABASE_URL",
    "REPLICA_DATABASE_URL",
    "CACHE_URL",
    "METRICS_TOKEN",
    "MAX_PAGE_SIZE",
    "BULK_MAX_TASKS",
    "BULK_MAX_BODY_BYTES",
    "TASK_PAYLOAD_MAX_BYTES",
    "TASK_RESULT_MAX_BYTES",
    "TASK_CHECKPOINT_MAX_BYTES",
    "DATA_UPLOAD_MAX_MEMORY_SIZE",
    "CORS_ALLOWED_ORIGINS",
    "RATELIMIT_ENABLE",
}


def shared_section() -> str:
    text = ENV_FILE.read_text()
    start = text.index(SHARED_HEADING)
    end = text.index("\n# ===", start)
    return text[start:end]


def test_every_variable_the_env_file_names_is_read_by_the_code():
    code = "\n".join(path.read_text() for path in READERS)
    named = set(VARIABLE.findall(ENV_FILE.read_text()))
    unread = {name for name in named if f'"{name}"' not in code}
    assert named and not unread


def test_every_limit_a_host_enforces_is_among_what_every_host_shares():
    shared = set(VARIABLE.findall(shared_section()))
    assert MUST_BE_SHARED - shared == set()


def unit_settings(name: str) -> dict[str, list[str]]:
    """A systemd unit's `Key=value` lines, each key's values in order."""
    settings = {}
    for line in (ROOT / "deploy" / name).read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.startswith("#"):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_sweep_counts_in_the_metrics_directory_of_its_hosts_gunicorn():
    # Its failures by cause and cancellations were counted in the sweep process's
    # memory and lost: /metrics showed only the failures nodes reported.
    def multiproc_dir(unit: dict) -> str | None:
        variables = dict(value.partition("=")[::2] for value in unit.get("Environment", []))
        return variables.get("PROMETHEUS_MULTIPROC_DIR")

    server, sweep = unit_settings("taskmgmt.service"), unit_settings("taskmgmt-sweep.service")
    directory = multiproc_dir(server)
    assert directory and multiproc_dir(sweep) == directory
    # ProtectSystem=strict leaves /run read-only but for what the unit names; "-": the
    # directory is gone while gunicorn is stopped, and the sweep still starts then.
    writable = [path.removeprefix("-") for path in sweep.get("ReadWritePaths", [])]
    assert any(directory.startswith(path.rstrip("/") + "/") for path in writable), writable
    assert all(path.startswith("-") for path in sweep.get("ReadWritePaths", []))


# The worker machine's unit and env file (deploy/README.md, Worker machines).
WORKER_UNIT, WORKER_ENV = "taskmgmt-worker@.service", ROOT / "deploy" / "taskmgmt-worker.env"
WORKER_CLI = ROOT / "worker" / "taskmgmt_worker" / "cli.py"


def test_every_variable_of_the_worker_env_file_and_unit_is_read_by_the_worker():
    unit = unit_settings(WORKER_UNIT)
    named = set(VARIABLE.findall(WORKER_ENV.read_text()))
    named |= {value.partition("=")[0] for value in unit.get("Environment", [])}
    read = set(re.findall(r'env\("([A-Z_]+)"', WORKER_CLI.read_text())) | {"PYTHONPATH"}
    assert {"TASKMGMT_URL", "TASKMGMT_EMAIL", "TASKMGMT_PASSWORD"} <= named
    assert named - read == set()


def test_the_worker_unit_starts_the_packages_command_and_locks_in_its_state_directory():
    unit = unit_settings(WORKER_UNIT)
    pyproject = (ROOT / "worker" / "pyproject.toml").read_text()
    scripts = re.search(r"\[project\.scripts\]\n(\w[\w-]*) =", pyproject)
    (command,) = unit["ExecStart"]
    assert command.split("/")[-1] == scripts.group(1)
    variables = dict(value.partition("=")[::2] for value in unit["Environment"])
    (state,) = unit["StateDirectory"]
    # Its instances must see one folder, and PrivateTmp gives each its own /tmp.
    assert variables["TASKMGMT_LOCK_DIR"] == f"/var/lib/{state}"
    assert unit["PrivateTmp"] == ["true"]


def test_a_worker_that_ends_by_choice_stays_stopped_and_one_refused_is_not_restarted(tmp_path):
    # Restart=always started a worker whose node was drained again at once (it exits 0
    # to let the machine go down), and one whose login was refused (exit 2) in a loop
    # that spent the account's login limit.
    from taskmgmt_worker import cli

    unit = unit_settings(WORKER_UNIT)
    assert unit["Restart"] == ["on-failure"]  # exit 0 is not a failure to systemd
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    login = ["--server", "http://127.0.0.1:9", "--email", "n@example.com", "--password", "x"]
    refused = cli.main([*login, "--lock-dir", str(not_a_folder / "locks")])
    assert unit["RestartPreventExitStatus"] == [str(refused)]
    assert refused != 0
