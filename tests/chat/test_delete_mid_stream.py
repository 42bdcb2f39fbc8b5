"""DELETE /api/chat/{id} while its reply streams (issue 12, item 7): the delete is accepted;
the reply in flight finishes, is billed for what it used and is kept with the soft-deleted
chat, which stays 404 for the API until staff restore it; then the reply is there."""

import pytest
from model_bakery import baker

from billing.models import LedgerEntry, TokenBudget, TokenReservation
from chat.models import Chat, Message
from chat.services import restore_chat
from tests.chat.sse_client import parse_events


@pytest.fixture(autouse=True)
def _offline(offline_model):
    offline_model.LOCAL_LLM_CHUNKS = 6


@pytest.mark.django_db(transaction=True)  # the reply's run works on its own thread
def test_a_reply_streaming_when_its_chat_is_deleted_is_finished_billed_and_kept(auth_client, user):
    chat = baker.make(Chat, owner=user)
    response = auth_client.post(
        f"/api/chat/{chat.pk}/message", {"message": "a long answer please"}, format="json"
    )
    assert response.status_code == 200
    stream = iter(response.streaming_content)
    first = next(stream)  # the reply is streaming

    deleted = auth_client.delete(f"/api/chat/{chat.pk}")
    rest = b"".join(stream)  # the client keeps reading to the end

    assert deleted.status_code == 200
    assert deleted.json()["data"]["deleted_at"]
    events = parse_events(first + rest)
    done = events[-1]
    assert done["done"] is True and "error" not in done
    assert done["finish_reason"] == "stop"
    reply = Message.objects.get(pk=done["message_id"])
    assert reply.chat_id == chat.pk and reply.role == "model" and reply.status == "complete"
    assert reply.content == "".join(e["text"] for e in events if "text" in e)
    assert list(LedgerEntry.objects.filter(user=user).values_list("message_id", flat=True)) == [
        reply.pk
    ]
    assert LedgerEntry.objects.get(user=user).total == done["tokens_used"] > 0
    budget = TokenBudget.objects.get(user=user)
    assert budget.used == done["tokens_used"] and budget.reserved == 0
    assert not TokenReservation.objects.filter(state="active").exists()

    chat.refresh_from_db()
    assert chat.deleted_at is not None
    assert auth_client.get(f"/api/chat/{chat.pk}").status_code == 404
    late = auth_client.post(f"/api/chat/{chat.pk}/message", {"message": "more"}, format="json")
    assert late.status_code == 404  # no new message is accepted into the deleted chat

    restore_chat(chat=chat)  # what the admin's restore action calls
    history = auth_client.get(f"/api/chat/{chat.pk}")
    assert history.status_code == 200
    shown = {m["id"]: m for m in history.json()["data"]["messages"]}
    assert shown[str(reply.pk)]["content"] == reply.content
    assert len(shown) == 2  # the question and the reply
