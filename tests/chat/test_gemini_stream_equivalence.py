"""The rest stream (chat.llm.gemini_rest, the default) is the SDK's stream without its
per-chunk objects: both implementations run on the same streams, from the fake server's
scripts and from the recorded responses in tests/fixtures/gemini_streams/, and must give
the same deltas, result, running usage and errors (type, code, details, Retry-After), and
send the same request (docs/decisions/0002-lean-gemini-stream.md)."""

import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from google.genai import _api_client as sdk_api_client

from billing.usage import Usage
from chat.llm import get_provider
from chat.llm.base import GenerationOptions, StreamResult, Turn
from chat.llm.errors import LLMError
from chat.llm.gemini import SdkGeminiStream
from chat.llm.gemini_rest import RestGeminiStream, iter_sse_events
from tests.fakes.gemini import Script, read_recording

RECORDINGS = Path(__file__).resolve().parent.parent / "fixtures" / "gemini_streams"
IMPLEMENTATIONS = {"sdk": SdkGeminiStream, "rest": RestGeminiStream}


@dataclass(frozen=True)
class Outcome:
    deltas: tuple[str, ...]
    result: StreamResult | None
    usage_so_far: Usage | None
    error: tuple | None  # (type, code, details, headers)


def run(settings, implementation: str, **request) -> Outcome:
    settings.GEMINI_STREAM_CLIENT = implementation
    request = {
        "system_prompt": "You are a test assistant.",
        "history": [Turn("user", "earlier"), Turn("model", "answer")],
        "message": "hi",
        "max_output_tokens": 256,
    } | request
    stream = get_provider().stream_reply(**request)
    assert isinstance(stream, IMPLEMENTATIONS[implementation])
    deltas = []
    error = None
    try:
        for delta in stream:
            deltas.append(delta)
    except LLMError as exc:
        error = (type(exc), exc.code, exc.details, exc.headers)
    finally:
        stream.close()
    return Outcome(tuple(deltas), stream.result, stream.usage_so_far, error)


def both(settings, fake, script: Script) -> Outcome:
    """Each implementation on its own copy of the script; the two outcomes must be equal."""
    outcomes = []
    for implementation in IMPLEMENTATIONS:
        fake.reset()
        fake.default = script
        outcomes.append(run(settings, implementation))
    sdk, rest = outcomes
    assert rest == sdk
    return rest


# What each recording must give (checked on both implementations): the text, then the
# finish reason or the error code.
EXPECTED = {
    "text_stop": ("The quick brown fox jumps.", "stop"),
    "finish_max_tokens": ("The quick brown fox jumps.", "max_tokens"),
    "finish_safety_after_text": ("The quick brown fox jumps.", "safety"),
    "finish_recitation": ("The quick brown fox jumps.", "recitation"),
    "finish_other": ("The quick brown fox jumps.", "other"),
    "finish_blocklist": ("The quick brown fox jumps.", "blocklist"),
    "finish_prohibited_content": ("The quick brown fox jumps.", "prohibited_content"),
    "finish_spii": ("The quick brown fox jumps.", "spii"),
    "finish_language": ("The quick brown fox jumps.", "language"),
    "finish_finish_reason_unspecified": (
        "The quick brown fox jumps.",
        "finish_reason_unspecified",
    ),
    "finish_too_many_tool_calls": ("The quick brown fox jumps.", "too_many_tool_calls"),
    "finish_unknown_reason": ("The quick brown fox jumps.", "some_future_reason"),
    "finish_safety_no_text": ("", "content_blocked"),
    "finish_malformed_function_call": ("", "malformed_function_call"),
    "finish_prohibited_content_no_text": ("", "prohibited_content"),
    "thoughts_then_text": ("Pixel art is drawn one pixel at a time.", "stop"),
    "thought_and_text_in_one_chunk": ("Answer: 42.", "stop"),
    "thoughts_only_max_tokens": ("", "max_tokens"),
    "usage_only_on_last_chunk": ("One two three.", "stop"),
    "usage_absent": ("No usage at all.", "stop"),
    "usage_without_candidates_count": ("Short.", "stop"),
    "usage_empty_then_full": ("AB", "stop"),
    "usage_only_total": ("Hi", "stop"),
    "prompt_blocked_safety": ("", "content_blocked"),
    "prompt_blocked_other": ("", "content_blocked"),
    "prompt_blocked_blocklist": ("", "content_blocked"),
    "prompt_blocked_prohibited_content": ("", "content_blocked"),
    "error_400_invalid_key": ("", "upstream_error"),
    "error_403_permission": ("", "upstream_error"),
    "error_404_model": ("", "upstream_error"),
    "error_429_quota": ("", "upstream_rate_limited"),
    "error_500_internal": ("", "upstream_error"),
    "error_502_html": ("", "upstream_error"),
    "error_503_overloaded": ("", "upstream_error"),
    "error_504_deadline": ("", "upstream_timeout"),
    "error_event_mid_stream": ("Partial", "upstream_error"),
    "error_json_lines_in_stream": ("Partial", "upstream_error"),
    "cut_no_finish_chunked": ("Cut short", "upstream_incomplete"),
    "cut_connection_close": ("Cut short", "upstream_incomplete"),
    "cut_mid_event_connection_close": ("Cut", "upstream_error"),
    "complete_connection_close": ("Whole reply.", "stop"),
    "no_trailing_blank_line": ("Ends tight.", "stop"),
    "empty_body": ("", "upstream_incomplete"),
    "unicode_text": (
        "Pixel art \u2014 \u30c9\u30c3\u30c8\u7d75 \U0001f3a8"
        " line\u2028separator, para\u2029graph, nel\u0085. caf\u00e9",
        "stop",
    ),
    "escaped_unicode": ('caf\u00e9 \U0001f3a8 "quoted" \\ back', "stop"),
    "invalid_utf8_byte": ("bad \ufffd byte \ufffd", "stop"),
    "lf_only_separators": ("LF only.", "stop"),
    "cr_only_separators": ("CR only.", "stop"),
    "event_over_two_data_lines": ("two", "stop"),
    "missing_fields": ("Finally", "stop"),
    "unknown_fields": ("New fields.", "stop"),
    # The SDK reads a line outside `data: ` as JSON: a comment line is a malformed event.
    "sse_comment_line": ("", "upstream_error"),
    "malformed_json_event": ("fine", "upstream_error"),
    # The SDK reads a list, a string or null as an empty chunk, and fails on a number.
    "non_object_event": ("fine", "upstream_incomplete"),
    "number_event": ("fine", "upstream_error"),
}


