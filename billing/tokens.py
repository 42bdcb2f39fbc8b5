"""Counting tokens: the provider's count API (cached), else a conservative estimate.

Billing prefers, in order: the provider's usage report on the stream (handled by the
caller; exact and free), the count API through this module's cache, the estimate.

The count function comes from settings.TOKEN_COUNTER (a dotted path to `text -> int`,
which may raise), so billing never imports the chat app that owns the providers.
The cache is Django's (local memory by default, Redis via CACHE_URL so nodes share it),
keyed by model and a SHA-256 of the text, never the text itself.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache as memoize

from django.conf import settings
from django.core.cache import cache
from django.utils.module_loading import import_string

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
    if not text:
        return 0
    base = math.ceil(len(text) / 4)
    # Past SPECIALS_AT_CAP characters the factor is capped: stop counting there.
    specials = sum(1 for _ in itertools.islice(_NON_WORD.finditer(text), SPECIALS_AT_CAP))
    factor = min(MAX_FACTOR, 1 + FACTOR_PER_SPECIAL_CHAR * specials)
    return math.ceil(round(base * factor * SAFETY_MARGIN, 6))


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


def _bump(name: str) -> None:
    key = _stat_key(name)
    # incr is atomic on both locmem and Redis, so threads and nodes agree.
    try:
        cache.incr(key)
    except ValueError:  # first use (or evicted): create it, then count
        cache.add(key, 0, timeout=None)
        cache.incr(key)


@memoize
def _counter(path: str):
    return import_string(path)


def count_text_tokens(text: str, model: str | None = None) -> int:
    """The provider's count for `text`, cached; the estimate when the provider fails."""
    return _count(text, _model(model))[0]


def _count(text: str, model: str) -> tuple[int, bool]:
    """(tokens, True when they came from the count API or its cache, False for an estimate)."""
    if not text:
        return 0, True
    key = _key(model, text)
    cached = cache.get(key)
    if cached is not None:
        _bump("hits")
        return cached, True
    _bump("misses")
    try:
        _bump("api_calls")
        count = int(_counter(settings.TOKEN_COUNTER)(text))
    except Exception as exc:
        _bump("fallbacks")
        _bump("estimates")
        logger.warning("Token count failed (%s); using the estimate", type(exc).__name__)
        return estimate_tokens(text), False
    if cache.add(key, count, timeout=COUNT_TIMEOUT_S):
        _bump("entries")
    return count, True


# (model, prompt) -> count. It is read on every message, so it lives in process memory; only
# real counts are kept, so a count API that failed once is asked again next time.
_system_prompt_counts: dict[tuple[str, str], int] = {}


def count_system_prompt_tokens(model: str | None = None) -> int:
    """The system prompt's count: counted once per process, model and prompt.

    The first read in each process goes through the shared cache (one count-API call for
    the whole fleet); a (model, prompt) pair always counts the same.
    """
    return _system_prompt_count(_model(model))[0]


def _system_prompt_count(model: str) -> tuple[int, bool]:
    key = (model, settings.SYSTEM_PROMPT)
    if key in _system_prompt_counts:
        return _system_prompt_counts[key], True
    count, counted = _count(settings.SYSTEM_PROMPT, model)
    if counted:
        _system_prompt_counts[key] = count
    return count, counted


@dataclass(frozen=True, slots=True)
class MessageTokens:
    system_prompt_tokens: int
    history_tokens: int
    user_tokens: int
    overhead_tokens: int
    output_tokens: int
    source: str  # "counted" | "estimated"

    @property
    def input_tokens(self) -> int:
        return (
            self.system_prompt_tokens
            + self.history_tokens
            + self.user_tokens
            + self.overhead_tokens
        )

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def calculate_message_tokens(
    user_text: str, reply_text: str, model: str | None = None, *, history_texts=()
) -> MessageTokens:
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
    return MessageTokens(
        system_prompt_tokens=system[0],
        history_tokens=sum(tokens for tokens, _ in history),
        user_tokens=user[0],
        overhead_tokens=settings.TOKEN_OVERHEAD,
        output_tokens=output[0],
        source="counted" if counted else "estimated",
    )


def chat_token_stats(totals: Iterable[int]) -> dict:
    """Total, per-message average and maximum, and count of billed messages."""
    values = [int(t) for t in totals]
    count = len(values)
    return {
        "total": sum(values),
        "average": round(sum(values) / count, 1) if count else 0,
        "maximum": max(values, default=0),
        "message_count": count,
    }


def _stat(name: str) -> int:
    return cache.get(_stat_key(name), 0)


def token_cache_stats() -> dict:
    stats = {name: _stat(name) for name in STAT_NAMES}
    lookups = stats["hits"] + stats["misses"]
    stats["hit_rate"] = round(stats["hits"] / lookups, 4) if lookups else 0.0
    stats["entries"] = _stat("entries")
    return stats


def clear_token_cache() -> None:
    """Forget cached counts and statistics, on every node when the cache is shared."""
    global _generation_seen
    _system_prompt_counts.clear()
    key = f"{CACHE_PREFIX}:generation"
    cache.add(key, 1, timeout=None)
    _generation_seen = (time.monotonic(), cache.incr(key))
