"""Token counting: the estimate, the cached count API, statistics, the command, the endpoint.

The two cache layers are checked against a shared cache that records what billing asks of
it (local memory, and Redis when REDIS_TEST_URL is set, e.g. redis://127.0.0.1:6379/9; the
Redis tests use their own key prefix and delete only their keys).
"""

import json
import os
import string
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache
from django.core.management import call_command

from billing import tokens
from billing.tokens import (
    calculate_message_tokens,
    clear_token_cache,
    count_system_prompt_tokens,
    count_text_tokens_with_source,
    estimate_tokens,
    token_cache_stats,
)
from billing.usage import Usage
from config.cache import SharedRedisCache


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("Hello world", 4), ("Hi!", 2), ("a" * 5000, 1288), ("!" * 5000, 1932)],
)
def test_estimate_examples(text, expected):
    assert estimate_tokens(text) == expected


def test_the_factor_is_bounded_on_a_punctuation_heavy_5000_character_text():
    text = (string.punctuation * 200)[:5000]
    assert estimate_tokens(text) <= 1932
    # the seed's uncapped factor would have charged about 100x the base
    assert estimate_tokens(text) < 2 * estimate_tokens("a" * 5000)


@pytest.mark.parametrize("seed", range(5))
def test_any_5000_character_text_is_at_most_1932(seed):
    import random

    rng = random.Random(seed)
    alphabet = string.printable + "éß漢字🙂"
    text = "".join(rng.choice(alphabet) for _ in range(5000))
    assert estimate_tokens(text) <= 1932


def test_count_uses_the_api_then_the_cache(fake_gemini):
    fake_gemini.count_tokens_value = 21
    assert count_text_tokens_with_source("count me") == (21, "counted")
    assert count_text_tokens_with_source("count me") == (21, "counted")
    assert len(fake_gemini.count_requests()) == 1
    stats = token_cache_stats()
    assert (stats["hits"], stats["misses"], stats["api_calls"]) == (1, 1, 1)
    assert stats["hit_rate"] == 0.5 and stats["entries"] == 1


def test_cache_keys_hold_no_raw_text(fake_gemini):
    from django.core.cache import cache

    count_text_tokens_with_source("a very private sentence")
    keys = list(getattr(cache, "_cache", {}).keys())
    assert keys and not any("private" in str(key) for key in keys)


def test_a_failing_count_falls_back_to_the_estimate(fake_gemini):
    fake_gemini.count_error_status = 500
    fake_gemini.default.error_status = None
    assert count_text_tokens_with_source("Hello world") == (
        estimate_tokens("Hello world"),
        "estimated",
    )
    stats = token_cache_stats()
    assert stats["fallbacks"] == 1 and stats["estimates"] == 1


def test_system_prompt_is_counted_once(fake_gemini):
    first = count_system_prompt_tokens()
    second = count_system_prompt_tokens()
    assert first == second > 0
    assert len(fake_gemini.count_requests()) == 1


def test_hit_rate_after_repeated_counts(settings):
    settings.LLM_PROVIDER = "local"
    for _ in range(9):
        count_text_tokens_with_source("same text")
    assert token_cache_stats()["hit_rate"] == pytest.approx(8 / 9, abs=1e-3)
    clear_token_cache()
    assert token_cache_stats()["hits"] == 0
    count_text_tokens_with_source("same text")
    assert token_cache_stats()["misses"] == 1


def test_message_breakdown(settings):
    settings.LLM_PROVIDER = "local"
    settings.TOKEN_OVERHEAD = 10
    tokens = calculate_message_tokens("Hello world", "Hi!", history_texts=["Hello world"])
    # input: the system prompt + history 4 + message 4 + overhead 10; output: the reply's 2
    assert tokens == Usage(count_system_prompt_tokens() + 4 + 4 + 10, 2, source="counted")
    assert tokens.total == tokens.input_tokens + 2