def test_every_recording_has_an_expectation():
    assert {path.stem for path in RECORDINGS.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("piece_bytes", [None, 7], ids=["event_per_read", "7_byte_reads"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_recorded_stream_gives_the_same_outcome_on_both(fake_gemini, settings, name, piece_bytes):
    script = Script(replay=str(RECORDINGS / f"{name}.txt"), replay_piece_bytes=piece_bytes)
    outcome = both(settings, fake_gemini, script)

    text, end = EXPECTED[name]
    assert "".join(outcome.deltas) == text
    if outcome.error is None:
        assert outcome.result.finish_reason == end
    else:
        assert outcome.error[1] == end
        assert outcome.result is None


def replay(name: str) -> Script:
    return Script(replay=str(RECORDINGS / f"{name}.txt"))


def test_recorded_usage_thoughts_and_retry_after(fake_gemini, settings):
    thoughts = both(settings, fake_gemini, replay("thoughts_then_text"))
    assert thoughts.result.usage == Usage(input_tokens=12, output_tokens=11, thinking_tokens=201)

    no_output = both(
        settings, fake_gemini, Script(replay=str(RECORDINGS / "thoughts_only_max_tokens.txt"))
    )
    assert no_output.result.usage == Usage(input_tokens=20, output_tokens=0, thinking_tokens=64)

    limited = both(settings, fake_gemini, Script(replay=str(RECORDINGS / "error_429_quota.txt")))
    assert limited.error[3] == {"Retry-After": "7"}
    assert limited.error[2] == {"status": "RESOURCE_EXHAUSTED"}

    blocked = both(
        settings, fake_gemini, Script(replay=str(RECORDINGS / "prompt_blocked_safety.txt"))
    )
    assert blocked.error[2] == {"block_reason": "SAFETY"}
    assert blocked.usage_so_far is None  # the block is raised before its event's usage


FAKE_SCRIPTS = {
    "text": Script(chunks=["One", " two", " three"], usage=(30, 9), thinking_tokens=4),
    "usage_only_on_last": Script(usage_on_every_chunk=False),
    "no_usage": Script(usage=None),
    "usage_without_output": Script(usage_without_output=True),
    "max_tokens": Script(finish_reason="MAX_TOKENS"),
    "recitation": Script(finish_reason="RECITATION"),
    "blocked_prompt": Script(block_prompt="PROHIBITED_CONTENT"),
    "blocked_reply": Script(block_reply=True),
    "error_400": Script(error_status=400),
    "error_429": Script(error_status=429, retry_after=3),
    "error_500": Script(error_status=500),
    "error_503": Script(error_status=503),
    "dropped": Script(chunks=["a", "b", "c", "d"], drop_after=2),
    "malformed": Script(chunks=["fine", "x"], malformed_after=1),
    "cut": Script(chunks=["a", "b", "c"], cut_after=2),
    "one_empty_chunk": Script(chunks=[""]),
}


@pytest.mark.parametrize("name", sorted(FAKE_SCRIPTS))
def test_a_scripted_stream_gives_the_same_outcome_on_both(fake_gemini, settings, name):
    both(settings, fake_gemini, FAKE_SCRIPTS[name])


def test_a_stall_is_the_same_timeout_on_both(fake_gemini, settings):
    settings.GEMINI_TIMEOUT_MS = 300
    settings.GEMINI_RETRY_ATTEMPTS = 1
    outcome = both(settings, fake_gemini, Script(chunks=["a", "b"], stall_after=1, stall_s=3))
    assert outcome.deltas == ("a",)
    assert outcome.error[1] == "upstream_timeout"


def test_retries_are_the_sdks_on_both(fake_gemini, settings):
    for implementation in IMPLEMENTATIONS:
        fake_gemini.reset()
        fake_gemini.script(Script(error_status=503), Script(error_status=429), Script())
        outcome = run(settings, implementation)
        assert outcome.result.finish_reason == "stop"
        assert len(fake_gemini.generate_requests()) == 3
        fake_gemini.reset()
        fake_gemini.default = Script(error_status=500)
        outcome = run(settings, implementation)
        assert outcome.error[1] == "upstream_error"
        assert len(fake_gemini.generate_requests()) == settings.GEMINI_RETRY_ATTEMPTS


@pytest.mark.parametrize(
    "request_fields",
    [
        {},
        {"system_prompt": "", "history": []},
        {"options": GenerationOptions(temperature=0.2, top_p=0.9, stop=("END", "STOP"))},
        {"options": GenerationOptions(temperature=1), "max_output_tokens": 7},
        {"history": [Turn("user", "caf\u00e9 \U0001f3a8 \u2028"), Turn("model", '"quoted"\n')]},
    ],
    ids=["default", "no_system_no_history", "options", "int_temperature", "unicode"],
)
def test_both_send_the_same_request(fake_gemini, settings, request_fields):
    settings.GEMINI_SAFETY_THRESHOLD = "BLOCK_ONLY_HIGH"
    received = {}
    for implementation in IMPLEMENTATIONS:
        fake_gemini.reset()
        run(settings, implementation, **request_fields)
        [received[implementation]] = fake_gemini.generate_requests()
    # path (model, api version, alt=sse), every header (key, telemetry, X-Server-Timeout,
    # Content-Length: the same bytes) and the body
    assert received["rest"] == received["sdk"]
    assert received["rest"]["path"].endswith(":streamGenerateContent?alt=sse")
    assert received["rest"]["headers"]["x-server-timeout"] == "5"


def test_the_rest_path_uses_the_sdks_pooled_client_and_target_once(fake_gemini, settings):
    provider = get_provider()
    target = provider.stream_target
    assert target.http is provider.client._api_client._httpx_client
    assert target.retry is provider.client._api_client._retry
    list(provider.stream_reply(system_prompt="", history=[], message="a", max_output_tokens=5))
    list(provider.stream_reply(system_prompt="", history=[], message="b", max_output_tokens=5))
    assert provider.stream_target is target


def test_closing_the_rest_stream_hangs_up_on_the_upstream(fake_gemini, settings):
    fake_gemini.script(Script(chunks=["a", "b", "c", "d", "e"], delay_ms=100))
    stream = get_provider().stream_reply(
        system_prompt="", history=[], message="a", max_output_tokens=5
    )
    assert isinstance(stream, RestGeminiStream)
    assert next(iter(stream)) == "a"
    stream.close()
    deadline = time.monotonic() + 5
    while not fake_gemini.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    [closed] = fake_gemini.closed
    assert closed["chunks_written"] < 5
    assert stream.result is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_sse_framing_is_the_sdks_at_every_read_size(name):
    """iter_sse_events against the SDK's own framing (HttpResponse._iter_response_stream) on
    the recording's body cut into reads of 1 to 9 bytes: lines, CRLFs and UTF-8 characters
    split across reads."""
    _, _, body = read_recording(str(RECORDINGS / f"{name}.txt"))
    for size in range(1, 10):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        sdk_response = sdk_api_client.HttpResponse({}, httpx2.Response(200, content=iter(pieces)))
        assert list(iter_sse_events(pieces)) == list(sdk_response._iter_response_stream())
