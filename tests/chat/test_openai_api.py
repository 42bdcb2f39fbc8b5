"""The OpenAI-compatible /v1 API through Django's test client, against the real google-genai
SDK and the fake Gemini server: request validation (unsupported parameters named), what is
sent to the model, the answer's shapes, errors in OpenAI's shape, and the books."""

import json
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.services import create_api_key
from billing.models import LedgerEntry, TokenBudget
from chat.models import Message
from tests.fakes.gemini import Script
from tests.ledger import assert_books_balance

URL = "/v1/chat/completions"
MODEL = "gemini-2.5-flash"


@pytest.fixture(autouse=True)
def _setup(settings, fake_gemini):
    settings.MESSAGE_RATE_LIMIT_MS = 0
    settings.GEMINI_MODEL = MODEL
    settings.SYSTEM_PROMPT = "You are the service's assistant."
    settings.GEMINI_RETRY_ATTEMPTS = 1


@pytest.fixture
def api_key(user):
    return create_api_key(user=user, name="tests")


@pytest.fixture
def client(api_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.secret}")
    return client


def body(**overrides):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi there"}], **overrides}


def post(client, **overrides):
    return client.post(URL, body(**overrides), format="json")


def stream_events(response) -> list:
    """Each `data:` payload: a dict, or the string "[DONE]"."""
    raw = b"".join(response.streaming_content).decode()
    events = []
    for block in raw.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


# --- models -------------------------------------------------------------------------------


def test_models_lists_the_configured_model(client):
    response = client.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "gemini"}],
    }
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    missing = client.get("/v1/models/gpt-4o")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


# --- a completion ----------------------------------------------------------------------------


def test_a_completion_is_billed_from_the_usage_report_to_a_ledger_entry_naming_the_key(
    client, user, api_key, fake_gemini
):
    fake_gemini.script(Script(chunks=["Hello", " there."], usage=(30, 5)))

    response = post(client)

    assert response.status_code == 200
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == MODEL
    assert answer["id"].startswith("chatcmpl-")
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"] == {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
    entry = LedgerEntry.objects.get(user=user)
    assert entry.api_key_id == api_key.key.pk and entry.chat_id is None
    assert entry.message_id.hex == answer["id"].removeprefix("chatcmpl-")
    assert (entry.input_tokens, entry.output_tokens, entry.total) == (30, 5, 35)
    assert entry.source == "provider"
    # Priced like a chat reply (gemini-2.5-flash: 0.30 / 2.50 per million), in the ledger only:
    # the answer keeps OpenAI's shape.
    assert entry.model == MODEL
    assert entry.cost == Decimal("0.0000215") and entry.currency == "USD"
    assert "cost" not in answer and "cost" not in answer["usage"]
    assert not Message.objects.exists()  # the conversation belongs to the caller
    assert_books_balance(user)


@pytest.mark.parametrize("stream", [True, False])
def test_nul_and_lone_surrogates_from_the_model_are_replaced_as_in_a_chat_reply(
    client, user, fake_gemini, stream
):
    # The fake sends them as JSON escapes (\u0000, \ud800), as a real server could.
    fake_gemini.script(Script(chunks=["nul\x00here", " lone\ud800there"], usage=(20, 6)))

    response = post(client, stream=stream)

    assert response.status_code == 200
    if stream:
        events = stream_events(response)
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    else:
        text = response.json()["choices"][0]["message"]["content"]
    assert text == "nul\ufffdhere lone\ufffdthere"
    assert LedgerEntry.objects.get(user=user).total == 26
    assert_books_balance(user)


def test_a_streamed_completion_has_chunks_finish_reason_usage_and_done(client, user, fake_gemini):
    fake_gemini.script(Script(chunks=["One", " two", " three"], usage=(20, 3)))

    response = post(client, stream=True, stream_options={"include_usage": True})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = stream_events(response)
    assert events[-1] == "[DONE]"
    chunks, final, usage = events[:-3], events[-3], events[-2]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "One"},
        {"content": " two"},
        {"content": " three"},
    ]
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks)
    assert len({c["id"] for c in events[:-1]}) == 1
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}
    assert LedgerEntry.objects.get(user=user).total == 23
    assert_books_balance(user)


