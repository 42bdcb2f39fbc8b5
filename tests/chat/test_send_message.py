"""POST /api/chat/{id}/message through the HTTP surface, with the offline model."""

import threading
import uuid

import pytest
from django.db import connection
from model_bakery import baker

from billing.models import LedgerEntry, TokenBudget, TokenReservation
from billing.periods import current_period
from chat.models import Message
from tests.chat.sse_client import parse_events, streamed_body
from tests.ledger import assert_books_balance
from tests.messages import send
from tests.queries import StatementsOfEveryThread

# The reply's run works on its own thread, so what the test creates must be committed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("offline_model")]


def test_reply_streams_chunk_by_chunk_and_ends_with_the_bill(auth_client, user, chat):
    response = send(auth_client, chat.pk)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert not response.has_header("Connection")
    raw = streamed_body(response)
    assert raw.startswith(b"id: 1\ndata: ")
    events = parse_events(raw)
    texts = [e["text"] for e in events if "text" in e]
    assert len(texts) > 1
    done = events[-1]
    assert done["done"] is True and "error" not in done
    assert done["finish_reason"] == "stop"

    reply = Message.objects.get(pk=done["message_id"])
    question = Message.objects.get(pk=done["user_message_id"])
    assert question.role == "user" and question.content.startswith("Describe")
    assert reply.role == "model" and reply.status == "complete"
    assert reply.content == "".join(texts)
    assert done["tokens_used"] == reply.tokens_used > 0
    assert done["usage"]["input_tokens"] == reply.input_tokens
    assert done["usage"]["output_tokens"] == reply.output_tokens
    assert done["usage"]["source"] == reply.token_source == "provider"
    entry = LedgerEntry.objects.get(message_id=reply.pk)
    assert entry.total == reply.tokens_used and entry.chat_id == chat.pk
    budget = TokenBudget.objects.get(user=user)
    assert done["budget"] == {
        "limit": budget.limit,
        "used": budget.used,
        "remaining": budget.limit - budget.used - budget.reserved,
    }
    assert budget.used == reply.tokens_used
    assert_books_balance(user)


def test_tokens_are_saved_after_each_message_and_history_is_sent(auth_client, user, chat):
    first = parse_events(streamed_body(send(auth_client, chat.pk, "first question")))[-1]
    second = parse_events(streamed_body(send(auth_client, chat.pk, "second question")))[-1]

    assert Message.objects.filter(chat=chat).count() == 4
    budget = TokenBudget.objects.get(user=user)
    assert budget.used == first["tokens_used"] + second["tokens_used"]
    # The second exchange carries the first as context, so it bills more input.
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    detail = auth_client.get(f"/api/chat/{chat.pk}").json()["data"]
    assert [m["role"] for m in detail["messages"]] == ["user", "model", "user", "model"]
    assert detail["messages"][1]["tokens_used"] == first["tokens_used"]
    assert_books_balance(user)


