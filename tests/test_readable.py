"""config/readable.py: the zero-wait readability check, and its use in httpcore's pool when a
gevent worker starts (config/gunicorn.conf.py)."""

import runpy
import signal
import socket
from pathlib import Path

import pytest
from gevent import monkey
from httpcore2._backends import sync

from config.readable import fd_is_readable, socket_is_readable, use_in_httpcore


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_an_idle_socket_is_not_readable_until_data_or_eof_arrives(pair):
    a, b = pair
    assert fd_is_readable(a.fileno()) is False
    b.sendall(b"x")
    assert fd_is_readable(a.fileno()) is True
    a.recv(1)
    assert fd_is_readable(a.fileno()) is False
    b.close()
    assert fd_is_readable(a.fileno()) is True  # EOF: the peer has gone


def test_no_socket_or_a_closed_one_counts_as_readable(pair):
    a, _ = pair
    a.close()
    assert socket_is_readable(a) is True  # fileno() is -1 once closed
    assert socket_is_readable(None) is True


@pytest.fixture
def httpcore_probe():
    original = sync.is_socket_readable
    yield
    sync.is_socket_readable = original


@pytest.mark.usefixtures("httpcore_probe")
def test_httpcores_pool_probes_with_it_once_applied(pair):
    a, b = pair
    use_in_httpcore()

    stream = sync.SyncStream(a)
    assert sync.is_socket_readable is socket_is_readable
    assert stream.get_extra_info("is_readable") is False
    b.close()
    assert stream.get_extra_info("is_readable") is True


@pytest.mark.usefixtures("httpcore_probe")
def test_a_gevent_worker_applies_it_when_it_starts(monkeypatch):
    conf = runpy.run_path(str(Path(__file__).parents[1] / "config" / "gunicorn.conf.py"))
    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(monkey, "is_module_patched", lambda name: name == "select")
    try:
        conf["post_worker_init"](worker=None)
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert sync.is_socket_readable is socket_is_readable
