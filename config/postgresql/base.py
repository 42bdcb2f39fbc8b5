"""Django's PostgreSQL backend, with a pool whose connection check costs no round trip.

Django's pool (CONN_HEALTH_CHECKS=True) pings every connection it hands out: an empty query,
one round trip per checkout, two per message. This backend's pool checks instead whether the
idle connection's socket has anything to read: an idle connection has nothing to say, so a
readable socket means the server closed it (a restart or a terminated backend sends its
FATAL error and closes) and only then is it pinged, which fails and makes the pool open a
fresh one. So after a PostgreSQL restart the service still recovers by itself
(tests/reliability/test_pool_check.py), without a round trip per checkout.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool


def check_connection(conn) -> None:
    """The pool's `check`: raise when `conn` is no longer usable."""
    if conn.closed:
        raise ConnectionError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:  # an error, a notice or EOF arrived while idle: ask the server
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
