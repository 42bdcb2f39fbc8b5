"""A reply is a run: resume, stop, one reply at a time, the generating reply in the chat's
detail, the database event log. Through the HTTP surface, in-process (the run is on its own
thread, hence transactional tests); the live tests are in test_reply_runs_live.py."""

import json
import threading
import uuid

import pytest
from django.db import connection
from model_bakery import baker

from billing.models import LedgerEntry
from chat.models import Chat, Message, ReplyEvent
from chat.reply.eventlog import shared_log
from tests.chat.sse_client import parse_events, streamed_body
from tests.ledger import assert_books_balance
from tests.messages import send
from tests.queries import StatementsOfEveryThread

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _offline_model(offline_model):
    offline_model.LOCAL_LLM_CHUNKS = 12


def stream(client, chat_id, reply_id, *, after=None, last_event_id=None):
    path = f"/api/chat/{chat_id}/messages/{reply_id}/stream"
    if after is not None:
        path += f"?after={after}"
    headers = {"HTTP_LAST_EVENT_ID": str(last_event_id)} if last_event_id is not None else {}
    return client.get(path, **headers)


def stop(client, chat_id, reply_id):
    return client.post(f"/api/chat/{chat_id}/messages/{reply_id}/stop")


def event_ids(raw: bytes) -> list[int]:
    return [int(line[4:]) for line in raw.decode().split("\n") if line.startswith("id: ")]


def texts(events) -> str:
    return "".join(e["text"] for e in events if "text" in e)


def test_the_message_response_names_the_reply_and_its_events_have_ids(auth_client, chat):
    response = send(auth_client, chat.pk)
    raw = streamed_body(response)
    events = parse_events(raw)
    reply = Message.objects.get(role="model")
    assert response["X-Message-Id"] == str(reply.pk) == events[-1]["message_id"]
    assert event_ids(raw) == list(range(1, 14))  # 12 text events, then done
    assert reply.status == "complete" and reply.content == texts(events)
    assert reply.stream_offsets[-1] == len(reply.content) and len(reply.stream_offsets) == 12
    assert reply.reply_to_id == uuid.UUID(events[-1]["user_message_id"])


def test_a_resumed_stream_gives_a_third_party_sse_parser_only_json_events(auth_client, chat):
    """httpx-sse (like several clients) hands out a block holding only `retry:` as an event
    with empty data; a resumed stream must not send one, or `json.loads(event.data)` fails."""
    from httpx_sse._decoders import SSEDecoder

    first = parse_events(streamed_body(send(auth_client, chat.pk)))
    reply_id = first[-1]["message_id"]

    raw = streamed_body(stream(auth_client, chat.pk, reply_id, after=10))

    decoder = SSEDecoder()
    decoded = [e for line in raw.decode().splitlines() if (e := decoder.decode(line))]
    assert [json.loads(e.data) for e in decoded] == first[10:]
    assert [e.id for e in decoded] == ["11", "12", "13"]
    assert decoded[0].retry == 1000  # the reconnection delay still reaches EventSource


@pytest.mark.parametrize("how", ["last-event-id", "after"])
def test_resume_of_an_ended_reply_from_its_log(auth_client, chat, how):
    first = parse_events(streamed_body(send(auth_client, chat.pk)))
    reply_id = first[-1]["message_id"]
    kwargs = {"last_event_id": 4} if how == "last-event-id" else {"after": 4}

    response = stream(auth_client, chat.pk, reply_id, **kwargs)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    chunks = list(response.streaming_content)
    raw = b"".join(chunks)
    assert event_ids(raw) == list(range(5, 14))  # each event with its own id
    # Read from the log together, written together: the resume's opening comment, then
    # one write for the nine events (not one write, and one send, each).
    assert len(chunks) == 2 and event_ids(chunks[1]) == list(range(5, 14))
    rest = parse_events(raw)
    assert rest == first[4:]  # the same events, the done included
    assert texts(first[:4]) + texts(rest) == Message.objects.get(pk=reply_id).content


