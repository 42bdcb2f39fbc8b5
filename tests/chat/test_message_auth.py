"""The message endpoint (and a reply's resume and stop) authenticate from the access token
alone (no user row query) and check in their own statement that the user still exists and
is active: the answers are the ones the other endpoints give (401 authentication_failed),
and nothing is saved."""

import pytest
from model_bakery import baker
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from billing.models import TokenBudget
from chat.models import Chat, Message
from tests.chat.sse_client import parse_events, streamed_body
from tests.messages import send
from tests.queries import StatementsOfEveryThread

# The reply's run works on its own thread, so what the test creates must be committed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("offline_model")]


def bearer(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client


def test_a_message_with_a_valid_token_streams_and_reads_no_user_row(user):
    chat = baker.make(Chat, owner=user)
    client = bearer(user)
    streamed_body(send(client, chat.pk))  # the first of the month opens the budget row
    with StatementsOfEveryThread() as recorded:
        response = send(client, chat.pk)
        events = parse_events(streamed_body(response))
    assert response.status_code == 200
    assert events[-1]["done"] is True and "error" not in events[-1]
    assert recorded.statements  # it records the request's and the run's statements
    assert recorded.matching('SELECT "accounts_user"') == []


def test_a_deactivated_users_token_is_refused_and_nothing_saved(user):
    chat = baker.make(Chat, owner=user)
    client = bearer(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    response = send(client, chat.pk)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert response.json()["error"]["message"] == "User is inactive"
    assert response.has_header("WWW-Authenticate")
    assert not Message.objects.exists()
    assert not TokenBudget.objects.exists()


def test_a_deactivated_user_gets_401_not_404_for_a_chat_that_does_not_exist(user):
    client = bearer(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    response = send(client, "2f0e7c1a-8d7b-4d2b-9f59-0b0c5b1b8a11")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_deleted_users_token_is_refused(user, other_user):
    chat = baker.make(Chat, owner=other_user)
    client = bearer(user)
    user.delete()
    response = send(client, chat.pk)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User not found"
    assert not Message.objects.exists()


def test_another_users_chat_is_still_403(user, other_user):
    chat = baker.make(Chat, owner=other_user)
    response = send(bearer(user), chat.pk)
    assert response.status_code == 403


def test_the_months_budget_opens_with_the_users_own_limit(user):
    user.monthly_token_limit = 123_456
    user.save(update_fields=["monthly_token_limit"])
    chat = baker.make(Chat, owner=user)
    response = send(bearer(user), chat.pk)
    assert parse_events(streamed_body(response))[-1]["budget"]["limit"] == 123_456
    assert TokenBudget.objects.get(user=user).limit == 123_456


def finished_reply(user) -> tuple[Chat, str]:
    chat = baker.make(Chat, owner=user)
    response = send(bearer(user), chat.pk)
    streamed_body(response)
    return chat, response["X-Message-Id"]


def test_resume_and_stop_read_no_user_row_for_an_active_user(user):
    chat, reply_id = finished_reply(user)
    client = bearer(user)
    with StatementsOfEveryThread() as recorded:
        resumed = client.get(f"/api/chat/{chat.pk}/messages/{reply_id}/stream")
        events = parse_events(streamed_body(resumed))
        stopped = client.post(f"/api/chat/{chat.pk}/messages/{reply_id}/stop")
    assert resumed.status_code == 200 and events[-1]["done"] is True
    assert stopped.status_code == 409  # it had ended: the usual answer, past authentication
    assert recorded.matching('SELECT "accounts_user"') == []


def test_resume_and_stop_refuse_a_deactivated_users_token(user):
    chat, reply_id = finished_reply(user)
    client = bearer(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    resumed = client.get(f"/api/chat/{chat.pk}/messages/{reply_id}/stream")
    stopped = client.post(f"/api/chat/{chat.pk}/messages/{reply_id}/stop")
    for response in (resumed, stopped):
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "User is inactive"


def test_resume_and_stop_refuse_a_deleted_users_token_before_anything_else(user, other_user):
    chat, reply_id = finished_reply(other_user)
    client = bearer(user)
    user.delete()  # no reply of its own: its row can go
    resumed = client.get(f"/api/chat/{chat.pk}/messages/{reply_id}/stream")
    stopped = client.post(f"/api/chat/{chat.pk}/messages/{reply_id}/stop")
    for response in (resumed, stopped):
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "User not found"
