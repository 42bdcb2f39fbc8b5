"""No network call inside a transaction: the system prompt's count (countTokens) is fetched
before the message's transaction, and a failed count is remembered for
SYSTEM_PROMPT_COUNT_RETRY_S, so while countTokens fails N messages make at most one call."""

import pytest
from django.db import connection
from model_bakery import baker

from chat.models import Chat, Message
from tests.chat.sse_client import parse_events, streamed_body
from tests.fakes.gemini import Script

pytestmark = pytest.mark.django_db(transaction=True)  # so in_atomic_block means ours

# One entry per call of the configured count function: was a transaction open?
count_calls_in_transaction: list[bool] = []


def recording_counter(text: str) -> int:
    """settings.TOKEN_COUNTER for these tests: the real count, noting the transaction state."""
    from chat.llm import count_tokens

    count_calls_in_transaction.append(connection.in_atomic_block)
    return count_tokens(text)


@pytest.fixture(autouse=True)
def _recorded_counter(settings, fake_gemini):
    settings.MESSAGE_RATE_LIMIT_MS = 0
    settings.TOKEN_COUNTER = f"{__name__}.recording_counter"
    count_calls_in_transaction.clear()
    fake_gemini.count_error_status = 503  # countTokens fails (the SDK retries it)


def send_messages(user, count: int) -> list[dict]:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user=user)
    chat = baker.make(Chat, owner=user)
    dones = []
    for index in range(count):
        response = client.post(
            f"/api/chat/{chat.pk}/message", {"message": f"message {index}"}, format="json"
        )
        assert response.status_code == 200
        dones.append(parse_events(streamed_body(response))[-1])
    return dones


def test_a_failing_count_is_asked_once_and_never_inside_a_transaction(user, fake_gemini, settings):
    fake_gemini.default = Script(chunks=["ok"], usage=(50, 1))

    dones = send_messages(user, 5)

    assert all("error" not in done for done in dones)
    assert count_calls_in_transaction == [False]
    # one call, with the SDK's own retries of it
    assert 1 <= len(fake_gemini.count_requests()) <= settings.GEMINI_RETRY_ATTEMPTS
    assert Message.objects.filter(role="model", status="complete").count() == 5


def test_after_the_retry_window_a_failed_count_is_asked_again_outside_transactions(
    user, fake_gemini, settings
):
    settings.SYSTEM_PROMPT_COUNT_RETRY_S = 0
    settings.GEMINI_RETRY_ATTEMPTS = 1
    fake_gemini.default = Script(chunks=["ok"], usage=(50, 1))

    send_messages(user, 3)

    assert count_calls_in_transaction == [False, False, False]
    assert len(fake_gemini.count_requests()) == 3
