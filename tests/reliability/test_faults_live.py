"""Faults through a live gunicorn server on PostgreSQL: a worker killed mid-stream, and a
full run whose logs must hold no API key, JWT or password."""

import os
import signal
import socket

import httpx
import pytest
from django.db.models import Sum

from billing.models import LedgerEntry, TokenBudget, TokenReservation
from billing.services import release_stale_reservations
from chat.models import Message
from tests.chat.test_stream_live import PASSWORD, create_chat, make_user_and_token
from tests.fakes.gemini import Script
from tests.live import live_gunicorn, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_killed_worker_leaves_the_message_and_the_sweep_recovers_the_reservation(tmp_path):
    env = {
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNKS": "100",
        "LOCAL_LLM_CHUNK_DELAY_MS": "100",
        "RESERVATION_TTL_S": "1",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)
        host, port = server.url.removeprefix("http://").split(":")
        body = b'{"message": "a very long story"}'
        sock = socket.create_connection((host, int(port)))
        sock.sendall(
            f"POST /api/chat/{chat_id}/message HTTP/1.0\r\nHost: {host}\r\n"
            f"Authorization: {headers['Authorization']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"data: ") < 2:
            received += sock.recv(4096)
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)  # no finally runs in the worker
        sock.close()
        assert TokenReservation.objects.filter(user__username=username, state="active").exists()

        released = wait_until(release_stale_reservations, timeout=15, message="the sweep")
    assert released == 1
    assert Message.objects.get(chat_id=chat_id, role="user").content == "a very long story"
    # The partial reply died with the worker (nothing checkpoints it); the hold did not leak.
    budget = TokenBudget.objects.get(user__username=username)
    assert budget.reserved == 0
    ledger = LedgerEntry.objects.filter(user__username=username)
    assert ledger.filter(kind="release").count() == 1
    assert budget.used == (ledger.aggregate(t=Sum("total"))["t"] or 0)


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
        log = server.log()
    assert "api/chat" in log  # the run was logged at all
    for secret in (key, token, PASSWORD, token.split(".")[2]):
        assert secret not in log
