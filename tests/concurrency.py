"""Requests sent at the same instant, for the race tests: each on its own thread with
its own API client and database connection, released together by a barrier."""

import threading

from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken


def at_once(user, sends: list) -> list:
    """Call each of `sends` (an APIClient bearing `user`'s token -> a result) on its own
    thread, all at once; their results, in the order of `sends`."""
    token = str(RefreshToken.for_user(user).access_token)
    start = threading.Barrier(len(sends))
    results = [None] * len(sends)

    def run(index, send):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            start.wait()
            results[index] = send(client)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(sends)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class Pause:
    """A call made to stop (`pause_at`) until the other side of a race has acted."""

    def __init__(self):
        self.paused, self.go_on = threading.Event(), threading.Event()
        self.seen = None  # the call's result, or its arguments when paused before it
        self._first = threading.Lock()

    def stop(self, seen, wait: float) -> None:
        if not self._first.acquire(blocking=False):
            return  # the first call only
        self.seen = seen
        self.paused.set()
        self.go_on.wait(timeout=wait)

    def then(self, act):
        """A sender for `at_once`: waits until the call has stopped, calls `act(client)`,
        then lets the call go on; `act`'s result."""

        def send(client):
            self.paused.wait(timeout=5)
            try:
                return act(client)
            finally:
                self.go_on.set()

        return send


def pause_at(monkeypatch, owner, name: str, *, before=False, when=None, wait=2.0) -> Pause:
    """Make `owner.name` (a module's function, or a class's method) stop at its first call
    that `when(*args, **kwargs)` accepts (any, by default): after the call returns, or
    `before` it, until the other side has acted (`Pause.then`) or `wait` seconds have
    passed: once a race is fixed, the other side often waits for the paused call's lock.
    A test asserts `pause.paused.is_set()` afterwards, or its race may not have run."""
    original = getattr(owner, name)
    pause = Pause()

    def paused_call(*args, **kwargs):
        chosen = when is None or when(*args, **kwargs)
        if before and chosen:
            pause.stop(args, wait)
        result = original(*args, **kwargs)
        if not before and chosen:
            pause.stop(result, wait)
        return result

    monkeypatch.setattr(owner, name, paused_call)
    return pause
