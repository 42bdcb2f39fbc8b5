"""The pool's connection check (config.postgresql): no round trip for a healthy connection,
and a connection whose backend went away (as in a PostgreSQL restart) is replaced, not
handed out."""

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from config.postgresql.base import check_connection
from tests.live import wait_until
from tests.pgwire import CountingProxy

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def conninfo(host=None, port=None, **extra) -> str:
    s = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=s["NAME"],
        user=s["USER"] or "postgres",
        host=host or s["HOST"] or "127.0.0.1",
        port=port or s["PORT"] or 5432,
        password=s["PASSWORD"] or None,
        **extra,
    )


def terminate_and_wait(pid: int) -> None:
    """End a backend as a PostgreSQL shutdown does, and wait until it is gone."""
    with psycopg.connect(conninfo(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until(
            lambda: (
                not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            ),
            timeout=10,
            message="the backend to exit",
        )


def test_the_check_costs_no_round_trip_on_a_healthy_connection():
    s = connection.settings_dict
    with CountingProxy(s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432)) as proxy:
        info = conninfo("127.0.0.1", proxy.port, sslmode="disable", gssencmode="disable")
        with psycopg.connect(info, autocommit=True) as conn:
            before = proxy.count()
            for _ in range(5):
                check_connection(conn)
            assert proxy.count() == before
            assert conn.execute("SELECT 1").fetchone() == (1,)
            wait_until(lambda: proxy.count() == before + 1, timeout=5)


def test_the_check_refuses_a_connection_whose_backend_went_away():
    with psycopg.connect(conninfo(), autocommit=True) as conn:
        terminate_and_wait(conn.info.backend_pid)
        with pytest.raises(psycopg.OperationalError):
            check_connection(conn)


def test_the_pool_replaces_a_dead_connection_instead_of_handing_it_out():
    pool = ConnectionPool(
        conninfo(),
        min_size=1,
        max_size=1,
        check=check_connection,
        kwargs={"autocommit": True},
        open=True,
    )
    try:
        with pool.connection() as conn:
            first = conn.info.backend_pid
        terminate_and_wait(first)
        with pool.connection() as conn:  # no error: a fresh connection
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != first
    finally:
        pool.close()
