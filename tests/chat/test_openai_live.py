"""The OpenAI-compatible API from the outside in: the real `openai` Python SDK against a real
gunicorn server, the real google-genai SDK behind it against the fake Gemini server. The key
is made the way a user makes one (register, JWT, POST /api/keys). PostgreSQL: the server
process shares the test database."""

import concurrent.futures
import uuid

import httpx
import openai
import pytest

from billing.models import LedgerEntry, TokenBudget
from tests.fakes.gemini import Script
from tests.ledger import assert_books_balance
from tests.live import PASSWORD, live_gunicorn, make_user_and_token, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MODEL = "gemini-2.5-flash"


def server_env(fake_gemini, **extra):
    return {
        "LLM_PROVIDER": "gemini",
        "GEMINI_API_KEY": "test-key-not-secret",
        "GEMINI_BASE_URL": fake_gemini.url,
        "GEMINI_MODEL": MODEL,
        "GEMINI_RETRY_ATTEMPTS": "1",
        "GEMINI_TIMEOUT_MS": "5000",
        **extra,
    }


def make_key(server) -> tuple[str, str, int]:
    """(username, API key, key id), through the HTTP API."""
    username, headers = make_user_and_token(server)
    created = httpx.post(f"{server.url}/api/keys", json={"name": "sdk"}, headers=headers).json()[
        "data"
    ]
    return username, created["key"], created["id"]


def sdk(server, key, **options) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{server.url}/v1", timeout=30, **options)


def completion_posts(server) -> int:
    return server.log().count('"POST /v1/chat/completions')


HELLO = [{"role": "user", "content": "Hello!"}]


def test_completions_streamed_and_not_are_billed_exactly_as_the_usage_they_report(
    tmp_path, fake_gemini
):
    fake_gemini.script(
        Script(chunks=["Hi", " there", "!"], usage=(25, 4)),
        Script(chunks=["Stream", "ed ", "reply"], usage=(31, 6), delay_ms=20),
        Script(chunks=["No", " usage chunk"], usage=(12, 2)),
    )
    with live_gunicorn(env=server_env(fake_gemini), tmp_path=tmp_path) as server:
        username, key, key_id = make_key(server)
        client = sdk(server, key)

        assert [m.id for m in client.models.list()] == [MODEL]

        answer = client.chat.completions.create(model=MODEL, messages=HELLO)

        streamed = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "Be terse."},
                *HELLO,
                {"role": "assistant", "content": "Hi there!"},
                {"role": "user", "content": "Stream it."},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(streamed)

        plain = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))

    assert answer.choices[0].message.content == "Hi there!"
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (25, 4)
    entry = LedgerEntry.objects.get(message_id=uuid.UUID(answer.id.removeprefix("chatcmpl-")))
    assert (entry.input_tokens, entry.output_tokens, entry.total) == (25, 4, 29)
    assert entry.api_key_id == key_id and entry.chat_id is None and entry.source == "provider"

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed reply"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "stop" and set(finals[:-1]) == {None}
    usage = chunks[-1].usage  # the usage chunk: last, with no choices
    assert chunks[-1].choices == [] and usage.total_tokens == 37
    streamed_entry = LedgerEntry.objects.get(
        message_id=uuid.UUID(chunks[0].id.removeprefix("chatcmpl-"))
    )
    assert (usage.prompt_tokens, usage.completion_tokens) == (31, 6)
    assert (streamed_entry.input_tokens, streamed_entry.output_tokens) == (31, 6)
    assert streamed_entry.api_key_id == key_id

    assert "".join(c.choices[0].delta.content or "" for c in plain) == "No usage chunk"
    assert all(c.usage is None for c in plain)
    assert LedgerEntry.objects.filter(api_key_id=key_id).count() == 3
    assert_books_balance(username)


def test_a_revoked_key_is_refused_with_401(tmp_path, fake_gemini):
    with live_gunicorn(env=server_env(fake_gemini), tmp_path=tmp_path) as server:
        username, key, key_id = make_key(server)
        client = sdk(server, key)
        assert client.chat.completions.create(model=MODEL, messages=HELLO).choices
        access = httpx.post(
            f"{server.url}/api/auth/token", json={"username": username, "password": PASSWORD}
        ).json()["data"]["access"]
        httpx.delete(
            f"{server.url}/api/keys/{key_id}", headers={"Authorization": f"Bearer {access}"}
        ).raise_for_status()

        with pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(openai.AuthenticationError):
            sdk(server, "sk-made-up-key").models.list()

    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    assert LedgerEntry.objects.filter(api_key_id=key_id).count() == 1


def test_a_spent_budget_is_429_insufficient_quota_and_the_sdk_does_not_retry(tmp_path, fake_gemini):
    env = server_env(fake_gemini, DEFAULT_TOKEN_LIMIT="20", GUNICORN_ACCESSLOG="-")
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, key, _ = make_key(server)
        client = sdk(server, key)  # the SDK's default retries (2) stay on

        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)

        assert refused.value.code == "insufficient_quota"
        assert refused.value.type == "insufficient_quota"
        # The access log is written once an answer is sent, so it can lag the SDK's raise:
        # a later request's line marks that every earlier request's line is in.
        httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        wait_until(lambda: '"GET /v1/models' in server.log(), timeout=10, message="the log")
        assert completion_posts(server) == 1  # x-should-retry: false was obeyed
    assert fake_gemini.generate_requests() == []
    assert_books_balance(username)


