"""Overload through a live gunicorn on PostgreSQL: when no pooled connection frees up in
time, a request gets 503 database_unavailable with Retry-After (never a 500), and the
request that held the connection still completes."""

import concurrent.futures

import httpx
import pytest
from django.db import connection, transaction

from chat.models import Chat, Message
from tests.ledger import assert_books_balance
from tests.live import create_chat, live_gunicorn, make_user_and_token, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_request_that_cannot_get_a_connection_in_time_gets_503_not_500(tmp_path):
    env = {
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNK_DELAY_MS": "0",
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "1",
        "DB_POOL_TIMEOUT": "0.5",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path, workers=1) as server:
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)

        def send():
            return httpx.post(
                f"{server.url}/api/chat/{chat_id}/message",
                json={"message": "held up"},
                headers=headers,
                timeout=30,
            )

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            with transaction.atomic():
                # The test holds the chat row: the server's message transaction waits on it
                # while holding the worker's only pooled connection.
                Chat.objects.select_for_update().get(pk=chat_id)
                held = pool.submit(send)

                def waiting_on_the_lock():
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                        )
                        return cursor.fetchone()[0] == 1

                wait_until(waiting_on_the_lock, timeout=10, message="the message to block")
                busy = httpx.get(f"{server.url}/api/chat", headers=headers, timeout=10)
            # The lock is gone: the held message goes on and completes.
            completed = held.result(timeout=30)

    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["error"]["code"] == "database_unavailable"
    assert completed.status_code == 200
    assert '"done":true' in completed.text and '"error"' not in completed.text
    assert Message.objects.filter(chat_id=chat_id, role="model", status="complete").count() == 1
    assert "Traceback" not in server.log()
    assert_books_balance(username)
