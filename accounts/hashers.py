"""Django's Argon2id, with a bound on how many hashes one process runs at once.

Each hash holds 100 MiB (Django's memory_cost) for a fifth of a second of CPU.
A gthread worker serves several requests at once, so a burst of logins held
threads x 100 MiB per worker (938 MiB over two workers in bench/load) and was
not served any faster: the hashes share the same core. Waiting for a slot keeps
memory at PASSWORD_HASH_CONCURRENCY x 100 MiB per worker, for the same logins
per second.
"""

import threading

from django.conf import settings
from django.contrib.auth import hashers


class Argon2PasswordHasher(hashers.Argon2PasswordHasher):
    """Same algorithm name and parameters: stored hashes stay valid both ways."""

    _slots = None
    _slots_lock = threading.Lock()

    @classmethod
    def slots(cls) -> threading.BoundedSemaphore:
        with cls._slots_lock:
            if cls._slots is None:
                cls._slots = threading.BoundedSemaphore(settings.PASSWORD_HASH_CONCURRENCY)
            return cls._slots

    def encode(self, password, salt):
        with self.slots():
            return super().encode(password, salt)

    def verify(self, password, encoded):
        with self.slots():
            return super().verify(password, encoded)
