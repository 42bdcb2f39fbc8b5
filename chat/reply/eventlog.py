"""A reply's event log: every event of its stream, with its id, for whoever relays it.

Two tiers:

- `LocalFeed`: the run's own events in the memory of the worker that runs it. Relays in
  that worker (the message's own response, a resume that lands on it) read it: no I/O,
  no delay.
- the shared log, for relays on other workers and nodes, and for the stop signal:
  `RedisLog` (a Redis Stream per reply: XADD with the event id as the entry id, XREAD BLOCK
  to follow, EXPIRE after the end) when CACHE_URL is redis://..., else `DatabaseLog` (one
  row per event in `chat_replyevent`; followers poll).

Runs never write the shared log themselves: `LogWriter` collects the events of every run of
the worker and writes them in one batch every REPLY_LOG_FLUSH_MS (one Redis pipeline or one
multi-row INSERT for all runs), and once more at each run's end. If a write fails, that
reply's shared log is written no further (never a gap in the ids); its followers then take
the rest from the saved reply once it has ended.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string

from chat.reply.events import Event, is_done

logger = logging.getLogger(__name__)


def release_db_connection() -> None:
    """Give the connection back to the pool (a follower or a run must not hold one while it
    waits). Inside an atomic block (a test wrapping everything) closing would break it."""
    if not connection.in_atomic_block:
        connection.close()


class LocalFeed:
    """The events of one run, in this worker's memory; ids are 1, 2, ... in order."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._changed = threading.Condition()

    def publish(self, data: dict) -> Event:
        with self._changed:
            event = (len(self._events) + 1, data)
            self._events.append(event)
            self._changed.notify_all()
        return event

    @property
    def ended(self) -> bool:
        return bool(self._events) and is_done(self._events[-1][1])

    @property
    def last_id(self) -> int:
        return len(self._events)

    def read(self, after: int, timeout: float | None) -> list[Event]:
        """The events after id `after`; waits up to `timeout` for one when there is none."""
        with self._changed:
            if len(self._events) <= after and not self.ended:
                self._changed.wait(timeout)
            return self._events[after:]


class RedisLog:
    """A Redis Stream per reply; entry ids are `0-<event id>`, so XREAD from `0-<after>`
    returns exactly the events after `after`."""

    name = "redis"

    def __init__(self, url: str):
        import redis

        # Its own pool: a follower on another node holds a connection while XREAD blocks. A
        # blocking pool waits for a free connection; redis-py's default pool raises past 100.
        # Its size is the cache's (REDIS_POOL_MAX_SIZE) plus room for that many followers.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=2 * settings.REDIS_POOL_MAX_SIZE,
            timeout=settings.REDIS_POOL_TIMEOUT_S,
            health_check_interval=30,
        )
        self.redis = redis.Redis(connection_pool=pool)

    @staticmethod
    def _key(reply_id) -> str:
        return f"chat:reply:{reply_id}:log"

    @staticmethod
    def _stop_key(reply_id) -> str:
        return f"chat:reply:{reply_id}:stop"

    def write(self, batch: dict[uuid.UUID, list[Event]], ended: set[uuid.UUID]) -> None:
        # While a run lasts its log outlives any run (a dead worker's reply is swept from it);
        # after the end it is kept REPLY_LOG_TTL_S.
        running_ttl = settings.REPLY_LOG_TTL_S + settings.RESERVATION_TTL_S
        pipe = self.redis.pipeline(transaction=False)
        for reply_id, events in batch.items():
            key = self._key(reply_id)
            for event_id, data in events:
                pipe.xadd(key, {"d": json.dumps(data, ensure_ascii=False)}, id=f"0-{event_id}")
            pipe.expire(key, settings.REPLY_LOG_TTL_S if reply_id in ended else running_ttl)
        pipe.execute()

    def read(self, reply_id, after: int, block_s: float) -> list[Event]:
        block = int(block_s * 1000) if block_s > 0 else None  # BLOCK 0 would wait forever
        answer = self.redis.xread({self._key(reply_id): f"0-{after}"}, block=block)
        if not answer:
            return []
        [(_key, entries)] = answer
        return [
            (int(entry_id.split(b"-")[1]), json.loads(fields[b"d"])) for entry_id, fields in entries
        ]

    def request_stop(self, reply_id) -> None:
        self.redis.set(self._stop_key(reply_id), 1, ex=settings.RESERVATION_TTL_S)

    def stops_requested(self, reply_ids: list) -> set:
        if not reply_ids:
            return set()
        flags = self.redis.mget([self._stop_key(r) for r in reply_ids])
        return {r for r, flag in zip(reply_ids, flags, strict=True) if flag}

    def expire(self) -> int:
        return 0  # Redis expires each log itself (EXPIRE at every write)