@pytest.mark.parametrize(
    "payload",
    [
        {"message": ""},
        {"message": "   \n\t "},
        {"message": "x" * 5001},
        {"message": 42},
        {"message": ["a list"]},
        {"message": None},
        {},
    ],
    ids=["empty", "whitespace", "5001-chars", "number", "list", "null", "missing"],
)
def test_invalid_message_is_400_and_saves_nothing(auth_client, chat, payload):
    response = auth_client.post(f"/api/chat/{chat.pk}/message", payload, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == "validation_error"
    assert "message" in body["error"]["details"]
    assert not Message.objects.exists()


def test_a_5000_character_message_is_accepted(auth_client, chat, settings):
    settings.DEFAULT_TOKEN_LIMIT = 1_000_000
    response = send(auth_client, chat.pk, "y" * 5000)
    assert response.status_code == 200
    assert parse_events(streamed_body(response))[-1]["done"] is True
    assert Message.objects.get(role="user").content == "y" * 5000


def test_malformed_json_is_400(auth_client, chat):
    response = auth_client.post(
        f"/api/chat/{chat.pk}/message", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_invalid_chat_id_is_400(auth_client):
    response = send(auth_client, "not-a-uuid")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_chat_id"


def test_absent_chat_is_404(auth_client):
    response = send(auth_client, uuid.uuid4())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "chat_not_found"


def test_another_users_chat_is_403_and_gets_no_message(api_client, other_user, chat):
    api_client.force_authenticate(other_user)
    response = send(api_client, chat.pk)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert not Message.objects.exists()


def test_deleted_chat_is_404_for_its_owner(auth_client, chat):
    assert auth_client.delete(f"/api/chat/{chat.pk}").status_code == 200
    response = send(auth_client, chat.pk)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "chat_not_found"


def test_anonymous_is_401(api_client, chat):
    response = send(api_client, chat.pk)
    assert response.status_code == 401
    assert response.json()["status"] == "error"


def test_spent_budget_is_403_before_streaming_and_saves_nothing(auth_client, user, chat, settings):
    settings.DEFAULT_TOKEN_LIMIT = 30  # less than the system prompt alone

    response = send(auth_client, chat.pk)

    assert response.status_code == 403
    body = response.json()
    assert body["error"]["code"] == "token_limit_exceeded"
    assert body["error"]["details"]["limit"] == 30
    assert not Message.objects.exists()
    assert not TokenReservation.objects.exists()


def test_the_budget_refusal_says_what_is_needed_and_what_remains(auth_client, user, chat, settings):
    settings.DEFAULT_TOKEN_LIMIT = 60
    baker.make("billing.TokenBudget", user=user, period=current_period(), limit=60, used=25)

    response = send(auth_client, chat.pk)

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["details"]["remaining"] == 35
    needed = error["details"]["needed"]
    assert needed > 35
    assert f"needs about {needed} tokens" in error["message"]
    assert "35 remain" in error["message"]


def test_rate_limit_is_429_with_retry_after(auth_client, chat, settings):
    settings.MESSAGE_RATE_LIMIT_MS = 60_000
    first = send(auth_client, chat.pk)
    assert first.status_code == 200
    streamed_body(first)  # the reply has ended: the next refusal is the rate limit's

    response = send(auth_client, chat.pk, "again, at once")

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert Message.objects.filter(role="user").count() == 1


def test_model_unavailable_is_503(auth_client, chat, settings):
    settings.LLM_PROVIDER = "gemini"
    settings.GEMINI_API_KEY = ""

    response = send(auth_client, chat.pk)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "llm_unavailable"
    assert not Message.objects.exists()


def test_chat_detail_shows_token_totals(auth_client, chat):
    done = parse_events(streamed_body(send(auth_client, chat.pk)))[-1]
    data = auth_client.get(f"/api/chat/{chat.pk}").json()["data"]
    assert data["token_stats"]["total"] == done["tokens_used"]
    assert data["token_stats"]["message_count"] == 1


def test_one_message_costs_a_fixed_small_number_of_queries(auth_client, chat):
    streamed_body(send(auth_client, chat.pk, "warm up"))  # opens the month's budget row
    with StatementsOfEveryThread() as recorded:
        events = parse_events(streamed_body(send(auth_client, chat.pk, "counted")))
    assert len(events) > 3
    # The request, before streaming: on PostgreSQL one statement (chat/reply/setup.py: the
    # chat locked, the checks, the history, the hold, the question, the reply's row); on
    # SQLite one transaction: the chat (locked), "no reply generating", the history, the
    # budget (locked), the hold, the reservation row, the question, the reply's row.
    postgres = connection.vendor == "postgresql"
    set_up = ("WITH",) if postgres else ("SELECT",) * 4 + ("UPDATE", "INSERT", "INSERT", "INSERT")
    assert recorded.of(threading.current_thread().name) == list(set_up)
    # The run, at its end: on PostgreSQL one statement (chat/reply/settle.py: the reply saved
    # if still streaming, the reservation and its budget locked, the charge, the settled
    # hold, the ledger entry, the alerts); on SQLite one transaction: the reply saved, the
    # locks, the charge, the settled hold, the ledger entry. Then the last batch of its event
    # log (with its done event). Nothing per chunk, and the done event's budget comes from
    # the settle, not a re-read.
    end = ("WITH",) if postgres else ("UPDATE", "SELECT", "UPDATE", "UPDATE", "INSERT")
    assert recorded.of("reply-run") == [*end, "INSERT"]
