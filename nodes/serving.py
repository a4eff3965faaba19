"""The app servers record that they are serving, so liveness counts a node's
silence only while the API was up and answering (docs/nodes-and-workers.md).

Each process writes the one ServingRecord row at most once a second, after
answering a request: a conditional UPDATE that starts a new serving stretch
when the last answer is older than `serving_gap()` (the API, or the database,
was out in between). The sweep reads the row wherever it runs (cron, another
host), and the record lives in the database, so a Redis outage changes nothing.
"""

import logging
import threading
import time
from datetime import datetime

from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from nodes.models import ServingRecord, serving_gap

logger = logging.getLogger("taskmgmt.serving")

RECORD_EVERY_SECONDS = 1.0

# When this process may record next (time.monotonic()); shared by its threads.
_next_record = 0.0
_lock = threading.Lock()


def record_serving(*, now: datetime) -> None:
    """Stamp the API as serving at `now`; after a gap, a new stretch begins at `now`."""
    after_gap = Q(last_serving__lt=now - serving_gap())
    # MariaDB assigns left to right, each seeing the columns already set: last_serving last.
    updated = ServingRecord.objects.filter(pk=ServingRecord.ROW, last_serving__lt=now).update(
        outage_began=Case(When(after_gap, then=F("last_serving")), default=F("outage_began")),
        serving_since=Case(When(after_gap, then=Value(now)), default=F("serving_since")),
        last_serving=now,
    )
    if not updated:  # the first record ever, or another host's clock is ahead
        ServingRecord.objects.get_or_create(
            pk=ServingRecord.ROW, defaults={"serving_since": now, "last_serving": now}
        )


def _due() -> bool:
    global _next_record
    now = time.monotonic()
    with _lock:
        if now < _next_record:
            return False
        _next_record = now + RECORD_EVERY_SECONDS
        return True


class ServingMiddleware:
    """Records, at most once a second per process, that a request was answered."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # /metrics answered without the database (taskmgmt.metrics) is no sign the API serves.
        if not getattr(response, "without_database", False):
            note_answer(response.status_code)
        return response


def note_answer(status: int) -> None:
    """Record, if due, that this process answered a request with `status`."""
    # A 5xx (the database down, a bug) is not the API answering its nodes.
    if status < 500 and _due():
        try:
            record_serving(now=timezone.now())
        except Exception as error:  # the answer is made: never lose it for the record
            logger.warning(
                "serving not recorded",
                extra={"event": "serving_not_recorded", "error": repr(error)},
            )