def test_command_table_json_and_clear(settings, capsys):
    settings.LLM_PROVIDER = "local"
    count_text_tokens_with_source("x")
    count_text_tokens_with_source("x")
    call_command("token_cache_stats")
    table = capsys.readouterr().out
    assert "hit rate" in table and "50.0%" in table
    call_command("token_cache_stats", "--json")
    assert json.loads(capsys.readouterr().out)["hits"] == 1
    call_command("token_cache_stats", "--clear", "--json")
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["hits"] == 0


def test_token_stats_endpoint_is_staff_only(api_client, user, staff_user):
    assert api_client.get("/api/chat/token-stats").status_code == 401
    api_client.force_authenticate(user)
    refused = api_client.get("/api/chat/token-stats")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    api_client.force_authenticate(staff_user)
    data = api_client.get("/api/chat/token-stats").json()["data"]
    assert set(data) >= {"hits", "misses", "hit_rate", "entries", "api_calls", "fallbacks"}


def test_source_comes_from_this_exchanges_own_counts(fake_gemini, settings):
    def prompt_counts() -> int:
        return sum(
            "NFT" in r["body"]["contents"][0]["parts"][0]["text"]
            for r in fake_gemini.count_requests()
        )

    fake_gemini.count_error_status = 500
    estimated = calculate_message_tokens("question", "answer")
    assert estimated.source == "estimated"
    failed_attempts = prompt_counts()  # the SDK retries a 500 before giving up
    assert failed_attempts >= 1

    fake_gemini.count_error_status = None
    # The failed system-prompt count is remembered for SYSTEM_PROMPT_COUNT_RETRY_S: within
    # that window it is not asked for again, and the exchange stays "estimated".
    assert calculate_message_tokens("question", "answer").source == "estimated"
    assert prompt_counts() == failed_attempts
    settings.SYSTEM_PROMPT_COUNT_RETRY_S = 0  # the window has passed: asked for once more
    counted = calculate_message_tokens("question", "answer")
    assert counted.source == "counted"
    assert prompt_counts() == failed_attempts + 1


# --- the two cache layers -----------------------------------------------------------------

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL")


