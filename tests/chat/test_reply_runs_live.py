"""A reply is a run, through real gunicorn servers over PostgreSQL (and Redis where set), the
real SDK against the fake Gemini server in a process of its own: resume on another node and
on another worker, stop from another connection, a graceful restart."""

import concurrent.futures
import contextlib
import os
import re
import signal

import httpx
import pytest

from billing.models import LedgerEntry
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

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("REDIS_TEST_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="set REDIS_TEST_URL to run")


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """The nodes share the test Redis: registration throttles counted by earlier runs (20 an
    hour per address) must not refuse this test's users."""
    if REDIS_URL:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter("*throttle_*"))
        if keys:
            client.delete(*keys)


CHUNKS = [f"part {i}, " for i in range(40)]
SLOW_REPLY = {"chunks": CHUNKS, "delay_ms": 100, "usage": [25, 40]}


def split_response(raw: bytes) -> tuple[dict, bytes]:
    """The headers (lower-case names) and the body of a raw HTTP/1.0 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body


def complete_events(body: bytes) -> list[tuple[int, dict]]:
    """The events of an SSE body that arrived whole, with their ids."""
    import json

    events = []
    for block in body.decode(errors="replace").split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "data" in fields:
            events.append((int(fields["id"]), json.loads(fields["data"])))
    return events


def text_of(events) -> str:
    return "".join(data.get("text", "") for _, data in events)


def start_and_drop(server, headers, chat_id, *, after_events: int):
    """POST a message, read a few events, hang up; the reply's id and the events read."""
    sock = open_raw_stream(
        server, f"/api/chat/{chat_id}/message", headers, b'{"message": "tell me a long story"}'
    )
    raw = read_events(sock, after_events + 1)
    sock.close()
    response_headers, body = split_response(raw)
    return response_headers["x-message-id"], complete_events(body)[:after_events]


