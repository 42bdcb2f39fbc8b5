"""The message rate limit: at most one message per MESSAGE_RATE_LIMIT_MS per user, on every
node that shares the cache.

A message claims the user's window with one atomic "create if absent, expiring after the
window" operation, so of any number of parallel attempts exactly one wins until the window
ends. (A read of the last time followed by a write lets two parallel attempts both pass.)
"""

from __future__ import annotations

import math
import time

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache

from chat.exceptions import RateLimited
from config.cache import redis_client


def check_rate_limit(*, user, window_ms: int) -> None:
    """Claim the user's message window or raise RateLimited (429 with Retry-After)."""
    if window_ms <= 0:
        return
    key = f"chat:message-window:{user.pk}"
    remaining_ms = _claim(key, window_ms)
    if remaining_ms is not None:
        raise RateLimited(retry_after=math.ceil(remaining_ms / 1000))


def release_rate_limit(*, user) -> None:
    """Give back a window this request claimed, for a message refused by a check that comes
    before the rate limit (chat/reply/setup.py claims it before its one statement decides).
    Within the window the key is this request's own claim; should the window have run out
    meanwhile (a set-up that waited longer than it on a lock) and another message claimed
    it, that claim is dropped and one more message may pass early: never a charge."""
    cache = caches[DEFAULT_CACHE_ALIAS]
    key = f"chat:message-window:{user.pk}"
    if isinstance(cache, RedisCache):
        redis_key = cache.make_and_validate_key(key)
        redis_client(cache, redis_key, write=True).delete(redis_key)
    else:
        cache.delete(key)


def _claim(key: str, window_ms: int) -> float | None:
    """None when this call claimed the window, else the milliseconds left of it."""
    cache = caches[DEFAULT_CACHE_ALIAS]  # the backend itself (django.core.cache.cache is a proxy)
    if isinstance(cache, RedisCache):
        # One command, atomic on the server: SET key 1 NX PX window. Not cache.add():
        # RedisCache rounds its timeout down to whole seconds, and a timeout that rounds to
        # 0 makes add() delete the key it just set, so every attempt would pass.
        redis_key = cache.make_and_validate_key(key)
        client = redis_client(cache, redis_key, write=True)
        if client.set(redis_key, 1, nx=True, px=window_ms):
            return None
        return max(client.pttl(redis_key), 0)
    # LocMemCache.add tests and sets under the cache's lock and keeps a float expiry, so a
    # fractional window is exact. Other backends: add() is their atomic primitive too, at
    # whatever timeout precision they have.
    ends_at = time.time() + window_ms / 1000
    if cache.add(key, ends_at, timeout=window_ms / 1000):
        return None
    current_end = cache.get(key)  # only for Retry-After; the decision is made
    return max((current_end or ends_at) - time.time(), 0) * 1000
