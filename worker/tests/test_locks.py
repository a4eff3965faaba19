"""Which of a node's tasks this machine's worker processes are working on (TaskLocks)."""

import subprocess
import sys

import pytest
from taskmgmt_worker.cli import main
from taskmgmt_worker.locks import TaskLocks, default_directory, key_of, server_key

TASK = "0b6f3c1e-3f0a-4a52-9a63-4c1d2b0e7f10"


def test_a_task_one_process_holds_cannot_be_taken_by_another(tmp_path):
    # flock locks belong to an open file: two TaskLocks in one process stand for two.
    mine, theirs = TaskLocks(tmp_path), TaskLocks(tmp_path)

    assert mine.take(TASK)
    assert not theirs.take(TASK)
    assert theirs.take("another-task")


def test_a_released_task_can_be_taken_again_and_leaves_no_file(tmp_path):
    mine, theirs = TaskLocks(tmp_path), TaskLocks(tmp_path)
    assert mine.take(TASK)

    mine.release(TASK)

    assert list(tmp_path.iterdir()) == []
    assert theirs.take(TASK)
    assert not mine.take(TASK)


def test_the_task_of_a_killed_process_can_be_taken(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, pathlib\n"
            "from taskmgmt_worker.locks import TaskLocks\n"
            f"assert TaskLocks(pathlib.Path(sys.argv[1])).take({TASK!r})\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        assert not TaskLocks(tmp_path).take(TASK)
    finally:
        holder.kill()
        holder.wait(timeout=10)

    assert TaskLocks(tmp_path).take(TASK)


def test_an_id_that_is_not_a_plain_name_stays_inside_the_folder(tmp_path):
    locks = TaskLocks(tmp_path / "node")

    assert locks.take("../../etc/passwd")
    assert [path.parent for path in (tmp_path / "node").iterdir()] == [tmp_path / "node"]
    locks.release("../../etc/passwd")
    assert list((tmp_path / "node").iterdir()) == []


def test_each_server_and_node_account_has_a_folder_of_its_own():
    one = default_directory("http://a:8000", "node1@example.com")

    assert one == default_directory("http://a:8000", "node1@example.com")
    assert one != default_directory("http://a:8000", "node2@example.com")
    assert one != default_directory("http://b:8000", "node1@example.com")


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("HTTP://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("Http://127.0.0.1:8000//", "http://127.0.0.1:8000"),
        ("http://Tasks.Example.COM:8000", "http://tasks.example.com:8000"),
        ("http://tasks.example.com:80", "http://tasks.example.com"),
        ("http://tasks.example.com:/", "http://tasks.example.com"),
        ("HTTPS://tasks.example.com:443/", "https://tasks.example.com"),
        ("https://tasks.example.com:0443", "https://tasks.example.com"),
        ("http://[::1]:8000/", "http://[::1]:8000"),
        ("http://tasks.example.com/taskmgmt/", "http://tasks.example.com/taskmgmt"),
    ],
)
def test_one_server_spelled_two_ways_has_one_folder(spelling, canonical):
    """Two processes of one node on one machine must see each other's locks however
    each names the server: the scheme and host in any case, the default port or none,
    a trailing slash or none."""
    assert server_key(spelling) == server_key(canonical) == canonical
    assert default_directory(spelling, "node1@example.com") == default_directory(
        canonical, "node1@example.com"
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # Names are not resolved: behind a proxy, two names may be two servers.
        ("http://localhost:8000", "http://127.0.0.1:8000"),
        ("http://tasks.example.com", "https://tasks.example.com"),
        ("http://tasks.example.com", "http://tasks.example.com:8080"),
        ("https://tasks.example.com:80", "http://tasks.example.com:80"),
        ("http://tasks.example.com/a", "http://tasks.example.com/b"),
        ("http://tasks.example.com/API", "http://tasks.example.com/api"),  # paths keep case
    ],
)
def test_two_servers_keep_two_folders(one, other):
    assert default_directory(one, "node1@example.com") != default_directory(
        other, "node1@example.com"
    )


def test_a_port_that_is_no_port_leaves_the_url_as_it_was_given():
    # The worker cannot reach it anyway; the key must not fail before it says so.
    assert server_key("http://127.0.0.1:99999") == "http://127.0.0.1:99999"


def test_the_command_line_makes_one_folder_for_two_spellings_of_one_server(tmp_path, monkeypatch):
    monkeypatch.setattr("taskmgmt_worker.cli.signal.signal", lambda *args: None)
    monkeypatch.setattr("taskmgmt_worker.locks.tempfile.gettempdir", lambda: str(tmp_path))
    account = ["--email", "n@example.com", "--password", "x", "--max-tasks", "0"]

    for server in ("http://127.0.0.1:9", "HTTP://127.0.0.1:9/"):
        assert main(["--server", server, *account]) == 0

    (user_folder,) = tmp_path.iterdir()
    assert len(list(user_folder.iterdir())) == 1


def test_a_folder_another_user_made_is_refused(tmp_path, monkeypatch):
    # Made first in a shared /tmp by someone else, it could hold this node's locks.
    owner = tmp_path.stat().st_uid
    monkeypatch.setattr("taskmgmt_worker.locks.os.getuid", lambda: owner + 1)

    with pytest.raises(PermissionError, match="belongs to another user"):
        TaskLocks(tmp_path)


def test_the_command_line_names_the_folder_and_refuses_one_it_cannot_use(
    tmp_path, capsys, monkeypatch
):
    # --max-tasks 0: the worker stops before its first claim (no server is needed); its
    # SIGTERM handler is not installed into the test run's own process.
    monkeypatch.setattr("taskmgmt_worker.cli.signal.signal", lambda *args: None)
    common = ["--server", "http://127.0.0.1:9", "--email", "n@example.com", "--password", "x"]

    assert main([*common, "--max-tasks", "0", "--lock-dir", str(tmp_path / "locks")]) == 0
    assert (tmp_path / "locks").is_dir()

    (tmp_path / "a-file").write_text("")
    assert main([*common, "--lock-dir", str(tmp_path / "a-file")]) == 2
    assert '"event": "lock_dir_unusable"' in capsys.readouterr().out


def test_a_new_attempt_of_a_task_is_not_held_by_the_process_on_the_old_one(tmp_path):
    # A process frozen on attempt 1 keeps its lock; the task given back to its node as
    # attempt 2 is new work for the process that claimed it (tests/fleet/test_fencing.py).
    frozen, claimer = TaskLocks(tmp_path), TaskLocks(tmp_path)
    assert frozen.take(key_of({"id": TASK, "attempt": 1}))

    assert claimer.take(key_of({"id": TASK, "attempt": 2}))
    assert not claimer.take(key_of({"id": TASK, "attempt": 1}))
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{TASK}.1", f"{TASK}.2"]


def test_a_server_without_attempts_locks_by_the_task_alone():
    assert key_of({"id": TASK, "attempts": 3}) == f"{TASK}.3"
    assert key_of({"id": TASK}) == TASK


def test_a_key_that_could_name_another_folder_is_hashed(tmp_path):
    locks = TaskLocks(tmp_path / "node")

    for key in ("..", ".", "a/b", f"{TASK}.1/.."):
        assert locks.take(key)
        locks.release(key)
    assert list(tmp_path.iterdir()) == [tmp_path / "node"]
