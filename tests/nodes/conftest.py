"""Heartbeats through the production cache (Redis), for the heartbeat test modules."""

import pytest

from tests.shared_redis import redis_cache, redis_database

REDIS_DB = 7


@pytest.fixture
def shared_redis():
    with redis_database(REDIS_DB) as url:
        yield url


@pytest.fixture
def coalescing(settings, shared_redis):
    """The production cache (Redis), with a flush interval no test outlasts."""
    settings.CACHES = redis_cache(shared_redis)
    settings.NODE_HEARTBEAT_FLUSH_SECONDS = 60
    return settings