def test_without_include_usage_there_is_no_usage_chunk(client, fake_gemini):
    events = stream_events(post(client, stream=True))
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("gemini_reason", "openai_reason"),
    [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("STOP", "stop")],
)
def test_finish_reasons_are_mapped_to_openais(client, fake_gemini, gemini_reason, openai_reason):
    fake_gemini.script(Script(chunks=["Some text"], finish_reason=gemini_reason))
    assert post(client).json()["choices"][0]["finish_reason"] == openai_reason


def test_the_request_sent_to_gemini(client, fake_gemini):
    post(
        client,
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": [{"type": "text", "text": "Bonjour"}]},
            {"role": "assistant", "content": "Salut !"},
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Ça va ?", "name": "alice"},
            {"role": "user", "content": [{"type": "text", "text": "Et toi ?"}]},
        ],
        temperature=0.3,
        top_p=0.9,
        stop=["END"],
        max_tokens=100,
    )

    sent = fake_gemini.generate_requests()[-1]["body"]
    system = sent["systemInstruction"]["parts"][0]["text"]
    # The service's prompt first, then the caller's system messages, in order.
    assert system == "You are the service's assistant.\n\nAnswer in French.\n\nBe brief."
    assert [(c["role"], c["parts"][0]["text"]) for c in sent["contents"]] == [
        ("user", "Bonjour"),
        ("model", "Salut !"),
        ("user", "Ça va ?\n\nEt toi ?"),  # consecutive user turns joined
    ]
    config = sent["generationConfig"]
    assert config["temperature"] == 0.3 and config["topP"] == 0.9
    assert config["stopSequences"] == ["END"]
    assert config["maxOutputTokens"] == 100


def test_max_tokens_above_the_services_cap_is_capped(client, settings, fake_gemini):
    settings.GEMINI_MAX_OUTPUT_TOKENS = 64
    post(client, max_completion_tokens=5000, max_tokens=10)
    assert fake_gemini.generate_requests()[-1]["body"]["generationConfig"]["maxOutputTokens"] == 64


def test_a_stream_does_no_database_work_per_chunk(client, fake_gemini):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_while_streaming(chunk_count):
        fake_gemini.script(Script(chunks=["x"] * chunk_count, usage=(10, chunk_count)))
        response = post(client, stream=True)
        with CaptureQueriesContext(connection) as streaming:
            events = stream_events(response)
        assert len(events) == chunk_count + 2  # the chunks, the finish chunk, [DONE]
        return len(streaming.captured_queries)

    assert queries_while_streaming(2) == queries_while_streaming(40) > 0  # the settle only


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"seed": 3}, "seed"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"some_future_parameter": 1}, "some_future_parameter"),
        ({"stream": True, "stream_options": {"x": 1}}, "stream_options.x"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "AAA="}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "tool", "content": "42", "tool_call_id": "c1"},
                ]
            },
            "messages[1].role",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]},
                    {"role": "user", "content": "go on"},
                ]
            },
            "messages[1].tool_calls",
        ),
    ],
)
def test_unsupported_parameters_are_400_naming_the_parameter(client, overrides, param):
    response = post(client, **overrides)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == {
        "message": error["message"],
        "type": "invalid_request_error",
        "code": "unsupported_parameter",
        "param": param,
    }
    assert f"'{param}'" in error["message"]


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"model": None}, "model"),
        ({"model": 3}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "assistant", "content": "only me"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0]"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        (
            {"stream": True, "stream_options": {"include_usage": "y"}},
            "stream_options.include_usage",
        ),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": 7}, "stop"),
    ],
)
def test_invalid_values_are_400_naming_the_parameter(client, overrides, param):
    response = post(client, **overrides)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_value" and error["param"] == param


def test_no_op_values_and_ignored_parameters_are_accepted(client, fake_gemini):
    response = post(
        client,
        n=1,
        logprobs=False,
        presence_penalty=0,
        frequency_penalty=0.0,
        logit_bias={},
        response_format={"type": "text"},
        modalities=["text"],
        user="end-user-7",
        metadata={"a": "b"},
        store=False,
        tools=None,  # null counts as absent
    )
    assert response.status_code == 200


def test_bad_json_and_a_non_object_body_are_400_in_openai_shape(client):
    response = client.post(URL, "{not json", content_type="application/json")
    assert response.status_code == 400 and "error" in response.json()
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert client.post(URL, [1, 2], format="json").status_code == 400


