"""Third-party SSE clients against a real gunicorn and the fake Gemini upstream, sending the
headers they really send (`Accept: text/event-stream`, `Cache-Control`): httpx-sse's
`connect_sse` and requests-sse's `EventSource`. Happy path, a 429 before the stream (a JSON
envelope, not an event stream), an error event after output began."""

import json

import httpx
import pytest
import requests
from httpx_sse import connect_sse
from requests_sse import EventSource, InvalidStatusCodeError

from chat.models import Message
from tests.fakes.gemini import Script
from tests.ledger import assert_books_balance
from tests.live import create_chat, live_gunicorn, make_user_and_token

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(tmp_path, fake_gemini):
    env = {
        "LLM_PROVIDER": "gemini",
        "GEMINI_API_KEY": "test-key-not-secret",
        "GEMINI_BASE_URL": fake_gemini.url,
        "GEMINI_RETRY_ATTEMPTS": "1",
        "GEMINI_TIMEOUT_MS": "5000",
        # a second message within a minute is refused with 429 before any byte is streamed
        "MESSAGE_RATE_LIMIT_MS": "60000",
        "MAX_CHATS_PER_USER": "20",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as live:
        yield live


@pytest.fixture
def account(server):
    username, headers = make_user_and_token(server)
    chat_id = create_chat(server, headers)
    return username, headers, f"{server.url}/api/chat/{chat_id}/message"


def httpx_sse_events(url, headers, message):
    """(status, content type, decoded events or the JSON error body) through httpx-sse."""
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(  # it sets Accept and Cache-Control in the dict it is given
            client, "POST", url, json={"message": message}, headers=dict(headers)
        ) as source,
    ):
        response = source.response
        assert response.request.headers["accept"] == "text/event-stream"
        if response.status_code != 200:
            response.read()
            return response.status_code, response.headers["content-type"], response.json()
        events = [json.loads(sse.data) for sse in source.iter_sse()]
        return response.status_code, response.headers["content-type"], events


def requests_sse_events(url, headers, message):
    """The same through requests-sse (an EventSource: it reconnects when a stream ends,
    so it is closed at the `done` event, as a real client of this API does)."""
    events = []
    try:
        with EventSource(
            url,
            method="POST",
            json={"message": message},
            headers=dict(headers),
            timeout=30,
            max_connect_retry=0,
        ) as source:
            for event in source:
                events.append(json.loads(event.data))
                if events[-1].get("done"):
                    break
    except InvalidStatusCodeError as exc:
        response: requests.Response = exc.response
        assert response.request.headers["Accept"] == "text/event-stream"
        return response.status_code, response.headers["Content-Type"], response.json()
    return 200, "text/event-stream", events


CLIENTS = {"httpx-sse": httpx_sse_events, "requests-sse": requests_sse_events}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_reply_streams_to_a_third_party_sse_client(server, account, fake_gemini, client):
    username, headers, url = account
    fake_gemini.script(Script(chunks=["Pixel", " art", " lives."], usage=(30, 5)))

    status, content_type, events = CLIENTS[client](url, headers, "pixel art?")

    assert status == 200
    assert content_type == "text/event-stream"
    assert [e["text"] for e in events[:-1]] == ["Pixel", " art", " lives."]
    done = events[-1]
    assert done["done"] is True and "error" not in done
    assert done["tokens_used"] == 35
    assert Message.objects.get(pk=done["message_id"]).content == "Pixel art lives."
    assert_books_balance(username)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_429_before_the_stream_is_a_json_envelope(server, account, fake_gemini, client):
    username, headers, url = account
    first_status, _, _ = CLIENTS[client](url, headers, "first")

    status, content_type, body = CLIENTS[client](url, headers, "too soon")

    assert first_status == 200
    assert status == 429
    assert content_type.startswith("application/json")
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["details"]["retry_after"] >= 1
    assert_books_balance(username)


@pytest.mark.parametrize(
    ("fault", "code"),
    [({"drop_after": 2}, "upstream_error"), ({"cut_after": 2}, "upstream_incomplete")],
    ids=["dropped", "cut-cleanly"],
)
@pytest.mark.parametrize("client", CLIENTS)
def test_an_error_after_output_began_is_the_last_event(
    server, account, fake_gemini, client, fault, code
):
    username, headers, url = account
    fake_gemini.script(Script(chunks=["one", " two", " three", " four"], **fault))

    status, content_type, events = CLIENTS[client](url, headers, "tell me")

    assert status == 200
    assert content_type == "text/event-stream"
    assert [e["text"] for e in events[:-1]] == ["one", " two"]
    done = events[-1]
    assert done["done"] is True
    assert done["error"]["code"] == code
    reply = Message.objects.get(pk=done["message_id"])
    assert reply.status == "partial" and reply.content == "one two"
    assert done["tokens_used"] > 0
    assert_books_balance(username)
