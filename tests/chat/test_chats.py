"""Chat endpoints: list, create (limit), detail, soft delete, access rules."""

import uuid

import pytest
from model_bakery import baker

from chat.models import Chat, Message
from chat.selectors import chat_detail, chat_token_stats, chats_for


def test_create_and_list_newest_first(auth_client, user):
    first = auth_client.post("/api/chat", {"title": "First"}, format="json")
    second = auth_client.post("/api/chat", {}, format="json")
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["data"]["title"] == "First"
    assert second.json()["data"]["title"] == ""

    listed = auth_client.get("/api/chat").json()["data"]
    assert listed["count"] == 2
    assert [c["id"] for c in listed["results"]] == [
        second.json()["data"]["id"],
        first.json()["data"]["id"],
    ]


def test_list_is_paginated(auth_client, user, settings):
    settings.MAX_CHATS_PER_USER = 50
    baker.make(Chat, owner=user, _quantity=25)
    page = auth_client.get("/api/chat?page_size=10").json()["data"]
    assert page["count"] == 25 and len(page["results"]) == 10 and page["next"]


@pytest.mark.parametrize("title", [5, ["x"], "x" * 201])
def test_bad_title_is_400(auth_client, title):
    response = auth_client.post("/api/chat", {"title": title}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_the_sixth_active_chat_is_409_and_deleted_ones_do_not_count(auth_client, user, settings):
    settings.MAX_CHATS_PER_USER = 5
    ids = [auth_client.post("/api/chat", {}, format="json").json()["data"]["id"] for _ in range(5)]

    refused = auth_client.post("/api/chat", {}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "chat_limit_reached"

    assert auth_client.delete(f"/api/chat/{ids[0]}").status_code == 200
    assert auth_client.post("/api/chat", {}, format="json").status_code == 201


def test_detail_has_messages_in_order(auth_client, user):
    chat = baker.make(Chat, owner=user)
    for text in ("one", "two", "three"):
        baker.make(Message, chat=chat, role="user", content=text)
    data = auth_client.get(f"/api/chat/{chat.pk}").json()["data"]
    assert [m["content"] for m in data["messages"]] == ["one", "two", "three"]
    assert data["token_stats"]["message_count"] == 0


def test_soft_delete_reply_and_then_404(auth_client, user):
    chat = baker.make(Chat, owner=user)
    response = auth_client.delete(f"/api/chat/{chat.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["message"] == "Chat deleted successfully"
    assert body["data"]["chat_id"] == str(chat.pk) and body["data"]["deleted_at"]
    chat.refresh_from_db()
    assert chat.is_active is False and chat.deleted_at is not None  # kept for staff

    assert auth_client.get(f"/api/chat/{chat.pk}").json()["error"]["code"] == "chat_not_found"
    assert auth_client.delete(f"/api/chat/{chat.pk}").status_code == 404
    assert auth_client.get("/api/chat").json()["data"]["count"] == 0


@pytest.mark.parametrize("method", ["get", "delete"])
def test_invalid_chat_id_is_400(auth_client, method):
    response = getattr(auth_client, method)("/api/chat/12345")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_chat_id"


@pytest.mark.parametrize("method", ["get", "delete"])
def test_absent_chat_is_404(auth_client, method):
    response = getattr(auth_client, method)(f"/api/chat/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "chat_not_found"


def test_user_b_cannot_read_list_or_delete_user_as_chat(api_client, user, other_user):
    chat = baker.make(Chat, owner=user, title="private")
    api_client.force_authenticate(other_user)

    assert api_client.get("/api/chat").json()["data"]["count"] == 0
    read = api_client.get(f"/api/chat/{chat.pk}")
    assert read.status_code == 403 and read.json()["error"]["code"] == "forbidden"
    delete = api_client.delete(f"/api/chat/{chat.pk}")
    assert delete.status_code == 403
    chat.refresh_from_db()
    assert chat.is_active


def test_anonymous_gets_401(api_client, db):
    response = api_client.get("/api/chat")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_wrong_method_is_405_in_the_envelope(auth_client):
    response = auth_client.put("/api/chat", {}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_wrong_content_type_is_415(auth_client):
    response = auth_client.post("/api/chat", "title=x", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_selectors_query_counts(user, django_assert_num_queries):
    chat = baker.make(Chat, owner=user)
    baker.make(Message, chat=chat, _quantity=5)
    with django_assert_num_queries(1):
        list(chats_for(user=user))
    with django_assert_num_queries(4):  # the chat, its messages, their tokens, its cost
        chat_detail(user=user, chat_id=str(chat.pk))


def test_chat_token_stats_sum_the_model_replies_in_the_database(user, django_assert_num_queries):
    chat = baker.make(Chat, owner=user)
    assert chat_token_stats(chat_id=chat.pk) == {
        "total": 0,
        "average": 0,
        "maximum": 0,
        "message_count": 0,
    }
    for tokens in (10, 30, 25):
        baker.make(Message, chat=chat, role=Message.Role.MODEL, tokens_used=tokens)
    baker.make(Message, chat=chat, role=Message.Role.USER, tokens_used=999)
    baker.make(Message, role=Message.Role.MODEL, tokens_used=999)  # another chat's
    with django_assert_num_queries(1):
        stats = chat_token_stats(chat_id=chat.pk)
    assert stats == {"total": 65, "average": 21.7, "maximum": 30, "message_count": 3}
