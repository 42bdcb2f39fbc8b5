"""The message endpoint over the real SDK and the fake Gemini server: upstream failures
before the first byte get real statuses; after it, a final error event, and nothing lost."""

import pytest
from django.db.models import Sum
from model_bakery import baker

from billing.models import LedgerEntry, TokenBudget, TokenReservation
from chat.models import Chat, Message
from tests.chat.sse_client import parse_events, streamed_body
from tests.fakes.gemini import Script

# The reply's run works on its own thread, so what the test creates must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.MESSAGE_RATE_LIMIT_MS = 0


@pytest.fixture
def chat(user):
    return baker.make(Chat, owner=user)


def send(client, chat, message="Tell me about pixel art"):
    return client.post(f"/api/chat/{chat.pk}/message", {"message": message}, format="json")


def assert_books_balance(user):
    budget = TokenBudget.objects.get(user=user)
    total = LedgerEntry.objects.filter(user=user).aggregate(t=Sum("total"))["t"] or 0
    assert budget.used == total
    assert budget.reserved == 0
    assert not TokenReservation.objects.filter(state="active").exists()


def test_tokens_match_the_providers_usage_report_and_the_ledger(
    auth_client, user, chat, fake_gemini
):
    fake_gemini.script(Script(chunks=["Pixel", " art", " is fun."], usage=(40, 6)))

    events = parse_events(streamed_body(send(auth_client, chat)))

    assert [e["text"] for e in events[:-1]] == ["Pixel", " art", " is fun."]
    done = events[-1]
    assert done["usage"] == {"input_tokens": 40, "output_tokens": 6, "source": "provider"}
    assert done["tokens_used"] == 46
    assert LedgerEntry.objects.get(message_id=done["message_id"]).total == 46
    assert TokenBudget.objects.get(user=user).used == 46
    # Only the system prompt was ever counted (once, then cached); the exchange itself
    # was billed from the usage report, so a second message makes no count call at all.
    assert len(fake_gemini.count_requests()) == 1
    parse_events(streamed_body(send(auth_client, chat, "and another")))
    assert len(fake_gemini.count_requests()) == 1
    assert_books_balance(user)


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        (Script(error_status=500), 502, "upstream_error"),
        (Script(error_status=429, retry_after=9), 503, "upstream_rate_limited"),
        (Script(block_prompt="SAFETY"), 400, "content_blocked"),
    ],
    ids=["500", "429", "blocked-prompt"],
)
def test_failure_before_output_is_a_real_status(
    auth_client, user, chat, fake_gemini, script, status, code
):
    fake_gemini.default = script

    response = send(auth_client, chat)

    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    if code == "upstream_rate_limited":
        assert response["Retry-After"] == "9"
    question = Message.objects.get(role="user")
    assert question.content == "Tell me about pixel art"
    reply = Message.objects.get(role="model")
    assert reply.status == "failed" and reply.error_code == code and reply.content == ""
    assert_books_balance(user)
    assert TokenBudget.objects.get(user=user).used == 0


def test_silence_before_the_first_chunk_is_504(auth_client, user, chat, fake_gemini, settings):
    settings.GEMINI_TIMEOUT_MS = 300
    settings.GEMINI_RETRY_ATTEMPTS = 1
    fake_gemini.script(Script(stall_after=0, stall_s=5))

    response = send(auth_client, chat)

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert Message.objects.filter(role="user").count() == 1
    assert_books_balance(user)


def test_failure_after_output_is_an_error_event_and_the_partial_reply_is_kept(
    auth_client, user, chat, fake_gemini
):
    fake_gemini.script(Script(chunks=["Half", " of", " a", " reply"], drop_after=2))

    response = send(auth_client, chat)

    assert response.status_code == 200
    events = parse_events(streamed_body(response))
    assert [e["text"] for e in events[:-1]] == ["Half", " of"]
    done = events[-1]
    assert done["done"] is True
    assert done["error"]["code"] == "upstream_error"
    reply = Message.objects.get(pk=done["message_id"])
    assert reply.status == "partial" and reply.content == "Half of"
    assert reply.tokens_used == done["tokens_used"] > 0
    assert reply.token_source in ("counted", "estimated")
    assert Message.objects.filter(role="user").count() == 1
    assert_books_balance(user)


def test_a_blocked_reply_after_the_prompt_is_400_content_blocked(
    auth_client, user, chat, fake_gemini
):
    fake_gemini.script(Script(block_reply=True))
    response = send(auth_client, chat)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_blocked"
    assert_books_balance(user)


def test_nearly_spent_budget_caps_the_providers_max_output(
    auth_client, user, chat, fake_gemini, settings
):
    settings.DEFAULT_TOKEN_LIMIT = 400
    fake_gemini.script(Script(chunks=["short"], usage=(50, 3)))

    done = parse_events(streamed_body(send(auth_client, chat)))[-1]

    [request] = fake_gemini.generate_requests()
    cap = request["body"]["generationConfig"]["maxOutputTokens"]
    assert 0 < cap < settings.GEMINI_MAX_OUTPUT_TOKENS
    assert "error" not in done
    assert_books_balance(user)


def test_the_stream_stops_when_the_budget_runs_out_mid_reply(
    auth_client, user, chat, fake_gemini, settings
):
    settings.DEFAULT_TOKEN_LIMIT = 300
    # The fake ignores maxOutputTokens and keeps talking: 40 chunks of 40 characters.
    fake_gemini.script(Script(chunks=["x" * 40] * 40, usage=None))

    events = parse_events(streamed_body(send(auth_client, chat)))

    done = events[-1]
    assert done["error"]["code"] == "token_limit_reached"
    assert len(events) - 1 < 40
    reply = Message.objects.get(pk=done["message_id"])
    assert reply.status == "partial" and reply.error_code == "token_limit_reached"
    budget = TokenBudget.objects.get(user=user)
    assert budget.used <= budget.limit
    assert_books_balance(user)
