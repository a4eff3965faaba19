"""`taskmgmt-worker` (or `python -m taskmgmt_worker`): a worker node from the command line."""

import argparse
import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from taskmgmt_worker.client import Api, LoginRefused, log
from taskmgmt_worker.locks import TaskLocks, default_directory
from taskmgmt_worker.worker import Worker, sleep_work


class BadWorkSpec(Exception):
    """`--work` names no function: a usage error, not a traceback."""


def load_work(spec: str | None, work_seconds: float, progress_every: float):
    """The work function named `module:function`, or the default sleep."""
    if not spec:
        return sleep_work(work_seconds, progress_every)
    # As `python -m` would: a module in the current folder can be named.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module, _, function = spec.partition(":")
    if not module or not function:
        # Else `--work myjobs` failed deep in getattr: "module has no attribute ''".
        raise BadWorkSpec(f"--work {spec}: name it as module:function, e.g. myjobs:run")
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name not in (module, module.partition(".")[0]):
            raise  # the module's own import of something missing: its traceback says where
        raise BadWorkSpec(f"--work {spec}: {error}") from error
    work = getattr(imported, function, None)
    if not callable(work):
        raise BadWorkSpec(f"--work {spec}: module {module!r} has no function {function!r}")
    return work


def run_worker(
    work,
    *,
    server: str,
    email: str,
    password: str,
    idle_seconds: float = 2.0,
    max_tasks: int | None = None,
    keep_waiting_when_drained: bool = False,
    lock_dir: str | None = None,
) -> int:
    """Run a worker until SIGTERM or Ctrl-C (in the main thread) or `max_tasks`; its exit status.

    SIGTERM or Ctrl-C: finish and report the task at hand, then return 0; a second one
    drops it (it stays in progress for a later run, or for failover). A drain of the
    node (a heartbeat answer with a `drainDeadline`) does the same as the first signal,
    unless `keep_waiting_when_drained`. `lock_dir`: the folder where the node's
    processes on this machine lock the tasks they work on (taskmgmt_worker.locks).
    """
    api = Api(server, email, password, threading.Event())
    try:
        locks = TaskLocks(Path(lock_dir) if lock_dir else default_directory(api.server, email))
    except OSError as error:
        log("lock_dir_unusable", error=str(error))
        return 2
    worker = Worker(
        api,
        work,
        idle_seconds=idle_seconds,
        max_tasks=max_tasks,
        keep_waiting_when_drained=keep_waiting_when_drained,
        locks=locks,
    )

    def on_signal(number, frame):
        log("stopping", signal=signal.Signals(number).name, now=worker.signal_seen.is_set())
        worker.signalled()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    log("started", server=api.server, email=email)
    try:
        worker.run()
    except LoginRefused as error:
        log("login_refused", error=str(error))
        return 2
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="taskmgmt-worker",
        description="A taskmgmt worker node: claim a task, work on it, report, repeat.",
    )
    env = os.environ.get
    parser.add_argument(
        "--server",
        default=env("TASKMGMT_URL", "http://127.0.0.1:8000"),
        help="the server's URL, or TASKMGMT_URL (default http://127.0.0.1:8000)",
    )
    parser.add_argument("--email", default=env("TASKMGMT_EMAIL"), help="or TASKMGMT_EMAIL")
    parser.add_argument(
        "--password", default=env("TASKMGMT_PASSWORD"), help="or TASKMGMT_PASSWORD (safer)"
    )
    parser.add_argument(
        "--work",
        default=env("TASKMGMT_WORK"),
        help="module:function doing a task's work, called as function(task, context); "
        "or TASKMGMT_WORK (default: sleep --work-seconds)",
    )
    # The environment's numbers as string defaults: argparse reads them with `type` too, so
    # a bad one is a usage error naming the option, not a ValueError's traceback.
    parser.add_argument(
        "--work-seconds", type=float, default=env("TASKMGMT_WORK_SECONDS", "2"),
        help="how long the default work sleeps per task, or TASKMGMT_WORK_SECONDS (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--progress-seconds", type=float, default=env("TASKMGMT_PROGRESS_SECONDS", "1"),
        help="how often the default work reports progress and a checkpoint, or "
        "TASKMGMT_PROGRESS_SECONDS (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--idle-seconds", type=float, default=env("TASKMGMT_IDLE_SECONDS", "2"),
        help="pause before claiming again when there is nothing to claim, or "
        "TASKMGMT_IDLE_SECONDS (default 2)",
    )  # fmt: skip
    parser.add_argument("--max-tasks", type=int, default=None, help="exit after this many")
    parser.add_argument(
        "--keep-waiting-when-drained",
        action="store_true",
        help="when the node is drained, stay and wait to be uncordoned instead of exiting",
    )
    parser.add_argument(
        "--lock-dir",
        default=env("TASKMGMT_LOCK_DIR"),
        help="folder shared by the node's processes on this machine, where each locks the "
        "task it works on, or TASKMGMT_LOCK_DIR (default: one per server and account in the "
        "temporary directory)",
    )
    args = parser.parse_args(argv)
    # Else a server named without its scheme (`127.0.0.1:8000`) was retried for ever,
    # each try a lost connection to urllib ("unknown url type").
    server = urlsplit(args.server)
    if server.scheme not in ("http", "https") or not server.netloc:
        parser.error(f"--server {args.server}: name it as a URL, e.g. http://127.0.0.1:8000")
    if not args.email or not args.password:
        parser.error("--email and --password (or TASKMGMT_EMAIL, TASKMGMT_PASSWORD) are needed")
    try:
        work = load_work(args.work, args.work_seconds, args.progress_seconds)
    except BadWorkSpec as error:
        parser.error(str(error))
    return run_worker(
        work,
        server=args.server,
        email=args.email,
        password=args.password,
        idle_seconds=args.idle_seconds,
        max_tasks=args.max_tasks,
        keep_waiting_when_drained=args.keep_waiting_when_drained,
        lock_dir=args.lock_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
