"""The machine's shared Redis (127.0.0.1:6379), for tests that count across processes,
and the CACHES that point Django at a Redis."""

import fcntl
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis


@contextmanager
def redis_database(number: int):
    """Database `number` of the shared Redis, emptied before and after: yields its URL.

    Held alone: a test in another process (pytest -n, a second run) that wants the same
    database waits for it, instead of each emptying the other's. Each module has its own
    number (the benchmarks use 5 and 15). Skipped where no Redis runs, but never in CI,
    which starts one (.ci/run).
    """
    server = redis.Redis(host="127.0.0.1", port=6379, db=number)
    try:
        server.ping()
    except redis.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail("Redis is not running on 127.0.0.1:6379; .ci/run starts it")
        pytest.skip("Redis is not running on 127.0.0.1:6379 (CI runs this test)")
    lock_path = Path(tempfile.gettempdir()) / f"taskmgmt-tests-redis-db-{number}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        server.flushdb()
        try:
            yield f"redis://127.0.0.1:6379/{number}"
        finally:
            server.flushdb()


def redis_cache(url: str) -> dict:
    """CACHES naming the Redis at `url`, as production's CACHE_URL does."""
    return {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}}


def unreachable_redis_url() -> str:
    """A Redis URL on a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