def test_an_unknown_model_is_404_model_not_found(client, fake_gemini):
    response = post(client, model="gpt-4o")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": response.json()["error"]["message"],
        "type": "invalid_request_error",
        "code": "model_not_found",
        "param": "model",
    }
    assert fake_gemini.generate_requests() == []


def test_lone_surrogates_do_not_reach_the_model(client, fake_gemini):
    raw = json.dumps(body()).replace("Hi there", "a\\ud800b")
    response = client.post(URL, raw, content_type="application/json")
    assert response.status_code == 200
    sent = fake_gemini.generate_requests()[-1]["body"]["contents"][-1]["parts"][0]["text"]
    assert sent == "a\ufffdb"


def test_an_unknown_v1_path_and_a_wrong_method_answer_in_openai_shape(client):
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.get(URL)
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_a_body_over_the_limit_is_413_in_openai_shape(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(client, messages=[{"role": "user", "content": "x" * 2000}])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


# --- refusals before the first byte -------------------------------------------------------------


def test_a_spent_budget_is_429_insufficient_quota_not_retried(client, user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 10

    response = post(client)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert response.json()["error"]["type"] == "insufficient_quota"
    assert response["x-should-retry"] == "false"
    assert "Retry-After" not in response
    assert not LedgerEntry.objects.exists()


def test_the_rate_limit_is_429_with_retry_after_and_shared_with_chat(client, settings):
    settings.MESSAGE_RATE_LIMIT_MS = 60_000
    assert post(client).status_code == 200

    response = post(client)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(response["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        (Script(error_status=500), 502, "upstream_error"),
        (Script(error_status=429, retry_after=3), 503, "upstream_rate_limited"),
        (Script(block_prompt="SAFETY"), 400, "content_blocked"),
    ],
)
def test_an_upstream_failure_before_output_is_a_status_and_nothing_is_billed(
    client, user, fake_gemini, script, status, code
):
    fake_gemini.script(script)

    response = post(client)

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert not LedgerEntry.objects.exists()
    assert_books_balance(user)


def test_no_provider_key_is_503(client, settings):
    settings.GEMINI_API_KEY = ""
    response = post(client)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "llm_unavailable"


# --- failures after output, and the budget's output cap -------------------------------------------


def test_a_stream_cut_after_output_ends_with_an_error_event_and_bills_the_partial_output(
    client, user, fake_gemini
):
    fake_gemini.script(Script(chunks=["one", " two", " three", " four"], drop_after=2))

    events = stream_events(post(client, stream=True, stream_options={"include_usage": True}))

    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["one", " two"]
    assert events[-1]["error"]["code"] == "upstream_error"
    assert "[DONE]" not in events
    entry = LedgerEntry.objects.get(user=user)
    assert entry.output_tokens > 0 and entry.source in ("counted", "estimated")
    assert_books_balance(user)


def test_a_non_streamed_completion_cut_after_output_is_502_and_bills_the_partial_output(
    client, user, fake_gemini
):
    fake_gemini.script(Script(chunks=["one", " two", " three"], drop_after=2))

    response = post(client)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert LedgerEntry.objects.get(user=user).output_tokens > 0
    assert_books_balance(user)


def test_the_budgets_output_cap_ends_the_stream_with_length(client, user, settings, fake_gemini):
    # Room for the input and a few output tokens only; the model overruns its cap.
    settings.DEFAULT_TOKEN_LIMIT = 40
    settings.SYSTEM_PROMPT = ""
    fake_gemini.script(Script(chunks=["word " * 10] * 10, usage=None))

    events = stream_events(post(client, stream=True))

    sent = fake_gemini.generate_requests()[-1]["body"]["generationConfig"]["maxOutputTokens"]
    assert sent < 40
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert len(events) < 12  # stopped before the model's ten chunks
    budget = TokenBudget.objects.get(user=user)
    assert budget.used <= budget.limit
    assert_books_balance(user)


def test_the_offline_model_serves_v1_too_and_ignores_sampling_options(client, settings, user):
    settings.LLM_PROVIDER = "local"
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 0
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["local-echo-1"]

    answer = post(client, model="local-echo-1", temperature=0.1, stop="zzz").json()

    assert answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens"] > 0
    assert LedgerEntry.objects.get(user=user).total == answer["usage"]["total_tokens"]
    assert_books_balance(user)
