"""config/cache.py: one Redis client, so one connection pool, per process (not per request)."""

import os
import threading
import uuid

import pytest
from django.core.cache import DEFAULT_CACHE_ALIAS, caches

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL")
pytestmark = pytest.mark.skipif(not REDIS_TEST_URL, reason="set REDIS_TEST_URL to run")


def test_requests_on_other_threads_share_one_redis_connection_pool(settings):
    settings.CACHES = {
        DEFAULT_CACHE_ALIAS: {
            "BACKEND": "config.cache.SharedRedisCache",
            "LOCATION": REDIS_TEST_URL,
            "KEY_PREFIX": f"test-cache-{uuid.uuid4().hex}",
        }
    }
    seen = []

    def one_request(n):
        # Django's cache object is per thread (per greenlet under gevent): a request's own.
        cache = caches[DEFAULT_CACHE_ALIAS]
        cache.set(f"key-{n}", n)
        seen.append(
            (cache, cache._cache.get_client(write=True).connection_pool, cache.get(f"key-{n}"))
        )

    # Eight requests one after another, each on its own thread: the first may open a
    # connection, the others reuse it (Django's own RedisCache opened one per request).
    created = []
    for n in range(8):
        thread = threading.Thread(target=one_request, args=(n,))
        thread.start()
        thread.join()
        created.append(seen[-1][1]._created_connections)

    assert sorted(value for _, _, value in seen) == list(range(8))
    assert len({id(cache) for cache, _, _ in seen}) == 8  # a cache object per thread
    assert len({id(pool) for _, pool, _ in seen}) == 1  # one pool for all of them
    assert created[-1] - created[0] == 0  # no connection opened after the first request's
