"""Helpers for the tests that race real transactions on MariaDB (row locks, SKIP LOCKED)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction

WAIT = 10  # seconds; a test that needs longer has deadlocked

# The marks of a module whose tests race real transactions through row locks.
ROW_LOCK_TESTS = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.mysql,
    pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="needs row locks and SKIP LOCKED: SQLite runs one writer at a time",
    ),
]


def row_lock_test(test):
    """`ROW_LOCK_TESTS`' marks on one test, in a module whose other tests need none."""
    for mark in reversed(ROW_LOCK_TESTS):
        test = mark(test)
    return test


def own_connection(work):
    """`work` as a thread runs it: on its own connection, closed when done."""

    def run():
        try:
            return work()
        finally:
            connection.close()

    return run


def wait_until_blocked(statement: str, *, answers: list | None = None) -> None:
    """Until another connection sits in a statement matching the LIKE pattern `statement`:
    the lock's holder is idle, so that statement is waiting for its lock.

    `answers`, a list the racing request appends its answer to, fails the test at once
    when the request ended without waiting.
    """
    query = """
        SELECT COUNT(*) FROM information_schema.processlist
        WHERE db = DATABASE() AND id <> CONNECTION_ID() AND command = 'Query'
        AND info LIKE %s"""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(query, [statement])
            if cursor.fetchone()[0]:
                return
        if answers:
            pytest.fail(f"the request ended without waiting for the lock: {answers[0]!r}")
        time.sleep(0.02)
    pytest.fail(f"no connection ever waited in {statement}")


def holding(work):
    """Run `work` in a thread inside a transaction held open until released.

    Returns (the work for a thread, its held event, its release event)."""
    held, release = threading.Event(), threading.Event()

    def run():
        with transaction.atomic():
            result = work()
            held.set()
            release.wait(WAIT)
        return result

    return run, held, release


def while_held(work, action):
    """`action()` while `work` runs in another thread, on its own connection, inside a
    transaction held open until `action` returns; `timed(action)`'s (result, seconds)
    and then `work`'s result."""
    run, held, release = holding(work)
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(own_connection(run))
        assert held.wait(WAIT)
        try:
            result, took = timed(action)
        finally:
            release.set()
        return result, took, holder.result(timeout=WAIT)


def timed(work):
    """`work()`'s result and the seconds it took."""
    started = time.monotonic()
    result = work()
    return result, time.monotonic() - started
