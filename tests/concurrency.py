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
