"""The tests' Redis: a redis-server of their own (own port, own directory, no
persistence), never the machine's, and the CACHES that point Django at a Redis.

Each test process (each pytest-xdist worker) starts one at the first test that
asks for it and stops it when it exits; a test that stops and starts Redis
itself makes its own `PrivateRedis`.
"""

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.ports import free_port


class PrivateRedis:
    """A throwaway redis-server on its own port, which the tests may stop at will."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.workdir), "--save", "", "--appendonly", "no",
            ],
            stdout=(self.workdir / "server.log").open("a"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not answer; see {self.workdir}/server.log")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def answers(self) -> bool:
        try:
            return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping()
        except redis.ConnectionError:
            return False

    def url(self, number: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{number}"


_tests_server: PrivateRedis | None = None


def tests_redis() -> PrivateRedis:
    """This test process's redis-server, started on first use."""
    global _tests_server
    if _tests_server is None:
        if not shutil.which("redis-server"):
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed; .ci/run installs it")
            pytest.skip("needs the Redis server binary (apt-get install redis-server)")
        workdir = Path(tempfile.mkdtemp(prefix="taskmgmt-tests-redis-"))
        server = PrivateRedis(workdir)
        server.start()
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        atexit.register(server.stop)  # runs first: last registered, first called
        _tests_server = server
    return _tests_server


@contextmanager
def redis_database(number: int):
    """Database `number` of the tests' redis-server, emptied before and after: yields
    its URL. Each module keeps its own number, so none sees another's keys."""
    server = tests_redis()
    client = redis.Redis(host="127.0.0.1", port=server.port, db=number)
    client.flushdb()
    try:
        yield server.url(number)
    finally:
        client.flushdb()


def redis_cache(url: str) -> dict:
    """CACHES naming the Redis at `url`, as production's CACHE_URL does."""
    return {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}}


def unreachable_redis_url() -> str:
    """A Redis URL on a port nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"
