"""Which of a node's tasks the worker processes on this machine are working on.

Several processes may run for one node account, to run several tasks at once. The
server cannot tell them apart, so a process looking for tasks in progress that no
one works on (a claim whose answer was lost, a run that was killed) would take up
another's. Each process holds a lock on a file named after the task's attempt
(`key_of`) from before it starts the work until its report is answered; a process
that dies lets go of its locks with its life, so its task can be taken up again.

`flock` locks, so processes on one machine only (one node account, one machine), and
only where `fcntl` exists (not Windows: there, run one process per node account).
"""

import hashlib
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

# A task id, and its attempt after a dot: a file name as it stands.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9-]{1,64}(\.[0-9]{1,20})?")


def key_of(task: dict) -> str:
    """What a process locks: the task's attempt, not the task. A process frozen on
    attempt 1 still holds its lock when the task comes back to the node as attempt 2,
    which is new work for whichever process claims it."""
    attempt = task.get("attempt", task.get("attempts"))
    return task["id"] if attempt is None else f"{task['id']}.{attempt}"


DEFAULT_PORTS = {"http": 80, "https": 443}


def server_key(server: str) -> str:
    """One text for every spelling of one server's URL, so the node's processes on this
    machine share one folder however each names it: scheme and host in lower case (they
    compare so), the scheme's default port left out, no trailing slash. Names are not
    resolved: `localhost` and `127.0.0.1` may be two servers behind a proxy."""
    parts = urlsplit(server)
    try:
        port = parts.port
    except ValueError:  # not a port: nothing is reached there, so nothing to share
        return server
    host = parts.hostname or ""  # lower case, without user info or an IPv6 address's []
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), parts.query, ""))


def default_directory(server: str, email: str) -> Path | None:
    """A folder per server and node account, in this user's temporary directory
    (None where there are no `flock` locks)."""
    if not fcntl:
        return None
    account = hashlib.sha256(f"{server_key(server)}\n{email}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"taskmgmt-worker-{os.getuid()}" / account


class TaskLocks:
    """`take(key_of(task))` before working on a task, `release` it once its report is sent."""

    def __init__(self, directory: Path | None):
        self.directory = directory if fcntl else None
        if self.directory:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Another user's folder (made first in a shared /tmp) could hold our tasks' locks.
            if self.directory.stat().st_uid != os.getuid():
                raise PermissionError(f"{self.directory} belongs to another user")
        self.held: dict[str, int] = {}  # key -> the locked file's descriptor

    def take(self, key: str) -> bool:
        """True if no other process here holds `key`, which is now this one's."""
        if not self.directory:
            return True
        path = self._path(key)
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                return False
            # Its last holder may have removed the file between our open and our lock:
            # then we hold a file no one else will look at, and must open the new one.
            try:
                current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                current = False
            if current:
                self.held[key] = descriptor
                return True
            os.close(descriptor)

    def release(self, key: str) -> None:
        descriptor = self.held.pop(key, None)
        if descriptor is None:
            return
        # Removed while still locked, so the folder does not fill with one file per task.
        self._path(key).unlink(missing_ok=True)
        os.close(descriptor)

    def _path(self, key: str) -> Path:
        name = key if _PLAIN_KEY.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()
        return self.directory / name
