"""Heartbeats through the production cache (Redis), for the heartbeat test modules."""

import pytest

from tests.redis_server import redis_cache, redis_database

REDIS_DB = 7


@pytest.fixture
def redis_url():
    with redis_database(REDIS_DB) as url:
        yield url


@pytest.fixture
def coalescing(settings, redis_url):
    """The production cache (Redis), with a flush interval no test outlasts."""
    settings.CACHES = redis_cache(redis_url)
    settings.NODE_HEARTBEAT_FLUSH_SECONDS = 60
    return settings
