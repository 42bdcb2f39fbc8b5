"""Through a real gunicorn server: chunks arrive unbuffered, a client that goes away
leaves its message, the partial reply and settled tokens, and parallel streams never
push a user past the budget. PostgreSQL: the server process shares the test database."""

import itertools
import time

import httpx
import pytest

from billing.models import LedgerEntry, TokenBudget, TokenReservation
from chat.models import Message
from tests.ledger import assert_books_balance
from tests.live import (
    create_chat,
    live_gunicorn,
    make_user_and_token,
    open_raw_stream,
    read_events,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_chunks_arrive_one_by_one_through_gunicorn(tmp_path):
    env = {"LLM_PROVIDER": "local", "LOCAL_LLM_CHUNKS": "6", "LOCAL_LLM_CHUNK_DELAY_MS": "150"}
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)
        arrivals = []
        with httpx.stream(
            "POST",
            f"{server.url}/api/chat/{chat_id}/message",
            json={"message": "stream to me"},
            headers=headers,
            timeout=30,
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            for line in response.iter_lines():
                if line.startswith("data:"):
                    arrivals.append(time.monotonic())
    assert len(arrivals) == 7  # six chunks and the done event
    gaps = [b - a for a, b in itertools.pairwise(arrivals[:-1])]
    # Each chunk is written when the model produces it (150 ms apart), not at the end.
    assert min(gaps) > 0.1
    assert_books_balance(username)


def ended_replies(chat_id):
    return Message.objects.filter(chat_id=chat_id, role="model").exclude(status="streaming")


@pytest.mark.parametrize("mode", ["finish", "cancel"])
def test_a_client_that_goes_away_leaves_message_reply_and_settled_tokens(tmp_path, mode):
    """finish (the default): the run goes on to the end and bills the provider's usage;
    cancel: the reply stops with its connection, partial, billed by our count."""
    env = {
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNKS": "40",
        "LOCAL_LLM_CHUNK_DELAY_MS": "50",
        "REPLY_ON_DISCONNECT": mode,
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)
        sock = open_raw_stream(
            server, f"/api/chat/{chat_id}/message", headers, b'{"message": "a long story please"}'
        )
        read_events(sock, 3)
        sock.close()  # the client goes away after a few chunks

        reply = wait_until(
            lambda: ended_replies(chat_id).first(), timeout=20, message="the reply to be saved"
        )
    assert Message.objects.get(chat_id=chat_id, role="user").content == "a long story please"
    if mode == "finish":
        assert reply.status == "complete" and reply.finish_reason == "stop"
        assert len(reply.stream_offsets) == 40 and reply.token_source == "provider"
    else:
        assert reply.status == "partial" and reply.finish_reason == "client_closed"
        assert 0 < len(reply.stream_offsets) < 40
    assert len(reply.content) > 0
    assert reply.tokens_used > 0
    assert LedgerEntry.objects.get(message_id=reply.pk).total == reply.tokens_used
    assert not TokenReservation.objects.filter(state="active").exists()
    assert_books_balance(username)


def test_parallel_streams_of_one_user_never_pass_the_limit(tmp_path):
    env = {
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNK_DELAY_MS": "20",
        # one reservation is about 90 input + 256 output tokens: the budget covers ~10
        "DEFAULT_TOKEN_LIMIT": "3500",
        "MAX_CHATS_PER_USER": "50",
        "GEMINI_MAX_OUTPUT_TOKENS": "256",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chats = [create_chat(server, headers) for _ in range(50)]

        import concurrent.futures

        def send(chat_id):
            with httpx.Client(timeout=60) as client:
                response = client.post(
                    f"{server.url}/api/chat/{chat_id}/message",
                    json={"message": "tell me something"},
                    headers=headers,
                )
                return response.status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(send, chats))
    assert set(statuses) <= {200, 403}
    # how many win depends on how fast earlier replies settle; the limit must hold regardless
    assert statuses.count(200) >= 1 and statuses.count(403) >= 1
    budget = TokenBudget.objects.get(user__username=username)
    assert budget.used <= budget.limit
    assert_books_balance(username)


def test_used_equals_the_ledger_after_successes_failures_and_disconnects(tmp_path, fake_gemini):
    from tests.fakes.gemini import Script

    env = {
        "LLM_PROVIDER": "gemini",
        "GEMINI_API_KEY": "test-key-not-secret",
        "GEMINI_BASE_URL": fake_gemini.url,
        "GEMINI_RETRY_ATTEMPTS": "1",
        "GEMINI_TIMEOUT_MS": "2000",
        "MAX_CHATS_PER_USER": "20",
    }
    fake_gemini.script(
        Script(chunks=["fine", " reply"], usage=(30, 4)),
        Script(error_status=500),
        Script(chunks=["a", "b", "c", "d"], drop_after=2),
        Script(block_prompt="SAFETY"),
        Script(chunks=["slow"] * 30, delay_ms=100, usage=(30, 30)),
        Script(chunks=["last", " one"], usage=None),
    )
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)
        url = f"{server.url}/api/chat/{chat_id}/message"
        statuses = []
        for index in range(6):
            with httpx.stream(
                "POST", url, json={"message": f"m{index}"}, headers=headers, timeout=30
            ) as response:
                statuses.append(response.status_code)
                if index != 4:
                    response.read()
                    continue
                for line in response.iter_lines():  # disconnect in the middle of the slow reply
                    if line.startswith("data:"):
                        break
            # It goes on without its client; the chat takes the next message once it ended.
            wait_until(lambda: ended_replies(chat_id).count() == 5, timeout=20)
        wait_until(
            lambda: ended_replies(chat_id).count() == 6,
            timeout=20,
            message="every reply to be saved",
        )
    assert statuses == [200, 502, 200, 400, 200, 200]
    replies = Message.objects.filter(chat_id=chat_id, role="model").order_by("created_at")
    # The disconnected reply (the fifth) was generated to its end all the same.
    assert [r.status for r in replies] == [
        "complete",
        "failed",
        "partial",
        "failed",
        "complete",
        "complete",
    ]
    assert Message.objects.filter(chat_id=chat_id, role="user").count() == 6
    assert_books_balance(username)