class DatabaseLog:
    """One row per event (chat_replyevent). A follower polls every REPLY_LOG_POLL_MS; the
    stop signal is the reply row's `stop_requested_at`."""

    name = "database"

    def write(self, batch: dict[uuid.UUID, list[Event]], ended: set[uuid.UUID]) -> None:
        from chat.models import ReplyEvent

        rows = [
            ReplyEvent(reply_id=reply_id, event_id=event_id, data=data, final=is_done(data))
            for reply_id, events in batch.items()
            for event_id, data in events
        ]
        try:
            ReplyEvent.objects.bulk_create(rows)
        finally:
            release_db_connection()

    def read(self, reply_id, after: int, block_s: float) -> list[Event]:
        from chat.models import ReplyEvent

        deadline = time.monotonic() + block_s
        while True:
            try:
                events = list(
                    ReplyEvent.objects.filter(reply_id=reply_id, event_id__gt=after)
                    .order_by("event_id")
                    .values_list("event_id", "data")
                )
            finally:
                release_db_connection()
            left = deadline - time.monotonic()
            if events or left <= 0:
                return events
            time.sleep(min(left, settings.REPLY_LOG_POLL_MS / 1000))

    def request_stop(self, reply_id) -> None:
        pass  # the stop is the row's stop_requested_at, set by the stop itself

    def stops_requested(self, reply_ids: list) -> set:
        from chat.models import Message

        if not reply_ids:
            return set()
        try:
            return set(
                Message.objects.filter(
                    pk__in=reply_ids, stop_requested_at__isnull=False
                ).values_list("pk", flat=True)
            )
        finally:
            release_db_connection()

    def expire(self) -> int:
        """Delete the events of replies that ended more than REPLY_LOG_TTL_S ago."""
        from chat.models import ReplyEvent

        cutoff = timezone.now() - timedelta(seconds=settings.REPLY_LOG_TTL_S)
        ended = ReplyEvent.objects.filter(final=True, created_at__lt=cutoff).values("reply_id")
        try:
            deleted, _ = ReplyEvent.objects.filter(reply_id__in=ended).delete()
        finally:
            release_db_connection()
        return deleted


_backend_lock = threading.Lock()
_backend: RedisLog | DatabaseLog | None = None


def redis_url() -> str | None:
    """The cache's Redis URL when CACHE_URL is redis://..., else None."""
    cache = settings.CACHES["default"]
    if not issubclass(import_string(cache["BACKEND"]), RedisCache):
        return None
    location = cache["LOCATION"]
    return location[0] if isinstance(location, list | tuple) else location


def shared_log() -> RedisLog | DatabaseLog:
    global _backend
    if _backend is None:
        with _backend_lock:
            if _backend is None:
                url = redis_url()
                _backend = RedisLog(url) if url else DatabaseLog()
    return _backend


def _on_setting_changed(*, setting, **kwargs):
    global _backend
    if setting == "CACHES":
        _backend = None


setting_changed.connect(_on_setting_changed)


class LogWriter:
    """The events of this worker's runs, waiting for the next batched write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one write at a time, so ids land in order
        self._pending: dict[uuid.UUID, list[Event]] = {}
        self._broken: set[uuid.UUID] = set()

    def add(self, reply_id: uuid.UUID, event: Event) -> None:
        with self._lock:
            self._pending.setdefault(reply_id, []).append(event)

    def flush(self, reply_ids: Iterable[uuid.UUID] | None = None) -> None:
        """Write what is pending (of `reply_ids` only, when given) in one batch."""
        with self._write_lock:
            with self._lock:
                if reply_ids is None:
                    batch, self._pending = self._pending, {}
                else:
                    batch = {r: self._pending.pop(r) for r in reply_ids if r in self._pending}
            batch = {r: events for r, events in batch.items() if r not in self._broken}
            ended = {r for r, events in batch.items() if any(is_done(d) for _, d in events)}
            self._broken -= ended
            if not batch:
                return
            try:
                shared_log().write(batch, ended)
            except Exception:
                logger.exception(
                    "Writing %d reply event log(s) failed; they are written no further and "
                    "their followers will read the saved replies",
                    len(batch),
                )
                self._broken.update(set(batch) - ended)

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(events) for events in self._pending.values())


log_writer = LogWriter()
