"""Faults through a live gunicorn server on PostgreSQL: a worker killed mid-stream, and a
full run whose logs must hold no API key, JWT or password."""

import os
import signal

import httpx
import pytest
from django.db.models import Sum

from billing.models import LedgerEntry, TokenBudget, TokenReservation
from chat.models import Message
from chat.reply.sweep import sweep_runs
from tests.fakes.gemini import Script
from tests.ledger import assert_books_balance
from tests.live import (
    PASSWORD,
    create_chat,
    live_gunicorn,
    make_user_and_token,
    open_raw_stream,
    read_events,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_killed_worker_leaves_its_checkpointed_text_and_the_sweep_ends_the_run(
    tmp_path, settings
):
    settings.REPLY_STALE_S = 1  # the sweep's view of a dead run (this process runs it)
    env = {
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNKS": "100",
        "LOCAL_LLM_CHUNK_DELAY_MS": "100",
        "REPLY_CHECKPOINT_S": "0.3",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)
        sock = open_raw_stream(
            server, f"/api/chat/{chat_id}/message", headers, b'{"message": "a very long story"}'
        )
        read_events(sock, 2)

        def checkpointed_a_few_events():
            reply = Message.objects.get(chat_id=chat_id, role="model")
            return reply if len(reply.stream_offsets) >= 4 else None

        reply = wait_until(checkpointed_a_few_events, timeout=20, message="a checkpoint")
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)  # no finally runs in the worker
        sock.close()
        checkpointed = reply.content
        assert reply.status == "streaming"
        assert TokenReservation.objects.filter(user__username=username, state="active").exists()

        ended = wait_until(sweep_runs, timeout=15, message="the sweep to end the dead run")
    assert ended == 1
    assert Message.objects.get(chat_id=chat_id, role="user").content == "a very long story"
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.error_code == "run_interrupted"
    # The text checkpointed (or logged) before the kill is kept, and billed by our count.
    assert reply.content.startswith(checkpointed) and len(checkpointed) > 0
    assert len(reply.stream_offsets) >= 4 and reply.stream_offsets[-1] == len(reply.content)
    entry = LedgerEntry.objects.get(message_id=reply.pk)
    assert entry.source == "estimated" and entry.total == reply.tokens_used > 0
    budget = TokenBudget.objects.get(user__username=username)
    assert budget.reserved == 0
    assert not TokenReservation.objects.filter(user__username=username, state="active").exists()
    assert (
        budget.used
        == LedgerEntry.objects.filter(user__username=username).aggregate(t=Sum("total"))["t"]
    )
    assert sweep_runs() == 0  # ended once


