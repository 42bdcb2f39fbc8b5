"""The long statements of the message's path (the set-up, the end of the reply, the hold and
the settle of /v1) are prepared, so psycopg converts each once per process and
then takes it from its cache, which holds statements up to a length and with up to a number
of parameters (config/postgresql/base.py). A statement that grows past either is converted
again at every message (~0.3 ms of worker CPU for the set-up when it was ~24 KB): these
tests fail then.
"""

import pytest
from django.db import connection
from psycopg import _queries

from billing.services import _RESERVE_SQL, _settle_sql
from chat.reply.settle import _end_sql
from chat.reply.setup import _set_up_sql
from tests.messages import send

STATEMENTS = {
    "set-up": _set_up_sql,
    "end of a reply": _end_sql,
    "hold (/v1)": lambda: _RESERVE_SQL,
    "settle (/v1)": _settle_sql,
}


@pytest.mark.parametrize("build", STATEMENTS.values(), ids=STATEMENTS.keys())
def test_a_hot_statement_fits_psycopgs_cache(build):
    sql = build()
    assert len(sql.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # the reply's run has a connection of its own
@pytest.mark.usefixtures("offline_model")
def test_a_message_after_the_first_converts_no_statement_again(auth_client, chat):
    b"".join(send(auth_client, chat, "the first").streaming_content)
    before = _queries._query2pg.cache_info()

    response = send(auth_client, chat, "the second")
    body = b"".join(response.streaming_content)

    after = _queries._query2pg.cache_info()
    assert response.status_code == 200 and b'"done"' in body
    assert after.misses == before.misses
    assert after.hits >= before.hits + 2  # the set-up and the end of the reply
    with connection.cursor() as cursor:  # the set-up ran on this thread's connection
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%history AS%"],
        )
        assert cursor.fetchone() == (1,)  # prepared once on its connection, run twice
