"""Django's Redis cache with one Redis client, so one connection pool, per process.

Django keeps a cache object per thread, and under gunicorn's gevent workers per greenlet, so
per request; its RedisCache builds its client (and the client's connection pool) per cache
object. Each request that touched the cache opened a Redis connection and dropped it at its
end (the handshake, `HELLO`/`CLIENT SETINFO`, and redis-py reading its own version from the
package metadata): ~2 ms of worker CPU per message on the production path
(docs/operations.md). Here every cache object of a process with the same servers and options
shares one client; redis-py's pool is safe to share between threads and greenlets.

And one redis-py `Redis` per pool: Django's client builds a new one for every cache call
(`get_client`), ~0.1 ms of CPU each (its response callbacks are copied into a fresh dict),
several per message (the rate limit, the token statistics). A `Redis` is safe to share: each
command takes a connection from the pool.

config/settings.py puts this class in place of Django's when CACHE_URL is redis://...; it
is a RedisCache, so code that asks `isinstance(cache, RedisCache)` still gets True.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

_lock = threading.Lock()
_clients: dict[tuple, RedisCacheClient] = {}


class _OneRedisPerPool(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._redis: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._redis.get(id(pool))
        if client is None:
            with _lock:
                client = self._redis.setdefault(id(pool), self._client(connection_pool=pool))
        return client


class SharedRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _OneRedisPerPool

    @cached_property
    def _cache(self) -> RedisCacheClient:
        identity = (tuple(self._servers), repr(sorted(self._options.items())))
        client = _clients.get(identity)
        if client is None:
            with _lock:
                client = _clients.setdefault(identity, self._class(self._servers, **self._options))
        return client


def redis_client(cache: RedisCache, key: str, *, write: bool):
    """The redis-py client Django's own methods use for `key` (made with
    make_and_validate_key), for the commands its cache has no method for (SET NX PX, INCRBY
    in a pipeline, DEL of a claim). Django's RedisCache has no public accessor for it."""
    return cache._cache.get_client(key, write=write)
