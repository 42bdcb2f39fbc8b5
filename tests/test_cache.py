"""config/cache.py: one Redis client, so one connection pool, per process (not per request)."""

import os
import threading
import time
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
    seen, clients = [], []

    def one_request(n):
        # Django's cache object is per thread (per greenlet under gevent): a request's own.
        cache = caches[DEFAULT_CACHE_ALIAS]
        cache.set(f"key-{n}", n)
        clients.append(cache._cache.get_client(write=True))
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
    assert len({id(client) for client in clients}) == 1  # and one redis-py client, not a call's


def _exhausted_pool(settings, *, timeout_s: float):
    """A SharedRedisCache of one connection, as config/settings.py configures it (a blocking
    pool), with that connection checked out; returns (cache, pool, connection)."""
    settings.CACHES = {
        DEFAULT_CACHE_ALIAS: {
            "BACKEND": "config.cache.SharedRedisCache",
            "LOCATION": REDIS_TEST_URL,
            "KEY_PREFIX": f"test-cache-{uuid.uuid4().hex}",
            "OPTIONS": {
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": 1,
                "timeout": timeout_s,
            },
        }
    }
    cache = caches[DEFAULT_CACHE_ALIAS]
    pool = cache._cache.get_client(write=True).connection_pool
    return cache, pool, pool.get_connection()


def test_a_request_that_finds_every_redis_connection_busy_waits_for_one(settings, user):
    # redis-py's default pool raises MaxConnectionsError past its size at once: a burst of
    # 500 streams on one worker failed 116 messages with 500 that way.
    from chat.ratelimit import check_rate_limit

    _, pool, held = _exhausted_pool(settings, timeout_s=30)
    outcome = []
    claim = threading.Thread(
        target=lambda: outcome.append(check_rate_limit(user=user, window_ms=60_000) or "claimed")
    )
    claim.start()
    deadline = time.monotonic() + 10
    while not pool.pool.not_empty._waiters:  # the claim waits for a connection (LifoQueue)
        assert claim.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.005)
    pool.release(held)
    claim.join(timeout=10)
    assert outcome == ["claimed"]


def test_no_free_redis_connection_in_time_is_a_503_to_retry(settings, auth_client, chat):
    from tests.messages import send

    settings.LLM_PROVIDER = "local"
    _, pool, held = _exhausted_pool(settings, timeout_s=0.05)
    try:
        response = send(auth_client, chat)
    finally:
        pool.release(held)
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "database_unavailable"
    assert not chat.messages.exists()  # refused before anything was saved


def test_redis_replies_are_parsed_by_hiredis(settings):
    # pyproject's redis[hiredis]: commands packed and replies parsed in C (docs/operations.md).
    settings.CACHES = {
        DEFAULT_CACHE_ALIAS: {
            "BACKEND": "config.cache.SharedRedisCache",
            "LOCATION": REDIS_TEST_URL,
        }
    }
    pool = caches[DEFAULT_CACHE_ALIAS]._cache.get_client(write=True).connection_pool
    connection = pool.get_connection()
    try:
        assert "Hiredis" in type(connection._parser).__name__
    finally:
        pool.release(connection)
