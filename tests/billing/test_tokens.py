"""Token counting: the estimate, the cached count API, statistics, the command, the endpoint."""

import json
import string

import pytest
from django.core.management import call_command

from billing.tokens import (
    calculate_message_tokens,
    chat_token_stats,
    clear_token_cache,
    count_system_prompt_tokens,
    count_text_tokens,
    estimate_tokens,
    token_cache_stats,
)


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
    assert count_text_tokens("count me") == 21
    assert count_text_tokens("count me") == 21
    assert len(fake_gemini.count_requests()) == 1
    stats = token_cache_stats()
    assert (stats["hits"], stats["misses"], stats["api_calls"]) == (1, 1, 1)
    assert stats["hit_rate"] == 0.5 and stats["entries"] == 1


def test_cache_keys_hold_no_raw_text(fake_gemini):
    from django.core.cache import cache

    count_text_tokens("a very private sentence")
    keys = list(getattr(cache, "_cache", {}).keys())
    assert keys and not any("private" in str(key) for key in keys)


def test_a_failing_count_falls_back_to_the_estimate(fake_gemini):
    fake_gemini.count_error_status = 500
    fake_gemini.default.error_status = None
    assert count_text_tokens("Hello world") == estimate_tokens("Hello world")
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
        count_text_tokens("same text")
    assert token_cache_stats()["hit_rate"] == pytest.approx(8 / 9, abs=1e-3)
    clear_token_cache()
    assert token_cache_stats()["hits"] == 0
    count_text_tokens("same text")
    assert token_cache_stats()["misses"] == 1


def test_message_breakdown(settings):
    settings.LLM_PROVIDER = "local"
    settings.TOKEN_OVERHEAD = 10
    tokens = calculate_message_tokens("Hello world", "Hi!", history_texts=["Hello world"])
    assert tokens.user_tokens == 4 and tokens.output_tokens == 2 and tokens.history_tokens == 4
    assert tokens.input_tokens == tokens.system_prompt_tokens + 4 + 4 + 10
    assert tokens.total == tokens.input_tokens + 2
    assert tokens.source == "counted"


def test_chat_token_stats():
    assert chat_token_stats([10, 30, 20]) == {
        "total": 60,
        "average": 20.0,
        "maximum": 30,
        "message_count": 3,
    }
    assert chat_token_stats([]) == {"total": 0, "average": 0, "maximum": 0, "message_count": 0}


def test_command_table_json_and_clear(settings, capsys):
    settings.LLM_PROVIDER = "local"
    count_text_tokens("x")
    count_text_tokens("x")
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


def test_source_comes_from_this_exchanges_own_counts(fake_gemini):
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
    counted = calculate_message_tokens("question", "answer")
    assert counted.source == "counted"
    # The failed system-prompt count was not remembered: it was asked for once more.
    assert prompt_counts() == failed_attempts + 1