def test_the_header_wins_over_the_query_and_no_id_replays_from_the_start(auth_client, chat):
    first = parse_events(streamed_body(send(auth_client, chat.pk)))
    reply_id = first[-1]["message_id"]
    both = parse_events(
        streamed_body(stream(auth_client, chat.pk, reply_id, after=1, last_event_id=10))
    )
    assert texts(both) == texts(first[10:])
    everything = parse_events(streamed_body(stream(auth_client, chat.pk, reply_id)))
    assert texts(everything) == texts(first)


def test_resume_of_an_ended_reply_after_its_log_expired_comes_from_the_database(
    auth_client, user, chat, settings
):
    first = parse_events(streamed_body(send(auth_client, chat.pk)))
    reply_id = first[-1]["message_id"]
    settings.REPLY_LOG_TTL_S = 0
    assert shared_log().expire() == 13  # the database log (no Redis here)
    assert not ReplyEvent.objects.exists()

    raw = streamed_body(stream(auth_client, chat.pk, reply_id, last_event_id=4))

    # The rest of the stored text as one event (the id of the last text event), then done.
    assert event_ids(raw) == [12, 13]
    rest_text, done = parse_events(raw)
    stored = Message.objects.get(pk=reply_id)
    assert texts(first[:4]) + rest_text["text"] == stored.content
    assert done["done"] is True and done["message_id"] == reply_id
    assert done["tokens_used"] == stored.tokens_used == first[-1]["tokens_used"]
    assert done["usage"] == first[-1]["usage"] and done["finish_reason"] == "stop"
    assert done["budget"] == first[-1]["budget"]
    # After the last text event: the done alone.
    assert event_ids(streamed_body(stream(auth_client, chat.pk, reply_id, after=12))) == [13]


