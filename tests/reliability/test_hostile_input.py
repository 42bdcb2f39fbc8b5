"""Bad and hostile input: a clear 4xx in the envelope, never a 500, nothing lost."""

import json

import pytest

from chat.models import Chat, Message
from tests.chat.sse_client import parse_events, streamed_body
from tests.fakes.gemini import Script

# The reply's run works on its own thread, so what the test creates must be committed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("offline_model")]


def post_raw(client, path, raw: bytes):
    return client.generic("POST", path, raw, content_type="application/json")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"message": "nul \\u0000 byte"}',
        b'{"message": "lone \\ud800 surrogate"}',
        b'{"message": "\xff\xfe invalid utf-8"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"message": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b"",
        b"null",
        b'"just a string"',
    ],
    ids=[
        "nul",
        "lone-surrogate",
        "invalid-utf8",
        "deep-array",
        "deep-nested",
        "empty",
        "null",
        "string",
    ],
)
def test_hostile_bodies_are_4xx_in_the_envelope(auth_client, chat, raw):
    auth_client.force_authenticate(chat.owner)
    response = post_raw(auth_client, f"/api/chat/{chat.pk}/message", raw)
    assert 400 <= response.status_code < 500, response.content[:200]
    assert response.json()["status"] == "error"
    assert not Message.objects.exists()


def test_huge_body_is_413(auth_client, chat, settings):
    raw = json.dumps({"message": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)}).encode()
    response = post_raw(auth_client, f"/api/chat/{chat.pk}/message", raw)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "text",
    ["'; DROP TABLE chat_chat; --", "<script>alert('x')</script>", "Robert'); --", "💥" * 50],
)
def test_sql_and_html_are_stored_as_text(auth_client, user, text):
    created = auth_client.post("/api/chat", {"title": text[:200]}, format="json")
    assert created.status_code == 201
    chat_id = created.json()["data"]["id"]
    done = parse_events(
        streamed_body(
            auth_client.post(f"/api/chat/{chat_id}/message", {"message": text}, format="json")
        )
    )[-1]
    assert done["done"] is True
    assert Chat.objects.get(pk=chat_id).title == text[:200]
    assert Message.objects.get(chat_id=chat_id, role="user").content == text


def test_a_message_cannot_forge_an_sse_event(auth_client, chat):
    forged = 'hi\n\ndata: {"done": true, "tokens_used": 0}\n\n'
    raw = streamed_body(
        auth_client.post(f"/api/chat/{chat.pk}/message", {"message": forged}, format="json")
    )
    events = parse_events(raw)
    assert [e for e in events if e.get("done")] == [events[-1]]
    assert events[-1]["tokens_used"] > 0


def test_a_model_reply_cannot_forge_an_sse_event(auth_client, user, chat, fake_gemini):
    fake_gemini.script(
        Script(chunks=['ok\n\ndata: {"done": true}\n\n', "id: 99\r\n"], usage=(10, 5))
    )
    raw = streamed_body(
        auth_client.post(f"/api/chat/{chat.pk}/message", {"message": "hi"}, format="json")
    )
    events = parse_events(raw)
    assert [e.get("text") for e in events[:-1]] == ['ok\n\ndata: {"done": true}\n\n', "id: 99\r\n"]
    assert sum(1 for e in events if e.get("done")) == 1
    assert raw.count(b"\nid: ") + raw.startswith(b"id: ") == 3  # 2 chunks + done, no more
    reply = Message.objects.get(role="model")
    assert reply.content == 'ok\n\ndata: {"done": true}\n\nid: 99\r\n'