class _Recording:
    """A cache backend that records each call made to it: (operation, key as billing gave it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str]] = []

    def get(self, key, default=None, version=None):
        self.calls.append(("get", key))
        return super().get(key, default, version)

    def get_many(self, keys, version=None):
        keys = list(keys)
        self.calls.extend(("get_many", key) for key in keys)
        return super().get_many(keys, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self.calls.append(("add", key))
        return super().add(key, value, timeout, version)

    def incr(self, key, delta=1, version=None):
        self.calls.append(("incr", key))
        return super().incr(key, delta, version)


class RecordingLocMemCache(_Recording, LocMemCache):
    pass


class RecordingRedisCache(_Recording, SharedRedisCache):
    pass


def count_calls(backend) -> list[str]:
    """What the shared cache was asked about cached counts (not the generation or statistics)."""
    return [op for op, key in backend.calls if ":count:" in key]


@pytest.fixture(
    params=[
        "locmem",
        pytest.param(
            "redis",
            marks=pytest.mark.skipif(not REDIS_TEST_URL, reason="set REDIS_TEST_URL to run"),
        ),
    ]
)
def shared_cache(request, settings, monkeypatch):
    """The shared cache, recording; the generation is read once and no statistics flush is due."""
    prefix = f"test-tokens-{uuid.uuid4().hex}"
    if request.param == "redis":
        backend = {"BACKEND": f"{__name__}.RecordingRedisCache", "LOCATION": REDIS_TEST_URL}
    else:
        backend = {"BACKEND": f"{__name__}.RecordingLocMemCache", "LOCATION": prefix}
    settings.CACHES = {DEFAULT_CACHE_ALIAS: {**backend, "KEY_PREFIX": prefix}}
    monkeypatch.setattr(tokens, "GENERATION_TTL_S", 3600.0)
    monkeypatch.setattr(tokens, "STATS_FLUSH_INTERVAL_S", 3600.0)
    clear_token_cache()  # read this cache's generation now; it is kept for the whole test
    recording = caches[DEFAULT_CACHE_ALIAS]
    recording.calls.clear()
    yield recording
    if request.param == "redis":
        client = recording._cache.get_client(write=True)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


def test_a_second_count_asks_neither_the_api_nor_the_shared_cache(fake_gemini, shared_cache):
    fake_gemini.count_tokens_value = 21
    assert count_text_tokens_with_source("count me") == (21, "counted")
    assert count_calls(shared_cache) == ["get", "add"]  # the first went through both layers
    shared_cache.calls.clear()

    assert count_text_tokens_with_source("count me") == (21, "counted")
    assert len(fake_gemini.count_requests()) == 1
    assert shared_cache.calls == []  # not even a statistics increment


def test_a_local_miss_is_served_by_the_shared_cache(fake_gemini, shared_cache, settings):
    settings.TOKEN_CACHE_LOCAL_ENTRIES = 1
    fake_gemini.count_tokens_value = 21
    count_text_tokens_with_source("first")
    count_text_tokens_with_source(
        "second"
    )  # pushes "first" out of the local layer, as on another node
    shared_cache.calls.clear()

    assert count_text_tokens_with_source("first") == (21, "counted")
    assert len(fake_gemini.count_requests()) == 2
    assert count_calls(shared_cache) == ["get"]
    stats = token_cache_stats()
    assert (stats["hits"], stats["misses"], stats["api_calls"], stats["entries"]) == (1, 2, 2, 2)


def test_statistics_are_exact_after_many_hits(settings, shared_cache):
    settings.LLM_PROVIDER = "local"
    for _ in range(500):
        count_text_tokens_with_source("same text")
    for _ in range(250):
        count_text_tokens_with_source("other text")
    # Counted in process memory: within the flush interval nothing was added to the shared cache.
    assert not [key for op, key in shared_cache.calls if op == "incr"]

    stats = token_cache_stats()  # adds this process's counts first, so they are exact here
    assert (stats["hits"], stats["misses"], stats["api_calls"], stats["entries"]) == (748, 2, 2, 2)
    assert (stats["estimates"], stats["fallbacks"]) == (0, 0)
    assert stats["hit_rate"] == round(748 / 750, 4)
    assert token_cache_stats()["hits"] == 748  # a second read adds nothing twice


def test_statistics_reach_the_shared_counters_when_the_interval_passes(
    settings, shared_cache, monkeypatch
):
    settings.LLM_PROVIDER = "local"
    hits, misses = tokens._stat_key("hits"), tokens._stat_key("misses")
    for _ in range(5):
        count_text_tokens_with_source("same text")
    # What another node reads: nothing yet, the counts wait for the interval.
    assert shared_cache.get_many([hits, misses]) == {}

    monkeypatch.setattr(tokens, "STATS_FLUSH_INTERVAL_S", 0.0)
    count_text_tokens_with_source(
        "same text"
    )  # the interval has passed: all pending counts are added
    assert shared_cache.get_many([hits, misses]) == {hits: 5, misses: 1}


def test_clear_forgets_the_local_layer_and_pending_statistics(fake_gemini, shared_cache):
    count_text_tokens_with_source("count me")
    count_text_tokens_with_source("count me")
    clear_token_cache()
    shared_cache.calls.clear()

    stats = token_cache_stats()
    assert (stats["hits"], stats["misses"], stats["api_calls"], stats["entries"]) == (0, 0, 0, 0)
    # The pending counts were dropped, not added to the forgotten generation's counters.
    assert not [key for op, key in shared_cache.calls if op == "incr"]
    assert len(tokens._local_counts) == 0

    count_text_tokens_with_source("count me")
    assert len(fake_gemini.count_requests()) == 2  # the local copy was forgotten too
    assert token_cache_stats()["misses"] == 1


def test_the_local_layer_keeps_at_most_its_bound_least_recently_used_out(settings, shared_cache):
    settings.LLM_PROVIDER = "local"
    settings.TOKEN_CACHE_LOCAL_ENTRIES = 3
    for i in range(10):
        count_text_tokens_with_source(f"text {i}")
        assert len(tokens._local_counts) <= 3
    assert len(tokens._local_counts) == 3  # texts 7, 8, 9
    count_text_tokens_with_source("text 7")  # used again: now the most recent
    count_text_tokens_with_source("text 10")  # pushes out the least recently used: "text 8"
    assert len(tokens._local_counts) == 3
    shared_cache.calls.clear()

    for i in (7, 9, 10):
        assert count_text_tokens_with_source(f"text {i}") == (
            estimate_tokens(f"text {i}"),
            "counted",
        )
    assert shared_cache.calls == []
    assert count_text_tokens_with_source("text 8") == (estimate_tokens("text 8"), "counted")
    assert count_calls(shared_cache) == ["get"]


def test_without_the_local_layer_every_count_reads_the_shared_cache(
    fake_gemini, shared_cache, settings
):
    settings.TOKEN_CACHE_LOCAL_ENTRIES = 0
    fake_gemini.count_tokens_value = 21
    assert [count_text_tokens_with_source("count me") for _ in range(3)] == [(21, "counted")] * 3
    assert len(fake_gemini.count_requests()) == 1
    assert count_calls(shared_cache) == ["get", "add", "get", "get"]
    assert len(tokens._local_counts) == 0
    stats = token_cache_stats()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (2, 1, 1)


def test_counts_and_statistics_from_many_threads(settings, shared_cache, monkeypatch):
    settings.LLM_PROVIDER = "local"
    settings.TOKEN_CACHE_LOCAL_ENTRIES = 4
    monkeypatch.setattr(tokens, "STATS_FLUSH_INTERVAL_S", 0.001)  # flushes race the counts
    texts = [f"text {i}" for i in range(6)]

    def work(n: int) -> list[bool]:
        return [
            count_text_tokens_with_source(texts[(n + i) % 6])
            == (estimate_tokens(texts[(n + i) % 6]), "counted")
            for i in range(300)
        ]

    with ThreadPoolExecutor(8) as pool:
        results = [ok for oks in pool.map(work, range(8)) for ok in oks]
    assert len(results) == 2400 and all(results)
    assert len(tokens._local_counts) <= 4
    stats = token_cache_stats()
    assert stats["hits"] + stats["misses"] == 2400  # no count lost or counted twice
    assert stats["api_calls"] == stats["misses"] and stats["entries"] == 6


GEVENT_SCRIPT = """
from gevent import monkey

