"""The message endpoint over the real SDK and the fake Gemini server: upstream failures
before the first byte get real statuses; after it, a final error event, and nothing lost."""

import pytest

from billing.models import LedgerEntry, TokenBudget
from chat.models import Message
from tests.chat.sse_client import parse_events, streamed_body
from tests.fakes.gemini import Script
from tests.ledger import assert_books_balance
from tests.messages import DEFAULT_MESSAGE, send

# The reply's run works on its own thread, so what the test creates must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.MESSAGE_RATE_LIMIT_MS = 0


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
    assert question.content == DEFAULT_MESSAGE
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


def test_a_stream_cut_after_output_is_upstream_incomplete_and_its_output_is_billed(
    auth_client, user, chat, fake_gemini
):
    # Two chunks, then a clean close of a connection-delimited body: no finishReason.
    fake_gemini.script(Script(chunks=["Once", " upon", " a", " time"], usage=(40, 8), cut_after=2))

    response = send(auth_client, chat)

    assert response.status_code == 200
    events = parse_events(streamed_body(response))
    assert [e["text"] for e in events[:-1]] == ["Once", " upon"]
    done = events[-1]
    assert done["error"]["code"] == "upstream_incomplete"
    assert done["finish_reason"] == "error"
    assert done["usage"]["output_tokens"] > 0
    assert done["usage"]["source"] in ("counted", "estimated")
    reply = Message.objects.get(pk=done["message_id"])
    assert reply.status == "partial" and reply.content == "Once upon"
    assert reply.error_code == "upstream_incomplete"
    assert reply.output_tokens == done["usage"]["output_tokens"]
    entry = LedgerEntry.objects.get(message_id=reply.pk)
    assert entry.output_tokens > 0 and entry.total == done["tokens_used"]
    assert_books_balance(user)


def test_a_stream_cut_before_any_output_is_502_upstream_incomplete(
    auth_client, user, chat, fake_gemini
):
    fake_gemini.script(Script(chunks=["never", " sent"], cut_after=0))

    response = send(auth_client, chat)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_incomplete"
    reply = Message.objects.get(role="model")
    assert reply.status == "failed" and reply.tokens_used == 0
    assert_books_balance(user)


@pytest.mark.parametrize("thinking", [0, 25])
def test_a_usage_report_without_the_output_count_bills_the_output_we_count(
    auth_client, user, chat, fake_gemini, thinking
):
    text = "A reply of some forty characters or so.."
    fake_gemini.script(
        Script(
            chunks=[text[:20], text[20:]],
            usage=(40, 0),
            usage_without_output=True,
            thinking_tokens=thinking,
        )
    )

    done = parse_events(streamed_body(send(auth_client, chat)))[-1]

    assert "error" not in done and done["finish_reason"] == "stop"
    # The fake's countTokens answers ceil(characters / 4): 10 for the reply.
    expected = {"input_tokens": 40, "output_tokens": 10 + thinking, "source": "counted"}
    assert done["usage"] == expected
    assert done["tokens_used"] == 50 + thinking
    assert LedgerEntry.objects.get(message_id=done["message_id"]).total == 50 + thinking
    assert_books_balance(user)


def test_a_reply_with_nul_and_lone_surrogates_is_stored_sent_and_billed(
    auth_client, user, chat, fake_gemini
):
    # The fake sends them as JSON escapes (\u0000, \ud800), as a real server could.
    fake_gemini.script(Script(chunks=["nul\x00here", " lone\ud800there", " end"], usage=(20, 6)))

    events = parse_events(streamed_body(send(auth_client, chat)))

    assert [e["text"] for e in events[:-1]] == ["nul\ufffdhere", " lone\ufffdthere", " end"]
    done = events[-1]
    assert "error" not in done
    reply = Message.objects.get(pk=done["message_id"])
    assert reply.content == "nul\ufffdhere lone\ufffdthere end"
    assert reply.status == "complete"
    assert LedgerEntry.objects.get(message_id=reply.pk).total == done["tokens_used"] == 26
    assert_books_balance(user)


# The reply's row exists from the set-up (status streaming); what can fail is saving its
# text at the end. These triggers refuse any model reply's row that gets text.
REFUSE_MODEL_REPLIES = {
    "postgresql": [
        """CREATE FUNCTION refuse_model_reply() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'replies refused by a test trigger'; END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER refuse_model_reply BEFORE UPDATE ON chat_message
           FOR EACH ROW WHEN (NEW.role = 'model' AND NEW.content <> '')
           EXECUTE FUNCTION refuse_model_reply()""",
    ],
    "sqlite": [
        """CREATE TRIGGER refuse_model_reply BEFORE UPDATE ON chat_message
           WHEN NEW.role = 'model' AND NEW.content <> ''
           BEGIN SELECT RAISE(ABORT, 'replies refused'); END""",
    ],
}


DROP_REFUSAL = {
    "postgresql": [
        "DROP TRIGGER refuse_model_reply ON chat_message",
        "DROP FUNCTION refuse_model_reply()",
    ],
    "sqlite": ["DROP TRIGGER refuse_model_reply"],
}


@pytest.fixture
def replies_refused():
    """The refusing trigger, dropped again after the test (a transactional test's flush
    empties tables but keeps triggers)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in REFUSE_MODEL_REPLIES[connection.vendor]:
            cursor.execute(statement)
    yield
    with connection.cursor() as cursor:
        for statement in DROP_REFUSAL[connection.vendor]:
            cursor.execute(statement)


def test_tokens_are_settled_even_when_the_reply_cannot_be_saved(
    auth_client, user, chat, fake_gemini, caplog, replies_refused
):
    fake_gemini.script(Script(chunks=["Kept", " in the", " ledger"], usage=(30, 7)))

    events = parse_events(streamed_body(send(auth_client, chat)))

    assert [e["text"] for e in events[:-1]] == ["Kept", " in the", " ledger"]
    done = events[-1]
    assert done["error"]["code"] == "internal_error"
    assert done["tokens_used"] == 37
    # Its text is lost, its row is ended (not left streaming), and the bill stands.
    reply = Message.objects.get(role="model")
    assert str(reply.pk) == done["message_id"]
    assert reply.status == "failed" and reply.content == "" and reply.tokens_used == 37
    assert reply.error_code == "internal_error"
    entry = LedgerEntry.objects.get(user=user, kind="exchange")
    assert entry.total == 37 and str(entry.message_id) == done["message_id"]
    assert TokenBudget.objects.get(user=user).used == 37
    assert_books_balance(user)
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert done["message_id"] in record.getMessage()
    assert done["user_message_id"] in record.getMessage()
