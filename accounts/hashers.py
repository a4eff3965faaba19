"""Django's Argon2id, with a bound on how many hashes one process runs at once,
and on how long a hash may wait for its turn.

Each hash holds 100 MiB (Django's memory_cost) for a fifth of a second of CPU.
A gthread worker serves several requests at once, so a burst of logins held
threads x 100 MiB per worker and was not served any faster: the hashes share
the same core (figures in docs/performance.md). Waiting for a slot keeps
memory at PASSWORD_HASH_CONCURRENCY x 100 MiB per worker, for the same logins
per second. Slots are handed out first come, first served, and a hash that would
wait longer than PASSWORD_HASH_WAIT_SECONDS is refused at once (HashQueueFull):
under a burst, a login gets an answer it can retry instead of a long queue.
"""

import math
import threading
import time
from collections import deque

from django.conf import settings
from django.contrib.auth import hashers
from django.core.signals import setting_changed
from django.dispatch import receiver


class HashQueueFull(Exception):
    """No hash slot within PASSWORD_HASH_WAIT_SECONDS; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"password hashing is saturated; retry after {retry_after} s")
        self.retry_after = retry_after


class HashSlots:
    """`size` slots, given in arrival order: a later hash never overtakes a waiting one,
    so no login starves behind a stream of others (threading.Semaphore lets them barge)."""

    def __init__(self, size: int, max_wait: float):
        self.max_wait = max_wait
        self._free = size
        self._size = size
        self._waiting: deque[threading.Lock] = deque()
        self._lock = threading.Lock()
        # Seconds one hash takes here, smoothed; 0 until the first one is measured.
        self._hash_seconds = 0.0

    def expected_wait(self) -> float:
        """How long a hash arriving now would wait: the queue ahead of it, shared by the slots."""
        return (len(self._waiting) / self._size + 1) * self._hash_seconds

    def acquire(self) -> None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            wait = self.expected_wait()
            if wait > self.max_wait:
                raise HashQueueFull(retry_after=max(1, math.ceil(wait)))
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        if turn.acquire(timeout=self.max_wait):
            return
        with self._lock:
            if turn in self._waiting:
                self._waiting.remove(turn)
                raise HashQueueFull(retry_after=max(1, math.ceil(self.max_wait)))
        # release() handed us the slot just as the wait ran out: it is ours.

    def release(self, seconds: float) -> None:
        with self._lock:
            self._hash_seconds = (
                seconds if not self._hash_seconds else (0.8 * self._hash_seconds + 0.2 * seconds)
            )
            if self._waiting:
                # The slot passes straight to the longest waiter.
                self._waiting.popleft().release()
            else:
                self._free += 1

    def run(self, work, *args):
        self.acquire()
        started = time.monotonic()
        try:
            return work(*args)
        finally:
            self.release(time.monotonic() - started)


class Argon2PasswordHasher(hashers.Argon2PasswordHasher):
    """Same algorithm name and parameters: stored hashes stay valid both ways."""

    _slots = None
    _slots_lock = threading.Lock()

    @classmethod
    def slots(cls) -> HashSlots:
        with cls._slots_lock:
            if cls._slots is None:
                cls._slots = HashSlots(
                    settings.PASSWORD_HASH_CONCURRENCY, settings.PASSWORD_HASH_WAIT_SECONDS
                )
            return cls._slots

    def encode(self, password, salt):
        return self.slots().run(super().encode, password, salt)

    def verify(self, password, encoded):
        return self.slots().run(super().verify, password, encoded)


@receiver(setting_changed)
def _resize_slots(*, setting, **kwargs):
    if setting in ("PASSWORD_HASH_CONCURRENCY", "PASSWORD_HASH_WAIT_SECONDS"):
        Argon2PasswordHasher._slots = None