def test_no_api_key_jwt_or_password_in_any_log_line(tmp_path, fake_gemini):
    key = "AIza-test-secret-key-1234567890"
    fake_gemini.script(
        Script(error_status=429),
        Script(chunks=["fine"], usage=(5, 1)),
        Script(chunks=["a", "b"], drop_after=1),
    )
    env = {
        "LLM_PROVIDER": "gemini",
        "GEMINI_API_KEY": key,
        "GEMINI_BASE_URL": fake_gemini.url,
        "GEMINI_RETRY_ATTEMPTS": "2",
        "GEMINI_RETRY_INITIAL_DELAY_S": "0.01",
        "LOG_LEVEL": "DEBUG",
        "GUNICORN_ACCESSLOG": "-",
        "GUNICORN_LOGLEVEL": "debug",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        token = headers["Authorization"].split()[1]
        chat_id = create_chat(server, headers)
        for message in ("one", "two"):
            httpx.post(
                f"{server.url}/api/chat/{chat_id}/message",
                json={"message": message},
                headers=headers,
                timeout=30,
            ).read()
        httpx.post(
            f"{server.url}/api/auth/token",
            json={"username": username, "password": "wrong-" + PASSWORD},
        )
        httpx.get(f"{server.url}/api/user/me", headers={"Authorization": "Bearer " + token[:-3]})
        # The OpenAI-compatible API with a key of the user's: a completion, a stream, a bad key.
        api_key = httpx.post(f"{server.url}/api/keys", json={}, headers=headers).json()["data"]
        api_key = api_key["key"]
        v1 = {"Authorization": f"Bearer {api_key}"}
        model = httpx.get(f"{server.url}/v1/models", headers=v1).json()["data"][0]["id"]
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        for stream in (False, True):
            httpx.post(
                f"{server.url}/v1/chat/completions",
                json={**body, "stream": stream},
                headers=v1,
                timeout=30,
            ).read()
        httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {api_key}x"})
        log = server.log()
    assert "api/chat" in log and "v1/chat/completions" in log  # the run was logged at all
    for secret in (key, token, PASSWORD, token.split(".")[2], api_key, api_key[11:]):
        assert secret not in log


def test_disconnecting_at_a_random_chunk_fifty_times(tmp_path):
    """Every reply is generated to its end all the same and billed from the provider's own
    usage report."""
    import random

    rng = random.Random(7)
    env = {
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNKS": "20",
        "LOCAL_LLM_CHUNK_DELAY_MS": "15",
        "MAX_CHATS_PER_USER": "60",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chats = [create_chat(server, headers) for _ in range(50)]
        for chat_id in chats:
            sock = open_raw_stream(
                server,
                f"/api/chat/{chat_id}/message",
                headers,
                b'{"message": "stream and hang up"}',
            )
            read_events(sock, rng.randint(1, 19))
            sock.close()
        replies = Message.objects.filter(chat_id__in=chats, role="model")
        wait_until(
            lambda: not replies.filter(status="streaming").exists(),
            timeout=60,
            message="all 50 replies to end",
        )
    assert Message.objects.filter(chat_id__in=chats, role="user").count() == 50
    assert replies.count() == 50
    for reply in replies:
        assert reply.status == "complete" and reply.finish_reason == "stop"
        assert len(reply.stream_offsets) == 20 and reply.token_source == "provider"
    entries = LedgerEntry.objects.filter(message_id__in=replies.values("pk"))
    assert entries.count() == 50 and set(entries.values_list("source", flat=True)) == {"provider"}
    assert_books_balance(username)


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        ({"error_status": 429}, 503, "upstream_rate_limited"),
        ({"error_status": 500}, 502, "upstream_error"),
        ({"error_status": 503}, 502, "upstream_error"),
        ({"stall_after": 0, "stall_s": 5}, 504, "upstream_timeout"),
        ({"block_prompt": "SAFETY"}, 400, "content_blocked"),
        ({"chunks": ["a", "b", "c"], "drop_after": 2}, 200, "upstream_error"),
        ({"chunks": ["a", "b", "c"], "malformed_after": 1}, 200, "upstream_error"),
        ({"chunks": ["a", "b", "c"], "stall_after": 2, "stall_s": 5}, 200, "upstream_timeout"),
        ({"chunks": ["ok"], "block_reply": True}, 400, "content_blocked"),
    ],
    ids=[
        "429",
        "500",
        "503",
        "stall-first",
        "block-prompt",
        "drop",
        "malformed",
        "stall-mid",
        "block-reply",
    ],
)
def test_each_upstream_fault_through_gunicorn(tmp_path, fake_gemini, script, status, code):
    fake_gemini.default = Script(**script)
    env = {
        "LLM_PROVIDER": "gemini",
        "GEMINI_API_KEY": "test-key-not-secret",
        "GEMINI_BASE_URL": fake_gemini.url,
        "GEMINI_RETRY_ATTEMPTS": "2",
        "GEMINI_RETRY_INITIAL_DELAY_S": "0.01",
        "GEMINI_TIMEOUT_MS": "500",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)
        response = httpx.post(
            f"{server.url}/api/chat/{chat_id}/message",
            json={"message": "fault"},
            headers=headers,
            timeout=30,
        )
        wait_until(
            lambda: (
                Message.objects.filter(chat_id=chat_id, role="model")
                .exclude(status="streaming")
                .exists()
            ),
            timeout=15,
            message="the reply to end",
        )
    assert response.status_code == status
    if status == 200:
        done = [json_line for json_line in response.text.split("\n") if '"done"' in json_line]
        assert f'"code":"{code}"' in done[-1]
    else:
        assert response.json()["error"]["code"] == code
    if code == "upstream_rate_limited":  # the SDK retried before giving up
        assert len(fake_gemini.generate_requests()) == 2
    assert Message.objects.get(chat_id=chat_id, role="user").content == "fault"
    reply = Message.objects.get(chat_id=chat_id, role="model")
    assert reply.status == ("partial" if status == 200 else "failed")
    assert reply.error_code == code
    assert_books_balance(username)