@pytest.mark.parametrize("after", ["-1", "x", "1.5"])
def test_a_bad_resume_point_is_400(auth_client, chat, after):
    reply_id = parse_events(streamed_body(send(auth_client, chat.pk)))[-1]["message_id"]
    response = auth_client.get(f"/api/chat/{chat.pk}/messages/{reply_id}/stream?after={after}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_resume_and_stop_of_another_users_reply_or_in_a_deleted_chat_are_404(
    auth_client, api_client, other_user, chat
):
    reply_id = parse_events(streamed_body(send(auth_client, chat.pk)))[-1]["message_id"]
    question_id = Message.objects.get(role="user").pk
    api_client.force_authenticate(other_user)
    for client, message_id in ((api_client, reply_id), (auth_client, question_id)):
        for response in (
            stream(client, chat.pk, message_id),
            stop(client, chat.pk, message_id),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "message_not_found"
    assert auth_client.delete(f"/api/chat/{chat.pk}").status_code == 200
    gone = stream(auth_client, chat.pk, reply_id)
    assert gone.status_code == 404 and gone["Content-Type"].startswith("application/json")
    assert stream(auth_client, chat.pk, "not-a-uuid").json()["error"]["code"] == (
        "invalid_message_id"
    )


def test_an_event_source_client_is_answered_not_406(auth_client, chat):
    reply_id = parse_events(streamed_body(send(auth_client, chat.pk)))[-1]["message_id"]
    ok = auth_client.get(
        f"/api/chat/{chat.pk}/messages/{reply_id}/stream", HTTP_ACCEPT="text/event-stream"
    )
    assert ok.status_code == 200 and parse_events(streamed_body(ok))[-1]["done"] is True
    missing = auth_client.get(
        f"/api/chat/{chat.pk}/messages/{uuid.uuid4()}/stream", HTTP_ACCEPT="text/event-stream"
    )
    assert missing.status_code == 404 and missing.json()["status"] == "error"


def test_a_second_message_while_a_reply_generates_is_409(auth_client, user, chat, settings):
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 30
    first = send(auth_client, chat.pk)
    assert first.status_code == 200  # the response has begun; the run goes on

    second = send(auth_client, chat.pk, "and another thing")

    assert second.status_code == 409
    assert second.json()["error"]["code"] == "reply_in_progress"
    assert Message.objects.filter(role="user").count() == 1  # nothing of it was saved
    parse_events(streamed_body(first))
    third = send(auth_client, chat.pk, "now it is my turn")
    assert third.status_code == 200
    parse_events(streamed_body(third))
    assert_books_balance(user)


@pytest.mark.postgres
def test_the_database_allows_one_generating_reply_per_chat(chat):
    from django.db import IntegrityError, transaction

    baker.make(Message, chat=chat, role="model", status="streaming")
    with pytest.raises(IntegrityError), transaction.atomic():
        baker.make(Message, chat=chat, role="model", status="streaming")


def test_the_chat_detail_shows_a_generating_reply_with_its_text_so_far(auth_client, chat, settings):
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 40
    response = send(auth_client, chat.pk)
    chunks = iter(response.streaming_content)
    received = parse_events(next(chunks) + next(chunks))

    detail = auth_client.get(f"/api/chat/{chat.pk}").json()["data"]

    reply = detail["messages"][-1]
    assert reply["id"] == response["X-Message-Id"] and reply["status"] == "streaming"
    assert reply["content"].startswith(texts(received)) and reply["content"]
    rest = parse_events(b"".join(chunks))
    assert auth_client.get(f"/api/chat/{chat.pk}").json()["data"]["messages"][-1] == {
        **reply,
        "status": "complete",
        "content": texts(received + rest),
        "tokens_used": rest[-1]["tokens_used"],
        "input_tokens": rest[-1]["usage"]["input_tokens"],
        "output_tokens": rest[-1]["usage"]["output_tokens"],
        "token_source": "provider",
        "finish_reason": "stop",
    }


def test_stop_from_another_request_ends_the_reply_for_every_listener(
    auth_client, user, chat, settings
):
    settings.LOCAL_LLM_CHUNKS = 200
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 20
    response = send(auth_client, chat.pk)
    reply_id = response["X-Message-Id"]
    chunks = iter(response.streaming_content)
    received = parse_events(next(chunks) + next(chunks))

    stopped = stop(auth_client, chat.pk, reply_id)

    assert stopped.status_code == 200
    body = stopped.json()
    assert body["status"] == "success"
    saved = body["data"]
    assert saved["id"] == reply_id and saved["finish_reason"] == "stopped"
    assert saved["status"] == "partial"
    rest = parse_events(b"".join(chunks))
    done = rest[-1]
    assert done["done"] is True and done["finish_reason"] == "stopped" and "error" not in done
    assert saved["content"] == texts(received + rest)
    assert len(saved["content"]) > 0 and len(received + rest) - 1 < 200
    # A follower that joins now gets the same end.
    follower = parse_events(streamed_body(stream(auth_client, chat.pk, reply_id)))
    assert follower[-1] == done and texts(follower) == saved["content"]
    # Billed once, from the provider's running usage report.
    entry = LedgerEntry.objects.get(message_id=reply_id)
    assert entry.total == saved["tokens_used"] == done["tokens_used"] > 0
    assert entry.source == saved["token_source"] == "provider"
    again = stop(auth_client, chat.pk, reply_id)
    assert again.status_code == 409 and again.json()["error"]["code"] == "reply_finished"
    assert_books_balance(user)


def test_stop_of_an_ended_reply_is_409(auth_client, chat):
    reply_id = parse_events(streamed_body(send(auth_client, chat.pk)))[-1]["message_id"]
    response = stop(auth_client, chat.pk, reply_id)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "reply_finished"
    assert Message.objects.get(pk=reply_id).finish_reason == "stop"


@pytest.mark.postgres
def test_two_racing_stops_bill_once(auth_client, user, chat, settings):
    settings.LOCAL_LLM_CHUNKS = 200
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 20
    response = send(auth_client, chat.pk)
    reply_id = response["X-Message-Id"]
    barrier = threading.Barrier(2)
    statuses = []

    def stop_it():
        barrier.wait()
        try:
            statuses.append(stop(auth_client, chat.pk, reply_id).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=stop_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    parse_events(streamed_body(response))

    assert sorted(statuses) == [200, 409]
    assert LedgerEntry.objects.filter(message_id=reply_id).count() == 1
    assert_books_balance(user)


def test_the_database_log_is_written_in_batches_not_per_event(auth_client, chat, settings):
    settings.LOCAL_LLM_CHUNKS = 30
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 10  # 0.3 s of stream: about 3 batches of 100 ms
    with StatementsOfEveryThread() as recorded:
        events = parse_events(streamed_body(send(auth_client, chat.pk)))
    reply_id = events[-1]["message_id"]
    logged = list(ReplyEvent.objects.filter(reply_id=reply_id).order_by("event_id"))
    assert [e.event_id for e in logged] == list(range(1, 32))
    assert [e.data for e in logged] == events
    assert [e.final for e in logged] == [False] * 30 + [True]
    inserts = recorded.matching('INSERT INTO "chat_replyevent"')
    assert 1 <= len(inserts) <= 10  # one INSERT per ~100 ms batch, not 31


def dead_run(user, chat, *, text="", offsets=()):
    """A reply whose run died with its worker: set up (rows, reservation) but never run, its
    checkpoint holding `text`, its heartbeat long gone."""
    from datetime import timedelta

    from django.utils import timezone

    from chat.llm import get_provider
    from chat.reply.setup import set_up_reply

    exchange = set_up_reply(user=user, chat_id=str(chat.pk), text="hello", provider=get_provider())
    Message.objects.filter(pk=exchange.reply_id).update(
        content=text,
        stream_offsets=list(offsets),
        heartbeat_at=timezone.now() - timedelta(minutes=10),
    )
    return exchange


def test_sweep_runs_ends_a_dead_run_with_its_checkpointed_text(user, chat):
    import io

    from django.core.management import call_command
    from django.utils import timezone

    exchange = dead_run(user, chat, text="half a tho", offsets=[5, 10])
    slow = dead_run(user, baker.make(Chat, owner=user))
    Message.objects.filter(pk=slow.reply_id).update(heartbeat_at=timezone.now())  # alive

    out = io.StringIO()
    call_command("sweep_runs", stdout=out)

    assert "Ended 1 dead run(s)" in out.getvalue()
    reply = Message.objects.get(pk=exchange.reply_id)
    assert reply.status == "failed" and reply.error_code == "run_interrupted"
    assert reply.content == "half a tho" and reply.stream_offsets == [5, 10]
    entry = LedgerEntry.objects.get(message_id=reply.pk)
    assert entry.source == "estimated" and entry.total == reply.tokens_used > 0
    assert Message.objects.get(pk=slow.reply_id).status == "streaming"
    # Its followers get the end from the log: the text after event 1, then the done.
    events = [data for _, data in shared_log().read(reply.pk, 0, 0)]
    assert events[-1]["done"] is True and events[-1]["error"]["code"] == "run_interrupted"
    from chat.reply.sweep import sweep_runs

    assert sweep_runs() == 0  # ended once


def test_stop_of_a_reply_whose_worker_died_ends_it_at_once(auth_client, user, chat, settings):
    settings.REPLY_STOP_WAIT_S = 0.2
    exchange = dead_run(user, chat, text="so far", offsets=[2, 6])

    response = stop(auth_client, chat.pk, exchange.reply_id)

    assert response.status_code == 200
    saved = response.json()["data"]
    assert saved["status"] == "partial" and saved["finish_reason"] == "stopped"
    assert saved["content"] == "so far" and saved["tokens_used"] > 0
    assert LedgerEntry.objects.filter(message_id=exchange.reply_id).count() == 1
    assert_books_balance(user)
