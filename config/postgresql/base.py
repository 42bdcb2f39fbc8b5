"""Django's PostgreSQL backend, with a pool whose connection check costs no round trip, and
a cursor that binds its parameters on the server for the few long statements of the hot path.

Django's pool (CONN_HEALTH_CHECKS=True) pings every connection it hands out: an empty query,
one round trip per checkout, two per message. This backend's pool checks instead whether the
idle connection's socket has anything to read: an idle connection has nothing to say, so a
readable socket means the server closed it (a restart or a terminated backend sends its
FATAL error and closes) and only then is it pinged, which fails and makes the pool open a
fresh one. So after a PostgreSQL restart the service still recovers by itself
(tests/reliability/test_pool_check.py), without a round trip per checkout.

server_binding_cursor(): Django's cursors bind on the client (the parameters are quoted into
the query text, by psycopg, in Python, at each execute). The set-up, the settle and the hold
are each one long statement run at every message: bound on the server, the query text is the
same at each execute, so psycopg converts it once per process (its cache holds statements up
to 4,096 bytes, which tests/test_statements.py keeps them under) and sends the values beside
it, unquoted. Integers go as bigint (psycopg would send the smallest type that holds the
value, and two smallints added can overflow); a NULL parameter needs a cast in the SQL.
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

    def server_binding_cursor(self):
        """cursor(), binding its parameters on the server (see the module's docstring)."""
        self._server_binding = True
        try:
            return self.cursor()
        finally:
            self._server_binding = False

    def create_cursor(self, name=None):
        if name or not getattr(self, "_server_binding", False):
            return super().create_cursor(name)
        factory = self.connection.cursor_factory
        self.connection.cursor_factory = base.ServerBindingCursor
        try:
            cursor = super().create_cursor()
        finally:
            self.connection.cursor_factory = factory
        cursor.adapters.register_dumper(int, Int8Dumper)
        return cursor
