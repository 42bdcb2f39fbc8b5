"""PostgreSQL round trips per message on the production path, pinned.

A live gunicorn (config/gunicorn.conf.py: gevent, the psycopg pool) with the Gemini provider
against the fake upstream, a real JWT, its PostgreSQL connections through a proxy that counts
every round trip on the wire (tests/pgwire.py): statements, BEGIN and COMMIT, the pool's
connection checks. The cache, and so the reply's event log, is Redis (as in production with
more than one worker), so the log's writes are not PostgreSQL round trips. Each round trip
costs ~0.5 ms of CPU in the worker and in PostgreSQL (docs/operations.md), so the number is
pinned: a change that adds one fails here.
"""

import os

import pytest
from django.db import connection

from chat.models import Message
from tests.fakes.gemini import Script
from tests.live import (
    create_chat,
    database_url,
    live_gunicorn,
    make_user_and_token,
    open_raw_stream,
)
from tests.pgwire import CountingProxy

REDIS_URL = os.environ.get("REDIS_TEST_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not REDIS_URL, reason="set REDIS_TEST_URL to run"),
]

# Two, each one statement in autocommit (no BEGIN/COMMIT): the set-up (chat/reply/setup.py:
# the chat locked with the caller's is_active, "no reply generating", the history and its
# estimate, the hold, the question, the reply's row) and the end of the reply
# (chat/reply/settle.py: the reply saved while streaming, the reservation and budget locked,
# the charge, the settled hold, the ledger entry, the alerts). (20 before the pool's check
# stopped pinging at each of two checkouts, 18 before the JWT stopped reading the user row,
# 17 before the hold became one statement, 15 on the old message path and on the run path
# of issue 13 with its event log on Redis, 12 once the settle was one statement, 2 since
# the set-up and the end of the reply are one statement each; issue 14's target: at most 4.)
# Both are prepared (config/postgresql/base.py): psycopg sends each a Parse of its own the
# first time it runs on a connection, a round trip counted apart: once per connection, not
# per message.
ROUND_TRIPS_PER_MESSAGE = 2
MEASURED = 4


def send(server, path: str, headers: dict) -> bytes:
    """One message over its own connection, read to the server's close (the request is over,
    the reply settled and its connection back in the pool)."""
    sock = open_raw_stream(server, path, headers, b'{"message": "count my round trips"}')
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    sock.close()
    assert received.split(b" ", 2)[1] == b"200", received[:300]
    assert b'"done":true' in received and b'"error"' not in received, received[-300:]
    return received


def test_round_trips_per_message_are_pinned(tmp_path, fake_gemini):
    fake_gemini.default = Script(chunks=["One", " two", " three."], usage=(30, 3))
    with CountingProxy(
        connection.settings_dict["HOST"] or "127.0.0.1",
        int(connection.settings_dict["PORT"] or 5432),
    ) as proxy:
        env = {
            "DATABASE_URL": proxy.url(database_url()),
            "LLM_PROVIDER": "gemini",
            "GEMINI_API_KEY": "test-key-not-secret",
            "GEMINI_BASE_URL": fake_gemini.url,
            "CACHE_URL": REDIS_URL,
        }
        with live_gunicorn(env=env, tmp_path=tmp_path, workers=1) as server:
            _, headers = make_user_and_token(server)
            chat_id = create_chat(server, headers)
            path = f"/api/chat/{chat_id}/message"
            for _ in range(2):  # warm: the month's budget row, the pool's connections
                send(server, path, headers)
            start = proxy.count()
            for _ in range(MEASURED):
                send(server, path, headers)
            measured = proxy.round_trips[start:]

    assert Message.objects.filter(chat_id=chat_id, status="complete").count() == 12
    prepares = [(number, sql) for number, sql in proxy.round_trips if sql.startswith("PREPARE")]
    assert len(set(prepares)) == len(prepares), "a statement prepared twice on a connection"
    trips = [sql for _, sql in measured if not sql.startswith("PREPARE")]
    per_message = len(trips) / MEASURED
    listing = "\n".join(trips[: len(trips) // MEASURED])
    assert per_message == ROUND_TRIPS_PER_MESSAGE, (
        f"{per_message} PostgreSQL round trips per message, pinned at "
        f"{ROUND_TRIPS_PER_MESSAGE}; one message's:\n{listing}"
    )
