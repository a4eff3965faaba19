"""The heavy reads from a replica, when REPLICA_DATABASE_URL names one
(docs/operations.md, The replica).

The dashboard, the node page, /metrics and the admin's list counts read through
`on_replica`; everything that writes or must read its own writes (the API,
claims, heartbeats, the sweep, sign-in) uses the primary as before. Explicit, not
a global router: only the reads named here move, so nothing that must see its
own write can land on a replica by accident.

A replica that fails a read is skipped by this process for `SKIP_SECONDS`, and
the read is answered from the primary: a lagging replica shows figures a little
older, a lost one costs at most one connect timeout, never a 500.
"""

import logging
import time
from functools import cached_property

from django.conf import settings
from django.core.paginator import Paginator
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

logger = logging.getLogger(__name__)

# How long a process reads from the primary after its replica failed one read:
# long enough that a lost replica costs one connect timeout now and then, not per page.
SKIP_SECONDS = 10.0

_skip_until = 0.0  # per process: time.monotonic() before which the replica is skipped


def read_alias() -> str:
    """The alias the heavy reads use now: the replica when there is one and it has
    not just failed, else the primary."""
    alias = settings.READ_REPLICA_ALIAS
    if alias is None or time.monotonic() < _skip_until:
        return DEFAULT_DB_ALIAS
    return alias


def on_replica(read):
    """`read(alias)`'s result, read on the replica, or on the primary when there is
    none or it fails. `read` must finish its queries (a list, not a lazy queryset)."""
    global _skip_until
    alias = read_alias()
    if alias == DEFAULT_DB_ALIAS:
        return read(alias)
    try:
        return read(alias)
    except DatabaseError as error:
        # Unreachable, restarting, or missing a table the primary has: the same read
        # on the primary either answers or raises the real error.
        _skip_until = time.monotonic() + SKIP_SECONDS
        logger.warning(
            "replica read failed; reading from the primary for %s s",
            SKIP_SECONDS,
            extra={"alias": alias, "error": str(error)},
        )
        connections[alias].close()
        return read(DEFAULT_DB_ALIAS)


def replica_recovered() -> None:
    """Read from the replica again at once (tests; after an operator fixed it, a
    process comes back on its own after SKIP_SECONDS)."""
    global _skip_until
    _skip_until = 0.0


class ReplicaCountPaginator(Paginator):
    """The admin's list pages: the page's rows from the primary (an admin's action
    shows at once), the count, a scan of the filtered table, from the replica."""

    @cached_property
    def count(self):
        return on_replica(lambda alias: self.object_list.using(alias).count())