def resume(server, headers, chat_id, reply_id, last_event_id) -> list[tuple[int, dict]]:
    with httpx.stream(
        "GET",
        f"{server.url}/api/chat/{chat_id}/messages/{reply_id}/stream",
        headers={**headers, "Last-Event-ID": str(last_event_id), "Accept": "text/event-stream"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        return complete_events(response.read())


def assert_billed_once_from_the_provider(reply_id, username):
    reply = Message.objects.get(pk=reply_id)
    entry = LedgerEntry.objects.get(message_id=reply_id)
    assert entry.source == reply.token_source == "provider"
    assert entry.total == reply.tokens_used
    assert_books_balance(username)


@needs_redis
def test_a_client_drops_and_resumes_on_another_node(tmp_path, fake_gemini_process):
    fake_gemini_process.script(SLOW_REPLY)
    env = {**fake_gemini_process.server_env(), "CACHE_URL": REDIS_URL}
    with (
        live_gunicorn(env=env, tmp_path=tmp_path) as node_a,
        live_gunicorn(env=env, tmp_path=tmp_path) as node_b,
    ):
        username, headers = make_user_and_token(node_a)
        chat_id = create_chat(node_a, headers)
        reply_id, first = start_and_drop(node_a, headers, chat_id, after_events=2)
        assert [event_id for event_id, _ in first] == [1, 2]

        rest = resume(node_b, headers, chat_id, reply_id, last_event_id=2)

    assert [event_id for event_id, _ in rest] == list(range(3, 42))  # 38 texts and done
    done = rest[-1][1]
    assert done["done"] is True and done["finish_reason"] == "stop"
    assert done["usage"] == {"input_tokens": 25, "output_tokens": 40, "source": "provider"}
    reply = Message.objects.get(pk=reply_id)
    assert reply.status == "complete"
    assert text_of(first) + text_of(rest) == reply.content == "".join(CHUNKS)
    assert_billed_once_from_the_provider(reply_id, username)


def test_a_client_drops_and_resumes_on_the_other_worker_without_redis(
    tmp_path, fake_gemini_process
):
    """The database log: the run's worker is paused (SIGSTOP) while the resume is accepted,
    so the other worker must serve it; then it follows the log the run writes."""
    fake_gemini_process.script(SLOW_REPLY)
    env = {**fake_gemini_process.server_env(), "GUNICORN_ACCESSLOG": "-"}
    with live_gunicorn(env=env, tmp_path=tmp_path, workers=2) as server:
        workers = server.worker_pids()
        assert len(workers) == 2
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)
        reply_id, first = start_and_drop(server, headers, chat_id, after_events=2)

        def served_by(method_path):
            found = re.findall(rf'"{method_path} HTTP/1\.\d" \d+ .* <(\d+)>', server.log())
            return int(found[-1]) if found else None

        message_path = f"POST /api/chat/{chat_id}/message"
        runner = wait_until(lambda: served_by(message_path), timeout=10, message="POST logged")
        os.kill(runner, signal.SIGSTOP)
        client = httpx.Client(timeout=30)
        try:
            request = client.build_request(
                "GET",
                f"{server.url}/api/chat/{chat_id}/messages/{reply_id}/stream",
                headers={**headers, "Last-Event-ID": "2"},
            )
            response = client.send(request, stream=True)  # answered: only the other worker runs
        finally:
            os.kill(runner, signal.SIGCONT)
        try:
            assert response.status_code == 200
            rest = complete_events(response.read())
        finally:
            response.close()
            client.close()
        stream_path = f"GET /api/chat/{chat_id}/messages/{reply_id}/stream"
        follower = wait_until(lambda: served_by(stream_path), timeout=10, message="GET logged")

    assert follower != runner and {follower, runner} == set(workers)
    assert [event_id for event_id, _ in rest] == list(range(3, 42))
    reply = Message.objects.get(pk=reply_id)
    assert text_of(first) + text_of(rest) == reply.content == "".join(CHUNKS)
    assert rest[-1][1]["finish_reason"] == "stop"
    assert_billed_once_from_the_provider(reply_id, username)


@pytest.mark.parametrize(
    "topology",
    [pytest.param("two nodes over Redis", marks=needs_redis), "one node, database log"],
)
def test_stop_from_another_connection_mid_stream(tmp_path, fake_gemini_process, topology):
    fake_gemini_process.script(SLOW_REPLY)
    env = fake_gemini_process.server_env()
    if topology == "two nodes over Redis":
        env["CACHE_URL"] = REDIS_URL
    nodes = 2 if topology == "two nodes over Redis" else 1
    with (
        live_gunicorn(env=env, tmp_path=tmp_path, workers=2) as node_a,
        live_gunicorn(env=env, tmp_path=tmp_path)
        if nodes == 2
        else contextlib.nullcontext(node_a) as node_b,
    ):
        username, headers = make_user_and_token(node_a)
        chat_id = create_chat(node_a, headers)
        listener = open_raw_stream(
            node_a, f"/api/chat/{chat_id}/message", headers, b'{"message": "go on and on"}'
        )
        received = read_events(listener, 3)
        reply_id = split_response(received)[0]["x-message-id"]
        stop_url = f"{node_b.url}/api/chat/{chat_id}/messages/{reply_id}/stop"

        # Two stops at once, from two more connections: one wins, one is told it is over.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda _: httpx.post(stop_url, headers=headers, timeout=30), [1, 2])
            )

        while chunk := listener.recv(65536):  # the listener reads to the end
            received += chunk
        listener.close()
        closed = wait_until(fake_gemini_process.closed, timeout=10, message="upstream closed")

    assert sorted(a.status_code for a in answers) == [200, 409]
    [won] = [a.json() for a in answers if a.status_code == 200]
    [lost] = [a.json() for a in answers if a.status_code == 409]
    assert lost["error"]["code"] == "reply_finished"
    stopped = won["data"]
    assert stopped["id"] == reply_id and stopped["finish_reason"] == "stopped"
    events = complete_events(split_response(received)[1])
    done = events[-1][1]
    assert done["done"] is True and done["finish_reason"] == "stopped" and "error" not in done
    assert len(events) - 1 < len(CHUNKS)
    reply = Message.objects.get(pk=reply_id)
    assert reply.status == "partial" and text_of(events) == reply.content == stopped["content"]
    # The upstream call was closed before its end.
    assert len(closed) == 1 and closed[0]["chunks_written"] < len(CHUNKS)
    assert_billed_once_from_the_provider(reply_id, username)
    assert done["tokens_used"] == stopped["tokens_used"] == reply.tokens_used


@pytest.mark.parametrize("graceful_timeout", [30, 8])
def test_a_graceful_restart_lets_runs_finish(tmp_path, graceful_timeout):
    """SIGTERM: the worker waits for its runs, even those whose client left; a run that would
    outlast the graceful timeout is stopped in time, its text saved and billed."""
    chunks = 30 if graceful_timeout == 30 else 200
    env = {
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNKS": str(chunks),
        "LOCAL_LLM_CHUNK_DELAY_MS": "100",
        "GUNICORN_GRACEFUL_TIMEOUT": str(graceful_timeout),
    }
    with live_gunicorn(env=env, tmp_path=tmp_path) as server:
        username, headers = make_user_and_token(server)
        chat_id = create_chat(server, headers)
        reply_id, _ = start_and_drop(server, headers, chat_id, after_events=2)
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=graceful_timeout + 10)
        log = server.log()

    reply = Message.objects.get(pk=reply_id)
    if graceful_timeout == 30:
        assert reply.status == "complete" and len(reply.stream_offsets) == chunks
    else:
        assert "still going: stopping them" in log
        assert reply.status == "partial" and reply.finish_reason == "shutdown"
        assert 2 <= len(reply.stream_offsets) < chunks
    assert LedgerEntry.objects.get(message_id=reply_id).total == reply.tokens_used > 0
    assert_books_balance(username)