def test_one_worker_serves_many_streams_on_a_few_database_connections(tmp_path):
    """Production's worker class (gevent): 200 concurrent streams in one worker process, each
    with its own transactions, on a pool of 4 PostgreSQL connections."""
    import concurrent.futures
    import threading

    import psycopg

    from tests.live import database_url

    pool_size, users, chats_per_user = 4, 4, 50
    env = {
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNKS": "20",
        "LOCAL_LLM_CHUNK_DELAY_MS": "50",
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": str(pool_size),
        "MAX_CHATS_PER_USER": str(chats_per_user),
        "DEFAULT_TOKEN_LIMIT": "10000000",
        # tells the server's connections from this test process's own (it has a pool too)
        "DATABASE_URL": f"{database_url()}?application_name=live-many-streams",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path, workers=1) as server:
        assert "Using worker: gevent" in server.log()
        [worker] = server.worker_pids()
        accounts = [make_user_and_token(server) for _ in range(users)]
        jobs = [(h, create_chat(server, h)) for _, h in accounts for _ in range(chats_per_user)]

        peak = 0
        stop = threading.Event()

        def sample():
            nonlocal peak
            with psycopg.connect(database_url(), autocommit=True) as conn:
                while not stop.is_set():
                    (count,) = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE application_name = 'live-many-streams'"
                        # the cluster is shared: count only this test database's server
                        " AND datname = current_database()"
                    ).fetchone()
                    peak = max(peak, count)
                    stop.wait(0.02)

        def send(job):
            headers, chat_id = job
            with httpx.Client(timeout=60) as client:
                response = client.post(
                    f"{server.url}/api/chat/{chat_id}/message",
                    json={"message": "many at once"},
                    headers=headers,
                )
            return response.status_code, response.text

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                results = list(pool.map(send, jobs))
        finally:
            stop.set()
            sampler.join()
        assert server.worker_pids() == [worker]  # no worker was killed or restarted

    assert [status for status, _ in results] == [200] * len(jobs)
    assert all('"done":true' in body and '"error"' not in body for _, body in results)
    assert Message.objects.filter(role="model", status="complete").count() == len(jobs)
    assert 1 <= peak <= pool_size
    for username, _ in accounts:
        assert_books_balance(username)
