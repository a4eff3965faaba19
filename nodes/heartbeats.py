"""Heartbeats kept in Redis and written to `last_seen` in batches (README, Nodes).

One UPDATE and commit per beat was the heartbeat's limit: with the write left
out, the same server answered a third more beats (bench/load). So where the
cache is Redis (django-redis, as in production), a beat is one Redis command:
the node's stamp goes into a hash of pending beats, and the first beat after
NODE_HEARTBEAT_FLUSH_SECONDS moves every pending stamp to the database,
a hundred rows per UPDATE.

Whatever reads liveness calls `flush()` first (the nodes API, the admin, the
dashboard, /metrics and the failover sweep), so none of them is ever behind a
beat the server has answered. A stamp never moves back: flushes may commit in
either order. Nothing is held in a process's memory, so a server restart
loses no beat; a Redis restart loses the stamps not yet flushed, and the
database then holds each node's beat before those, which is at most one
interval older: such a node can look stale until its next beat, never down.
With Redis unreachable, a beat is written straight to the database.
Without Redis (the per-process cache of a development server), every beat
is written at once: another process, such as the sweep, could not see it.
"""

import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.core.cache import caches
from django_redis.cache import RedisCache
from redis.commands.core import Script

from accounts.models import User
from taskmgmt.sql import update_rows, update_to_later
from taskmgmt.throttling import CACHE_ERRORS

logger = logging.getLogger("taskmgmt.heartbeats")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

# KEYS: the pending beats (a hash: node id -> stamp, microseconds since the epoch),
# the flush lock. ARGV: the lock's milliseconds (0: no lock), then node id, stamp
# pairs. A stamp is kept when it is later than the one pending; returns 1 when
# the caller took the lock and so is the one to flush.
_MERGE = Script(
    None,
    b"""
for i = 2, #ARGV, 2 do
  local pending = redis.call('HGET', KEYS[1], ARGV[i])
  if not pending or tonumber(pending) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
if ARGV[1] == '0' then return 0 end
return redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) and 1 or 0
""",
)
# _MERGE for one beat, with a rate count (taskmgmt.throttling) in the same round trip.
# KEYS: the pending beats, the flush lock, the count. ARGV: the lock's milliseconds,
# the count's seconds to live from its first request, node id, stamp. Returns
# {1 when the caller is the one to flush else 0, the count}. The count is
# django-ratelimit's as counted elsewhere (a plain integer: django-redis's `incr`
# and `add` read and write it alike).
_MERGE_COUNTED = Script(
    None,
    b"""
local count = redis.call('INCR', KEYS[3])
if count == 1 then redis.call('EXPIRE', KEYS[3], ARGV[2]) end
local pending = redis.call('HGET', KEYS[1], ARGV[3])
if not pending or tonumber(pending) < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
end
local flush = 0
if ARGV[1] ~= '0' and redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then flush = 1 end
return {flush, count}
""",
)
# KEYS: the pending beats. Takes them all: each is flushed by one caller only.
_TAKE = Script(
    None,
    b"""
local pending = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return pending
""",
)


def coalesced() -> bool:
    """Whether beats wait in Redis for a flush: only where the cache is shared."""
    return isinstance(caches["default"], RedisCache)


def record(*, node_id: UUID, now: datetime) -> None:
    """Stamp `node_id` as seen at `now` (the server's clock): pending in Redis, and
    flushed with every other pending beat when the flush interval has passed."""
    if not coalesced():
        update_rows(User, {"last_seen": now}, id=node_id)
        return
    lock_ms = round(settings.NODE_HEARTBEAT_FLUSH_SECONDS * 1000)
    try:
        flush_now = _merge(lock_ms, {str(node_id): now})
    except CACHE_ERRORS as error:
        _write_now(node_id, now, error)
        return
    if flush_now:
        flush()


def record_counted(*, node_id: UUID, now: datetime, count_key: str, timeout: int) -> int | None:
    """`record`, and the rate count `count_key` (a cache key, kept `timeout` seconds)
    incremented in the same Redis round trip: the count, or None when Redis could not
    be reached (the beat is then written to the database, and nothing is counted).
    Only where beats are coalesced (`coalesced()`)."""
    lock_ms = round(settings.NODE_HEARTBEAT_FLUSH_SECONDS * 1000)
    keys = [_key("pending"), _key("flush"), caches["default"].make_key(count_key)]
    try:
        flush_now, count = _MERGE_COUNTED(
            keys=keys, args=[lock_ms, timeout, str(node_id), _stamp(now)], client=_client()
        )
    except CACHE_ERRORS as error:
        _write_now(node_id, now, error)
        return None
    if flush_now:
        flush()
    return count


def _write_now(node_id: UUID, now: datetime, error: Exception) -> None:
    """A beat Redis could not take, written straight to the database."""
    logger.warning(
        "heartbeat written to the database: the cache is unavailable",
        extra={"event": "heartbeat_cache_unavailable", "error": str(error)},
    )
    update_rows(User, {"last_seen": now}, id=node_id)


def flush() -> int:
    """Write every pending beat to `last_seen`: call it before reading liveness.

    A beat whose node's row another transaction holds (never waited for), or a
    database error, goes back for the next flush; a deleted node's is dropped.
    Returns how many beats it took and did not put back.
    """
    if not coalesced():
        return 0
    try:
        taken = _TAKE(keys=[_key("pending")], client=_client())
    except CACHE_ERRORS as error:
        logger.warning(
            "pending heartbeats not flushed: the cache is unavailable",
            extra={"event": "heartbeat_cache_unavailable", "error": str(error)},
        )
        return 0
    beats = {
        UUID(node.decode()): EPOCH + int(stamp) * MICROSECOND
        for node, stamp in zip(taken[::2], taken[1::2], strict=True)
    }
    if not beats:
        return 0
    try:
        held = update_to_later(User, "last_seen", beats)
    except Exception:
        _merge(0, {str(node): seen for node, seen in beats.items()})
        raise
    if held:
        # Rows another transaction holds this instant (a sweep batch): the next flush's.
        _merge(0, {str(node): beats[node] for node in held})
    return len(beats) - len(held)


def pending(node_ids) -> dict[UUID, datetime]:
    """The beats of these nodes waiting in Redis (none where beats are not coalesced):
    the failover's last look, under its locks, for a beat answered since its flush."""
    ids = [str(node) for node in node_ids]
    if not coalesced() or not ids:
        return {}
    try:
        stamps = _client().hmget(_key("pending"), ids)
    except CACHE_ERRORS as error:
        # Beats go straight to the database while Redis is down; older ones are lost anyway.
        logger.warning(
            "pending heartbeats not read: the cache is unavailable",
            extra={"event": "heartbeat_cache_unavailable", "error": str(error)},
        )
        return {}
    return {
        UUID(node): EPOCH + int(stamp) * MICROSECOND
        for node, stamp in zip(ids, stamps, strict=True)
        if stamp is not None
    }


def _merge(lock_ms: int, beats: dict[str, datetime]) -> int:
    stamps = [value for node, seen in beats.items() for value in (node, _stamp(seen))]
    keys = [_key("pending"), _key("flush")]
    return _MERGE(keys=keys, args=[lock_ms, *stamps], client=_client())


def _stamp(seen: datetime) -> int:
    return (seen - EPOCH) // MICROSECOND


def _key(name: str) -> str:
    return caches["default"].make_key(f"heartbeats:{name}")


def _client():
    return caches["default"].client.get_client(write=True)
