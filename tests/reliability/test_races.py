"""Races on PostgreSQL with real threads: deletes against messages, parallel refreshes of one
refresh token, two users hammering the same endpoints."""

import pytest
from model_bakery import baker
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from chat.models import Chat, Message
from tests.chat.sse_client import parse_events, streamed_body
from tests.concurrency import together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _offline(offline_model):
    offline_model.MAX_CHATS_PER_USER = 100


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_no_message_lands_in_a_chat_after_its_delete_is_acknowledged():
    user = baker.make("accounts.User")
    for _ in range(15):
        chat = baker.make(Chat, owner=user)

        def delete(chat=chat):
            return client_for(user).delete(f"/api/chat/{chat.pk}").status_code

        def message(chat=chat):
            response = client_for(user).post(
                f"/api/chat/{chat.pk}/message", {"message": "racing"}, format="json"
            )
            if response.status_code == 200:
                parse_events(streamed_body(response))
            return response.status_code

        deleted, sent = together(delete, message)
        assert deleted == 200
        assert sent in (200, 404)  # refused cleanly when the delete won
        chat.refresh_from_db()
        for question in Message.objects.filter(chat=chat, role="user"):
            assert question.created_at < chat.deleted_at


def test_parallel_refreshes_of_one_refresh_token_only_one_wins():
    user = baker.make("accounts.User")
    refresh = str(RefreshToken.for_user(user))

    def refresh_once():
        return (
            APIClient()
            .post("/api/auth/token/refresh", {"refresh": refresh}, format="json")
            .status_code
        )

    statuses = together(*[refresh_once] * 8)
    assert sorted(statuses) == [200] + [401] * 7


def test_two_users_hammering_the_same_endpoints_see_only_their_own():
    alice, bob = baker.make("accounts.User", _quantity=2)

    def work(user):
        client = client_for(user)
        ids = [
            client.post("/api/chat", {"title": f"{user.pk}"}, format="json").json()["data"]["id"]
            for _ in range(5)
        ]
        for chat_id in ids:
            events = parse_events(
                streamed_body(
                    client.post(
                        f"/api/chat/{chat_id}/message",
                        {"message": f"from {user.pk}"},
                        format="json",
                    )
                )
            )
            assert events[-1]["done"] is True
        listed = client.get("/api/chat?page_size=100").json()["data"]["results"]
        return {c["id"] for c in listed}, set(ids)

    (alice_listed, alice_ids), (bob_listed, bob_ids) = together(
        lambda: work(alice), lambda: work(bob)
    )
    assert alice_listed == alice_ids and bob_listed == bob_ids
    assert not Message.objects.filter(chat__owner=alice, content=f"from {bob.pk}").exists()
    assert not Message.objects.filter(chat__owner=bob, content=f"from {alice.pk}").exists()
