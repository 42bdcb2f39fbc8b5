"""Counting tokens: the provider's count API (cached), else a conservative estimate.

Billing prefers, in order: the provider's usage report on the stream (handled by the
caller; exact and free), the count API through this module's cache, the estimate.

The count function comes from settings.TOKEN_COUNTER (a dotted path to `text -> int`,
which may raise), so billing never imports the chat app that owns the providers.
Two cache layers, both keyed by model, the cache's generation and a SHA-256 of the text
(never the text itself): a bounded LRU in process memory (TOKEN_CACHE_LOCAL_ENTRIES; a hit
there makes no round trip), then Django's cache (local memory by default, Redis via
CACHE_URL so nodes share it). A count of (model, text) never changes, so a local copy is
always right. Statistics are counted in process memory and added to the shared counters
at most once every STATS_FLUSH_INTERVAL_S, and always before token_cache_stats() reads them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache as memoize

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.utils.module_loading import import_string

from billing.usage import TokenSource, Usage
from config.cache import redis_client

logger = logging.getLogger(__name__)

CACHE_PREFIX = "tokens:v1"
COUNT_TIMEOUT_S = 30 * 24 * 3600
STAT_NAMES = ("hits", "misses", "api_calls", "estimates", "fallbacks")
_NON_WORD = re.compile(r"[^\w\s]")

# The estimate: base = ceil(len / 4); factor = 1 + 0.02 per non-word character, capped;
# estimate = ceil(base * factor * 1.03).
FACTOR_PER_SPECIAL_CHAR = 0.02
MAX_FACTOR = 1.5
SAFETY_MARGIN = 1.03
SPECIALS_AT_CAP = math.ceil((MAX_FACTOR - 1) / FACTOR_PER_SPECIAL_CHAR)


def estimate_tokens(text: str) -> int:
    """A conservative token estimate with no network call.

    >>> estimate_tokens("")
    0
    >>> estimate_tokens("Hello world")   # base 3, no special characters: ceil(3 * 1.03)
    4
    >>> estimate_tokens("Hi!")           # base 1, factor 1.02: ceil(1 * 1.02 * 1.03)
    2
    >>> estimate_tokens("a" * 5000)      # base 1250: ceil(1250 * 1.03)
    1288
    >>> estimate_tokens("!" * 5000)      # factor capped at 1.5: ceil(1250 * 1.5 * 1.03)
    1932

    The seed's factor grew without bound with the number of special characters, so a long
    punctuation-heavy text was charged many times its length; the cap fixes that.
    """
    return _estimate(len(text), _specials(text, SPECIALS_AT_CAP))


def _specials(text: str, limit: int) -> int:
    """The non-word characters of `text`, counted up to `limit` (past SPECIALS_AT_CAP the
    factor is capped: no need to count further)."""
    return sum(1 for _ in itertools.islice(_NON_WORD.finditer(text), limit))


def _estimate(chars: int, specials: int) -> int:
    if not chars:
        return 0
    base = math.ceil(chars / 4)
    factor = min(MAX_FACTOR, 1 + FACTOR_PER_SPECIAL_CHAR * specials)
    return math.ceil(round(base * factor * SAFETY_MARGIN, 6))


def estimate_input_tokens(*, system_tokens: int, history_texts: Iterable[str], message: str) -> int:
    """The input estimate, the one rule: what the provider will bill as input before it
    says so. The system prompt's count (count_system_prompt_tokens(), or the local model's
    estimate of it) + the history's and the message's estimates + TOKEN_OVERHEAD. The
    reservation is made from it (chat's set-up and /v1), the local model reports it; the
    set-up's one statement on PostgreSQL passes it without the history
    (`history_texts=()`) and adds the history's part in SQL (estimate_tokens_sql)."""
    return (
        system_tokens
        + sum(estimate_tokens(text) for text in history_texts)
        + estimate_tokens(message)
        + settings.TOKEN_OVERHEAD
    )


class OutputCount:
    """The running output count, the one rule: estimate_tokens() of the text so far, kept
    as it streams with O(chunk) work per chunk and no call or database work (the
    non-word characters are single characters, so their count adds up over chunks).

    `cap`: a limit the count is checked against (`passes_cap`); None, no limit. A reply
    capped by the budget stops when it passes (chat/reply/run.py, chat/completions.py); the
    local model stops before a chunk would pass its max_output_tokens."""

    __slots__ = ("cap", "chars", "specials")

    def __init__(self, cap: int | None = None):
        self.cap = cap
        self.chars = 0
        self.specials = 0

    def add(self, text: str) -> None:
        self.chars += len(text)
        if self.specials < SPECIALS_AT_CAP:
            self.specials += _specials(text, SPECIALS_AT_CAP - self.specials)

    def with_text(self, text: str) -> OutputCount:
        """A copy with `text` added; this count is left as it is."""
        other = OutputCount(self.cap)
        other.chars, other.specials = self.chars, self.specials
        other.add(text)
        return other

    @property
    def tokens(self) -> int:
        return _estimate(self.chars, self.specials)

    @property
    def passes_cap(self) -> bool:
        return self.cap is not None and self.tokens > self.cap


def estimate_tokens_sql(column: str) -> str:
    """estimate_tokens() of a text column as a PostgreSQL expression, exactly (the set-up
    statement sums it over the history, chat/reply/setup.py); its parameters come from
    estimate_sql_params().

    Exact because every step is: length() counts code points as len() does; the non-word
    characters are matched by a bracket expression listing, by code point, exactly the
    characters this interpreter's `_NON_WORD` matches (special_characters_pattern()), and
    capped as islice() caps them (counted in the text's first SPECIALS_SCAN characters
    first: most texts reach the cap there, so the rest is never scanned); numeric arithmetic
    is exact where Python rounds its float product to 6 places before the ceiling (the exact
    value has at most 4 decimals). tests/billing/test_tokens.py compares the two on every
    code point.
    """

    def specials(text: str) -> str:
        return f"length({text}) - length(regexp_replace({text}, %(estimate_pattern)s, '', 'g'))"

    prefix = f"left({column}, {SPECIALS_SCAN})"
    capped = (
        f"CASE WHEN {specials(prefix)} >= %(estimate_specials_cap)s "
        f"THEN %(estimate_specials_cap)s "
        f"ELSE LEAST(%(estimate_specials_cap)s, {specials(column)}) END"
    )
    return (
        f"CEIL(CEIL(length({column}) / 4.0) * LEAST(%(estimate_max_factor)s::numeric, "
        f"1 + %(estimate_per_special)s::numeric * ({capped})) * %(estimate_margin)s::numeric)"
    )


SPECIALS_SCAN = 1000


def estimate_sql_params() -> dict:
    return {
        "estimate_specials_cap": SPECIALS_AT_CAP,
        "estimate_max_factor": str(MAX_FACTOR),
        "estimate_per_special": str(FACTOR_PER_SPECIAL_CHAR),
        "estimate_margin": str(SAFETY_MARGIN),
        # ~10 KB, a parameter: the statement is prepared (config/postgresql/base.py), so it
        # is sent as it is (not quoted into the query at each set-up) and the query stays short.
        "estimate_pattern": special_characters_pattern(),
    }


@memoize
def special_characters_pattern() -> str:
    """A PostgreSQL regular expression matching one character exactly when `_NON_WORD`
    matches it: built once per process from this interpreter's own regex, over every code
    point a PostgreSQL text can hold (not NUL, not a surrogate), as ~750 ranges of escaped
    code points (PostgreSQL compiles it once per connection and caches it)."""
    below, above = "".join(map(chr, range(1, 0xD800))), "".join(map(chr, range(0xE000, 0x110000)))
    runs = re.compile(f"(?:{_NON_WORD.pattern})+")
    ranges = [
        (offset + run.start(), offset + run.end() - 1)
        for offset, text in ((1, below), (0xE000, above))
        for run in runs.finditer(text)
    ]
    return (
        "["
        + "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges)
        + "]"
    )


def _escape(point: int) -> str:
    return f"\\u{point:04X}" if point <= 0xFFFF else f"\\U{point:08X}"


def _model(model: str | None) -> str:
    return model or settings.GEMINI_MODEL


GENERATION_TTL_S = 1.0
_generation_seen = (0.0, 1)  # (monotonic time read, value)


def _generation() -> int:
    """Bumped by clear_token_cache(): older keys are never read again and age out.

    Re-read from the shared cache at most once a second per process, so a clear reaches
    every node within a second and a cached count costs one cache round trip, not two.
    """
    global _generation_seen
    read_at, value = _generation_seen
    now = time.monotonic()
    if now - read_at > GENERATION_TTL_S:
        value = cache.get_or_set(f"{CACHE_PREFIX}:generation", 1, timeout=None)
        _generation_seen = (now, value)
    return value


def _key(model: str, text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{CACHE_PREFIX}:{_generation()}:count:{model}:{digest}"


def _stat_key(name: str) -> str:
    return f"{CACHE_PREFIX}:{_generation()}:stat:{name}"


# About the locks: under gevent workers `threading` is monkey-patched, so these are gevent
# locks; under gthread, real ones. Either way no critical section below does I/O (the cache
# is only called outside them), so a holder never yields and is never waited on for long.


class _LocalCounts:
    """A bounded, thread-safe LRU of counts in process memory, keyed like the shared cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: OrderedDict[str, int] = OrderedDict()

    def get(self, key: str) -> int | None:
        with self._lock:
            count = self._counts.get(key)
            if count is not None:
                self._counts.move_to_end(key)
            return count

    def put(self, key: str, count: int, limit: int) -> None:
        with self._lock:
            self._counts[key] = count
            self._counts.move_to_end(key)
            while len(self._counts) > limit:
                self._counts.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def __len__(self) -> int:
        return len(self._counts)


_local_counts = _LocalCounts()

# Statistics not yet added to the shared counters: {stat key (with its generation): delta}.
STATS_FLUSH_INTERVAL_S = 1.0
_stats_lock = threading.Lock()
_pending_stats: dict[str, int] = {}
_stats_flushed_at = time.monotonic()


def _bump(name: str) -> None:
    """Count one event in process memory; add the counts to the shared cache about once a second."""
    global _stats_flushed_at
    key = _stat_key(name)
    now = time.monotonic()
    with _stats_lock:
        _pending_stats[key] = _pending_stats.get(key, 0) + 1
        due = now - _stats_flushed_at >= STATS_FLUSH_INTERVAL_S
        if due:
            _stats_flushed_at = now
    if due:
        try:
            _flush_stats()
        except Exception as exc:  # the counts were put back: the next flush retries them
            logger.warning("Token statistics flush failed (%s)", type(exc).__name__)


def _flush_stats() -> None:
    """Add this process's pending statistics to the shared counters (atomic incr)."""
    with _stats_lock:
        if not _pending_stats:
            return
        pending = list(_pending_stats.items())
        _pending_stats.clear()
    backend = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(backend, RedisCache):
        # One round trip: INCRBY creates a missing counter (without expiry, as _add does).
        # Django's incr() is two per key (EXISTS, then INCRBY).
        try:
            keys = [(backend.make_and_validate_key(key), delta) for key, delta in pending]
            pipe = redis_client(backend, keys[0][0], write=True).pipeline(transaction=False)
            for redis_key, delta in keys:
                pipe.incrby(redis_key, delta)
            pipe.execute()
        except Exception:
            _put_back(pending)
            raise
        return
    for done, (key, delta) in enumerate(pending):
        try:
            _add(key, delta)
        except Exception:
            _put_back(pending[done:])
            raise


def _put_back(pending: list[tuple[str, int]]) -> None:
    """Keep what was not added for the next flush."""
    with _stats_lock:
        for key, delta in pending:
            _pending_stats[key] = _pending_stats.get(key, 0) + delta


def _add(key: str, delta: int) -> None:
    # incr is atomic on both locmem and Redis, so threads and nodes agree.
    try:
        cache.incr(key, delta)
    except ValueError:  # first use (or evicted): create it, then count
        cache.add(key, 0, timeout=None)
        cache.incr(key, delta)


@memoize
def _counter(path: str):
    return import_string(path)


def count_text_tokens_with_source(text: str, model: str | None = None) -> tuple[int, TokenSource]:
    """The count of `text` and where it came from: COUNTED (the count API or its cache)
    or ESTIMATED (the API failed)."""
    tokens, counted = _count(text, _model(model))
    return tokens, TokenSource.COUNTED if counted else TokenSource.ESTIMATED


def _count(text: str, model: str) -> tuple[int, bool]:
    """(tokens, True when they came from the count API or its cache, False for an estimate)."""
    if not text:
        return 0, True
    key = _key(model, text)
    local_entries = settings.TOKEN_CACHE_LOCAL_ENTRIES
    if local_entries > 0:
        count = _local_counts.get(key)
        if count is not None:
            _bump("hits")
            return count, True
    count = cache.get(key)
    if count is not None:
        _bump("hits")
    else:
        _bump("misses")
        _bump("api_calls")
        try:
            count = int(_counter(settings.TOKEN_COUNTER)(text))
        except Exception as exc:
            _bump("fallbacks")
            _bump("estimates")
            logger.warning("Token count failed (%s); using the estimate", type(exc).__name__)
            return estimate_tokens(text), False
        cache.add(key, count, timeout=COUNT_TIMEOUT_S)
    if local_entries > 0:
        _local_counts.put(key, count, local_entries)
    return count, True


# (model, prompt) -> count. It is read on every message, so it lives in process memory; only
# real counts are kept. A failed count is remembered too, as the monotonic time it failed:
# for SYSTEM_PROMPT_COUNT_RETRY_S the estimate is used without asking the API again, so a
# failing count API costs one call per process per window, not one (with retries) per message.
_system_prompt_counts: dict[tuple[str, str], int] = {}
_system_prompt_count_failed_at: dict[tuple[str, str], float] = {}


def count_system_prompt_tokens(model: str | None = None) -> int:
    """The system prompt's count: counted once per process, model and prompt.

    The first read in each process goes through the shared cache (one count-API call for
    the whole fleet); a (model, prompt) pair always counts the same. May call the count
    API: never call it inside a transaction.
    """
    return _system_prompt_count(_model(model))[0]


def _system_prompt_count(model: str) -> tuple[int, bool]:
    key = (model, settings.SYSTEM_PROMPT)
    if key in _system_prompt_counts:
        _bump("hits")  # answered from process memory: a hit like any local one
        return _system_prompt_counts[key], True
    failed_at = _system_prompt_count_failed_at.get(key)
    if (
        failed_at is not None
        and time.monotonic() - failed_at < settings.SYSTEM_PROMPT_COUNT_RETRY_S
    ):
        return estimate_tokens(settings.SYSTEM_PROMPT), False
    count, counted = _count(settings.SYSTEM_PROMPT, model)
    if counted:
        _system_prompt_counts[key] = count
        _system_prompt_count_failed_at.pop(key, None)
    else:
        _system_prompt_count_failed_at[key] = time.monotonic()
    return count, counted


def calculate_message_tokens(
    user_text: str, reply_text: str, model: str | None = None, *, history_texts=()
) -> Usage:
    """The tokens of one exchange when the provider did not report them.

    input = system prompt + history + user text + TOKEN_OVERHEAD; output = the reply.
    `source` is "counted" when every part came from the count API (or its cache).
    """
    model = _model(model)
    system = _system_prompt_count(model)
    history = [_count(text, model) for text in history_texts]
    user = _count(user_text, model)
    output = _count(reply_text, model)
    counted = all(ok for _, ok in (system, *history, user, output))
    return Usage(
        input_tokens=system[0]
        + sum(tokens for tokens, _ in history)
        + user[0]
        + settings.TOKEN_OVERHEAD,
        output_tokens=output[0],
        source=TokenSource.COUNTED if counted else TokenSource.ESTIMATED,
    )


def token_cache_stats() -> dict:
    """The shared counters, after adding this process's pending ones.

    Other processes add theirs when the request that made them ends (flush_token_stats on
    request_finished) and about once a second during a long one. `entries` is what the
    shared cache holds now for this generation (None when the backend cannot list its
    keys); `local_entries` is this process's LRU.
    """
    _flush_stats()
    keys = {name: _stat_key(name) for name in STAT_NAMES}
    found = cache.get_many(keys.values())
    stats = {name: found.get(keys[name], 0) for name in STAT_NAMES}
    lookups = stats["hits"] + stats["misses"]
    stats["hit_rate"] = round(stats["hits"] / lookups, 4) if lookups else 0.0
    stats["entries"] = _stored_entries()
    stats["local_entries"] = len(_local_counts)
    return stats


def flush_token_stats(**_signal_kwargs) -> None:
    """Add this process's pending statistics to the shared counters now (request_finished)."""
    with _stats_lock:
        if not _pending_stats:
            return
    try:
        _flush_stats()
    except Exception as exc:  # put back by _flush_stats: the next flush retries them
        logger.warning("Token statistics flush failed (%s)", type(exc).__name__)


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _stored_entries() -> int | None:
    """How many counts of the current generation the shared cache holds right now.

    Read from the backend itself, so evictions and expiries are seen: local memory (one
    process's dict) and Redis (SCAN over the key space: a staff read, not the hot path).
    """
    backend = caches[DEFAULT_CACHE_ALIAS]
    prefix = backend.make_key(f"{CACHE_PREFIX}:{_generation()}:count:")
    if isinstance(backend, LocMemCache):
        now = time.time()
        with backend._lock:
            expiries = [
                backend._expire_info.get(key) for key in backend._cache if key.startswith(prefix)
            ]
        return sum(1 for expires in expiries if expires is None or expires > now)
    if isinstance(backend, RedisCache):
        client = redis_client(backend, prefix, write=False)
        pattern = _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"
        return sum(1 for _ in client.scan_iter(match=pattern, count=1000))
    return None


def clear_token_cache() -> None:
    """Forget cached counts and statistics, on every node when the cache is shared.

    This process forgets at once (its LRU, its pending statistics, the system prompt's
    count); other nodes within GENERATION_TTL_S, when they re-read the generation.
    """
    global _generation_seen
    _system_prompt_counts.clear()
    _system_prompt_count_failed_at.clear()
    _local_counts.clear()
    with _stats_lock:
        _pending_stats.clear()
    key = f"{CACHE_PREFIX}:generation"
    cache.add(key, 1, timeout=None)
    _generation_seen = (time.monotonic(), cache.incr(key))
