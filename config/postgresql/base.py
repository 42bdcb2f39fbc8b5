"""Django's PostgreSQL backend, with a pool whose connection check costs no round trip, and
a cursor that binds on the server and prepares, for the few long statements of the hot path.

Django's pool (CONN_HEALTH_CHECKS=True) pings every connection it hands out: an empty query,
one round trip per checkout, two per message. This backend's pool checks instead whether the
idle connection's socket has anything to read: an idle connection has nothing to say, so a
readable socket means the server closed it (a restart or a terminated backend sends its
FATAL error and closes) and only then is it pinged, which fails and makes the pool open a
fresh one. So after a PostgreSQL restart the service still recovers by itself
(tests/reliability/test_pool_check.py), without a round trip per checkout.

prepared_cursor(): Django's cursors bind on the client (psycopg quotes the parameters into the
query, in Python, at each execute) and never prepare. The set-up, the end of a reply and
/v1's hold and settle are each one long statement run at every message. This cursor binds
them on the server and prepares each on its connection at its first run, so:
- psycopg converts the query text once per process (its cache holds statements up to 4,096
  bytes, which tests/test_statements.py keeps them under) and sends the values beside it;
- PostgreSQL parses it once per connection, and after five runs plans it once (a generic
  plan, kept when it costs no more than the runs' own): ~1.7 ms less of PostgreSQL's CPU
  per message, measured in-process over 1,200 messages (docs/operations.md).
Integers go as bigint (psycopg would send the smallest type that holds the value, and two
smallints added can overflow); a NULL goes untyped, typed by where it is used. Django's pool
resets nothing on a connection it takes back, so a prepared statement lives as long as its
connection (psycopg keeps the names, and prepares again on a new connection).
"""

from __future__ import annotations

from django.db.backends.postgresql import base
from psycopg.types.numeric import Int8Dumper
from psycopg_pool import ConnectionPool

from config.readable import fd_is_readable


def compact(sql: str) -> str:
    """`sql` without its lines' indentation (no literal of ours spans lines): the long
    statements of the hot path, built once per process, stay under psycopg's cache."""
    return "\n".join(line.strip() for line in sql.strip().splitlines())


def check_connection(conn) -> None:
    """The pool's `check`: raise when `conn` is no longer usable."""
    if conn.closed:
        raise ConnectionError("the connection is closed")
    if fd_is_readable(conn.fileno()):  # an error, a notice or EOF came while idle: ping
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        # Django built it with ConnectionPool.check_connection when CONN_HEALTH_CHECKS is on;
        # the pool has no public setter for its check, so it is swapped before first use.
        if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
            pool._check = check_connection
        return pool

    def prepared_cursor(self):
        """cursor(), binding on the server and preparing its statements (the module's
        docstring)."""
        self._preparing = True
        try:
            return self.cursor()
        finally:
            self._preparing = False

    def create_cursor(self, name=None):
        if name or not getattr(self, "_preparing", False):
            return super().create_cursor(name)
        if self.connection.prepare_threshold is None:  # Django's default: never prepare
            # Only what is asked (prepare=True): Django's own cursors bind on the client
            # and cannot prepare, so a threshold would only ever count their queries.
            self.connection.prepare_threshold = PREPARE_ONLY_WHEN_ASKED
        factory = self.connection.cursor_factory
        self.connection.cursor_factory = PreparingCursor
        try:
            cursor = super().create_cursor()
        finally:
            self.connection.cursor_factory = factory
        cursor.adapters.register_dumper(int, Int8Dumper)
        return cursor


PREPARE_ONLY_WHEN_ASKED = 2**31


class PreparingCursor(base.ServerBindingCursor):
    """Django's server-binding cursor, preparing every statement it runs."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(
            query, params, prepare=True if prepare is None else prepare, binary=binary
        )
