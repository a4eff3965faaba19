"""The machine's shared Redis (127.0.0.1:6379), for tests that count across processes,
and the CACHES that point Django at a Redis."""

import os
import socket
from contextlib import contextmanager

import pytest
import redis


@contextmanager
def redis_database(number: int):
    """Database `number` of the shared Redis, emptied before and after: yields its URL.

    Skipped where no Redis runs, but never in CI, which starts one (.ci/run).
    """
    server = redis.Redis(host="127.0.0.1", port=6379, db=number)
    try:
        server.ping()
    except redis.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail("Redis is not running on 127.0.0.1:6379; .ci/run starts it")
        pytest.skip("Redis is not running on 127.0.0.1:6379 (CI runs this test)")
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