monkey.patch_all()  # as the gevent worker does, before the application is imported

import django

django.setup()
import gevent
import gevent.thread

from billing import tokens

assert isinstance(tokens._stats_lock, gevent.thread.LockType)
assert isinstance(tokens._local_counts._lock, gevent.thread.LockType)
tokens.STATS_FLUSH_INTERVAL_S = 0.001


def work(n):
    for i in range(200):
        text = f"text {(n + i) % 6}"
        counted = tokens.count_text_tokens_with_source(text)
        assert counted == (tokens.estimate_tokens(text), "counted")
        gevent.sleep(0)


gevent.joinall([gevent.spawn(work, n) for n in range(50)], raise_error=True)
stats = tokens.token_cache_stats()
print(stats["hits"] + stats["misses"], len(tokens._local_counts))
"""


def test_the_locks_work_under_gevent():
    env = {
        key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "CACHE_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        LLM_PROVIDER="local",
        TOKEN_CACHE_LOCAL_ENTRIES="4",
    )
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10000", "4"]


# --- issue 12: statistics that read sensibly -----------------------------------------------


def test_entries_are_what_the_shared_cache_holds_now(settings, shared_cache):
    settings.LLM_PROVIDER = "local"
    settings.TOKEN_CACHE_LOCAL_ENTRIES = 0
    for text in ("one", "two", "three"):
        count_text_tokens_with_source(text)
    assert token_cache_stats()["entries"] == 3
    # One count evicted (or expired) from the shared cache: the statistics say so.
    shared_cache.delete(tokens._key(settings.GEMINI_MODEL, "two"))
    stats = token_cache_stats()
    assert stats["entries"] == 2 and stats["local_entries"] == 0
    clear_token_cache()
    assert token_cache_stats()["entries"] == 0


def test_local_entries_are_this_processs_lru(settings, shared_cache):
    settings.LLM_PROVIDER = "local"
    settings.TOKEN_CACHE_LOCAL_ENTRIES = 2
    for text in ("one", "two", "three"):
        count_text_tokens_with_source(text)
    stats = token_cache_stats()
    assert (stats["entries"], stats["local_entries"]) == (3, 2)


def test_the_system_prompts_count_from_process_memory_is_a_hit(settings, shared_cache):
    settings.LLM_PROVIDER = "local"
    for _ in range(5):
        count_system_prompt_tokens()  # read on every message
    stats = token_cache_stats()
    assert (stats["hits"], stats["misses"]) == (4, 1)


def test_statistics_reach_the_shared_counters_when_the_request_ends(
    settings, shared_cache, client, db
):
    settings.LLM_PROVIDER = "local"
    hits, misses = tokens._stat_key("hits"), tokens._stat_key("misses")
    for _ in range(3):
        count_text_tokens_with_source("same text")
    assert shared_cache.get_many([hits, misses]) == {}  # pending in this process
    client.get("/health")  # any request's end (request_finished) adds what is pending
    # What another node's dashboard reads now, with no further lookup in this process.
    assert shared_cache.get_many([hits, misses]) == {hits: 2, misses: 1}


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_sql_estimate_is_estimate_tokens_on_every_code_point():
    """The set-up statement's estimate (billing.tokens.estimate_tokens_sql) must be exactly
    estimate_tokens: every code point a text can hold is classed the same, and texts whose
    estimate turns on the special characters' cap come out the same."""
    from django.db import connection

    from billing.tokens import (
        _NON_WORD,
        estimate_sql_params,
        estimate_tokens_sql,
    )

    points = [p for p in range(1, 0x110000) if not 0xD800 <= p <= 0xDFFF]
    chunks = ["".join(map(chr, points[i : i + 256])) for i in range(0, len(points), 256)]
    texts = [
        "",
        "Hello world",
        "Ünïcödé wörds, 日本語。 🎨✨ ²Ⅻ e\u0301",
        "x" * 3 + "!" * 24,
        "x" * 3 + "!" * 25,
        "a" * 5000 + "!" * 30,  # the cap is reached past the first scanned characters
        "!" * 5000,
        *chunks[:: len(chunks) // 40],
    ]
    params = {
        **estimate_sql_params(),
        "chunks": chunks,
        "texts": texts,
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT length(t) - length(regexp_replace(t, %(estimate_pattern)s, '', 'g')) "
            "FROM unnest(%(chunks)s::text[]) WITH ORDINALITY AS x(t, i) ORDER BY i",
            params,
        )
        specials = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            f"SELECT {estimate_tokens_sql('t')} "  # noqa: S608 - constants only
            "FROM unnest(%(texts)s::text[]) WITH ORDINALITY AS x(t, i) ORDER BY i",
            params,
        )
        estimates = [int(row[0]) for row in cursor.fetchall()]
    assert specials == [len(_NON_WORD.findall(chunk)) for chunk in chunks]
    assert estimates == [estimate_tokens(text) for text in texts]


def test_the_running_output_count_is_the_estimate_of_the_text_so_far():
    """OutputCount, fed a text in chunks of every size, is estimate_tokens of what it was fed
    at every step, across the special characters' cap; its cap compares that figure."""
    text = ("Hello, wörld! 🙂 ¿Qué? " * 20) + ("plain words " * 30) + ("!?" * 40)
    for size in (1, 2, 3, 7, 64, len(text)):
        count = tokens.OutputCount(cap=None)
        fed = ""
        for start in range(0, len(text), size):
            chunk = text[start : start + size]
            assert count.with_text(chunk).tokens == estimate_tokens(fed + chunk)
            count.add(chunk)
            fed += chunk
            assert count.tokens == estimate_tokens(fed)
        assert not count.passes_cap
    capped = tokens.OutputCount(cap=estimate_tokens("Hello, wörld!"))
    capped.add("Hello, wörld!")
    assert not capped.passes_cap
    capped.add(" and more")  # four more characters at least: one more base token
    assert capped.passes_cap
