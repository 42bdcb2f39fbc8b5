"""GeminiProvider through the real google-genai SDK against the fake Gemini server."""

import threading
import time

import pytest

from chat.llm import get_provider, provider_state
from chat.llm.base import Turn
from chat.llm.errors import (
    ContentBlocked,
    LLMUnavailable,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from tests.fakes.gemini import Script


def stream(message="hi", history=(), max_output_tokens=256):
    return get_provider().stream_reply(
        system_prompt="You are a test assistant.",
        history=list(history),
        message=message,
        max_output_tokens=max_output_tokens,
    )


def test_deltas_arrive_in_order_with_the_last_usage_report(fake_gemini):
    fake_gemini.script(Script(chunks=["One", " two", " three"], usage=(30, 9), thinking_tokens=4))
    reply = stream()

    assert list(reply) == ["One", " two", " three"]
    assert reply.result.finish_reason == "stop"
    # usage came on every chunk as a running total: the last one, never the sum
    assert reply.result.usage.input_tokens == 30
    assert reply.result.usage.output_tokens == 9
    assert reply.result.usage.thinking_tokens == 4


def test_request_carries_system_instruction_history_safety_and_max_tokens(fake_gemini, settings):
    settings.GEMINI_SAFETY_THRESHOLD = "BLOCK_ONLY_HIGH"
    history = [Turn("user", "earlier question"), Turn("model", "earlier answer")]
    list(stream("new question", history=history, max_output_tokens=123))

    [request] = fake_gemini.generate_requests()
    assert request["path"].startswith(f"/v1beta/models/{settings.GEMINI_MODEL}:streamGenerate")
    assert request["headers"]["has_api_key"] is True
    body = request["body"]
    assert body["systemInstruction"]["parts"][0]["text"] == "You are a test assistant."
    assert [(c["role"], c["parts"][0]["text"]) for c in body["contents"]] == [
        ("user", "earlier question"),
        ("model", "earlier answer"),
        ("user", "new question"),
    ]
    assert body["generationConfig"]["maxOutputTokens"] == 123
    categories = {s["category"] for s in body["safetySettings"]}
    assert len(categories) == 4 and all(c.startswith("HARM_CATEGORY_") for c in categories)
    assert {s["threshold"] for s in body["safetySettings"]} == {"BLOCK_ONLY_HIGH"}


def test_429_is_retried_then_succeeds(fake_gemini):
    fake_gemini.script(Script(error_status=429), Script(chunks=["ok"]))
    assert list(stream()) == ["ok"]
    assert len(fake_gemini.generate_requests()) == 2


def test_429_every_time_gives_up_as_rate_limited(fake_gemini, settings):
    fake_gemini.default = Script(error_status=429, retry_after=7)
    with pytest.raises(UpstreamRateLimited) as caught:
        list(stream())
    assert caught.value.code == "upstream_rate_limited"
    assert caught.value.headers["Retry-After"] == "7"
    assert len(fake_gemini.generate_requests()) == settings.GEMINI_RETRY_ATTEMPTS


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_map_to_upstream_error(fake_gemini, status):
    fake_gemini.default = Script(error_status=status)
    with pytest.raises(UpstreamError) as caught:
        list(stream())
    assert caught.value.code == "upstream_error"


def test_a_dropped_connection_after_output_is_never_retried(fake_gemini):
    fake_gemini.script(Script(chunks=["a", "b", "c", "d"], drop_after=2))
    reply = stream()
    received = []
    with pytest.raises(UpstreamError):
        for delta in reply:
            received.append(delta)
    assert received == ["a", "b"]
    assert len(fake_gemini.generate_requests()) == 1
    assert reply.result is None


def test_a_stall_longer_than_the_timeout_is_upstream_timeout(fake_gemini, settings):
    settings.GEMINI_TIMEOUT_MS = 300
    settings.GEMINI_RETRY_ATTEMPTS = 1
    fake_gemini.script(Script(chunks=["a", "b"], stall_after=1, stall_s=5))
    received = []
    with pytest.raises(UpstreamTimeout):
        for delta in stream():
            received.append(delta)
    assert received == ["a"]


def test_a_blocked_prompt_is_content_blocked(fake_gemini):
    fake_gemini.script(Script(block_prompt="SAFETY"))
    with pytest.raises(ContentBlocked) as caught:
        list(stream())
    assert caught.value.code == "content_blocked"


def test_a_blocked_reply_is_content_blocked(fake_gemini):
    fake_gemini.script(Script(block_reply=True))
    with pytest.raises(ContentBlocked):
        list(stream())


def test_malformed_json_is_upstream_error(fake_gemini):
    fake_gemini.script(Script(chunks=["fine", "x"], malformed_after=1))
    received = []
    with pytest.raises(UpstreamError):
        for delta in stream():
            received.append(delta)
    assert received == ["fine"]


def test_count_tokens_uses_the_count_api(fake_gemini):
    fake_gemini.count_tokens_value = 17
    assert get_provider().count_tokens("some text") == 17
    [request] = fake_gemini.count_requests()
    assert request["path"].endswith(":countTokens")
    assert "systemInstruction" not in request["body"]


def test_missing_key_reports_unavailable_and_refuses(settings):
    settings.LLM_PROVIDER = "gemini"
    settings.GEMINI_API_KEY = ""
    assert provider_state()["state"] == "unavailable"
    with pytest.raises(LLMUnavailable):
        stream()


def test_auto_in_development_picks_local_without_a_key_and_gemini_with_one(settings):
    settings.DEBUG = True
    settings.LLM_PROVIDER = "auto"
    settings.GEMINI_API_KEY = ""
    assert get_provider().name == "local"
    settings.GEMINI_API_KEY = "a-key"
    assert get_provider().name == "gemini"


def test_more_than_a_hundred_replies_reach_the_upstream_at_once(fake_gemini, settings):
    """The SDK's HTTP client allows 100 connections: a gevent worker holding more streams
    sent its 101st reply only when another had ended (GEMINI_MAX_CONNECTIONS now)."""
    assert settings.GEMINI_MAX_CONNECTIONS >= 1000
    fake_gemini.default = Script(chunks=["held"], stall_after=0, stall_s=3)
    replies = 110
    threads = [threading.Thread(target=lambda: list(stream())) for _ in range(replies)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2.5  # before the first stalled reply ends
    while len(fake_gemini.generate_requests()) < replies and time.monotonic() < deadline:
        time.sleep(0.01)
    arrived = len(fake_gemini.generate_requests())
    for thread in threads:
        thread.join(timeout=30)
    assert arrived == replies
