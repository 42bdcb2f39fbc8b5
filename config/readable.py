"""Whether an idle socket has something to read, asked without waiting and without gevent.

In a gevent worker `select.poll` and `select.select` are gevent's cooperative versions:
~13 µs for a zero-timeout poll of one socket, against ~0.7 µs for the system's. A check
with a zero timeout never waits, so it has no reason to go through gevent's hub. Two checks
run often: httpcore (the Gemini SDK's HTTP client) probes every idle pooled connection each
time a request enters or leaves its pool, dozens of probes per message under load (~0.5 ms
of a worker's CPU per message, docs/operations.md), and our PostgreSQL pool checks the
connection it hands out (config/postgresql/base.py).
"""

from __future__ import annotations

import select
import socket

try:
    from gevent.monkey import get_original
except ImportError:  # pragma: no cover - gevent is a dependency; the module works without
    _poll = select.poll
else:
    _poll = get_original("select", "poll")


def fd_is_readable(fd: int) -> bool:
    """True when a read on `fd` would not wait: data, an error or EOF is there."""
    if fd < 0:
        return True  # a closed socket: its next read returns at once
    poller = _poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def socket_is_readable(sock: socket.socket | None) -> bool:
    """httpcore's is_socket_readable, with the system's poll."""
    return True if sock is None else fd_is_readable(sock.fileno())


def use_in_httpcore() -> None:
    """Make httpcore's sync backend probe its idle connections with socket_is_readable
    (config/gunicorn.conf.py, in a gevent worker). Raises when httpcore no longer has the
    function it replaces, rather than patching nothing."""
    from httpcore2._backends import sync

    if not callable(getattr(sync, "is_socket_readable", None)):
        raise RuntimeError("httpcore2._backends.sync.is_socket_readable is gone")
    sync.is_socket_readable = socket_is_readable