def test_the_rate_limit_is_429_with_retry_after(tmp_path, fake_gemini):
    env = server_env(fake_gemini, MESSAGE_RATE_LIMIT_MS="30000")
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        _, key, _ = make_key(server)
        client = sdk(server, key, max_retries=0)
        client.chat.completions.create(model=MODEL, messages=HELLO)

        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model=MODEL, messages=HELLO)

    assert refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 30


def test_an_upstream_failure_before_output_is_a_status_the_sdk_raises(tmp_path, fake_gemini):
    fake_gemini.script(Script(error_status=500), Script(error_status=500))
    with live_gunicorn(env=server_env(fake_gemini), tmp_path=tmp_path) as server:
        username, key, _ = make_key(server)
        client = sdk(server, key, max_retries=0)

        with pytest.raises(openai.InternalServerError) as streamed:
            client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        with pytest.raises(openai.InternalServerError) as plain:
            client.chat.completions.create(model=MODEL, messages=HELLO)

    for failure in (streamed.value, plain.value):
        assert failure.status_code == 502 and failure.code == "upstream_error"
    assert not LedgerEntry.objects.exists()  # nothing was consumed
    assert_books_balance(username)


def test_an_upstream_failure_after_output_ends_the_stream_with_an_error_and_bills_it(
    tmp_path, fake_gemini
):
    fake_gemini.script(Script(chunks=["one", " two", " three", " four"], drop_after=2))
    with live_gunicorn(env=server_env(fake_gemini), tmp_path=tmp_path) as server:
        username, key, key_id = make_key(server)
        client = sdk(server, key, max_retries=0)
        received = []

        stream = client.chat.completions.create(
            model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        with pytest.raises(openai.APIError) as failed:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content)

    assert received == ["one", " two"]
    assert failed.value.code == "upstream_error"
    entry = LedgerEntry.objects.get(api_key_id=key_id)
    assert entry.output_tokens > 0 and entry.total > 0  # the partial output is billed
    assert_books_balance(username)


def test_an_unsupported_parameter_is_400_naming_it(tmp_path, fake_gemini):
    with live_gunicorn(env=server_env(fake_gemini), tmp_path=tmp_path) as server:
        _, key, _ = make_key(server)
        client = sdk(server, key)
        with pytest.raises(openai.BadRequestError) as tools:
            client.chat.completions.create(
                model=MODEL,
                messages=HELLO,
                tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
            )
        with pytest.raises(openai.BadRequestError) as many:
            client.chat.completions.create(model=MODEL, messages=HELLO, n=3)
        with pytest.raises(openai.BadRequestError) as image:
            client.chat.completions.create(
                model=MODEL,
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
                    }
                ],
            )

    assert (tools.value.code, tools.value.param) == ("unsupported_parameter", "tools")
    assert (many.value.code, many.value.param) == ("unsupported_parameter", "n")
    assert image.value.param == "messages[0].content[0]"
    assert fake_gemini.generate_requests() == []


def test_parallel_streams_with_one_key_never_overspend(tmp_path, fake_gemini):
    # One reservation is about 60 input + 200 output tokens: the budget covers a few.
    fake_gemini.default = Script(chunks=["word "] * 20, delay_ms=20, usage=(50, 150))
    env = server_env(fake_gemini, DEFAULT_TOKEN_LIMIT="1200", GEMINI_MAX_OUTPUT_TOKENS="200")
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, key, key_id = make_key(server)
        client = sdk(server, key, max_retries=0)

        def complete(_):
            try:
                stream = client.chat.completions.create(
                    model=MODEL,
                    messages=HELLO,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                return "ok", list(stream)[-1].usage.total_tokens
            except openai.RateLimitError as refused:
                return refused.code, 0

        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(complete, range(20)))

    outcomes = [outcome for outcome, _ in results]
    assert set(outcomes) <= {"ok", "insufficient_quota"}
    assert outcomes.count("ok") >= 1 and outcomes.count("insufficient_quota") >= 1
    budget = TokenBudget.objects.get(user__username=username)
    assert budget.used <= budget.limit
    entries = LedgerEntry.objects.filter(api_key_id=key_id)
    assert entries.count() == outcomes.count("ok")
    # The usage chunk reports what the model consumed; the budget is charged that, clamped
    # to what the limit had left (the provider may report more than the last hold allowed).
    assert sum(total for _, total in results) == sum(
        entry.input_tokens + entry.output_tokens for entry in entries
    )
    assert sum(entry.total for entry in entries) == budget.used
    assert_books_balance(username)


def test_a_client_that_goes_away_mid_stream_is_billed_for_what_was_consumed(tmp_path, fake_gemini):
    from tests.live import open_raw_stream, read_events, wait_until

    fake_gemini.script(Script(chunks=["word "] * 40, delay_ms=100, usage=(20, 40)))
    with live_gunicorn(env=server_env(fake_gemini), tmp_path=tmp_path) as server:
        username, key, key_id = make_key(server)
        body = b'{"model": "%s", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
        sock = open_raw_stream(
            server,
            "/v1/chat/completions",
            {"Authorization": f"Bearer {key}"},
            body % MODEL.encode(),
        )
        read_events(sock, 3)
        sock.close()  # gone after a few chunks

        entry = wait_until(
            lambda: LedgerEntry.objects.filter(api_key_id=key_id).first(),
            timeout=20,
            message="the settle of the abandoned stream",
        )
    assert entry.output_tokens > 0 and entry.total > 0
    assert_books_balance(username)
