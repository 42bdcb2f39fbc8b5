"""A request body must arrive within REQUEST_BODY_TIMEOUT_S, or the request ends with 408.

gunicorn bounds the wait for a request's head (the gevent worker: `keepalive` seconds) but
not for its body: a client that declares `Content-Length: 200000` and sends a byte every few
seconds holds a connection slot for days, and a hundred such clients fill a worker. This
WSGI wrapper reads the whole body before Django runs, under one deadline for the whole body
(not per read: a byte a second never looks idle), and hands Django the bytes in memory:

- gevent worker: a `gevent.Timeout` around the read. The timeout is raised inside
  gunicorn's body reader, which then marks the connection as not reusable: it is closed
  after the 408.
- gthread worker (or any threaded server that exposes `gunicorn.socket`): a timer shuts the
  socket's read side down at the deadline, so the blocked read returns early.
- elsewhere (runserver, tests): the body is read without a deadline.

A declared length over DATA_UPLOAD_MAX_MEMORY_SIZE is refused with 413 before anything is
read, and so is a chunked body that grows past it. Under /api/ both answers are the error
envelope.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading

from config.errors import ErrorCode

READ_STEP = 64 * 1024


class _BodyTimeout(Exception):
    pass


class _BodyTooLarge(Exception):
    pass


class BodyDeadline:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        from django.conf import settings

        timeout_s = settings.REQUEST_BODY_TIMEOUT_S
        max_bytes = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = _declared_length(environ)
        if length == 0 or timeout_s <= 0:
            return self.app(environ, start_response)
        if length is not None and max_bytes is not None and length > max_bytes:
            return _too_large(environ, start_response, max_bytes)
        try:
            body = _read_within(environ, length, max_bytes, timeout_s)
        except _BodyTimeout:
            return _reply(
                environ,
                start_response,
                "408 Request Timeout",
                ErrorCode.REQUEST_TIMEOUT,
                f"The request body did not arrive within {timeout_s:g} seconds.",
            )
        except _BodyTooLarge:
            return _too_large(environ, start_response, max_bytes)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def _declared_length(environ) -> int | None:
    """The body's length; None for a chunked body (length unknown), 0 for none."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        return max(int(environ.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0  # Django treats a malformed length as no body, too


def _read_within(environ, length: int | None, max_bytes: int | None, timeout_s: float) -> bytes:
    stream = environ["wsgi.input"]
    if _gevent_patched():
        import gevent

        with gevent.Timeout(timeout_s, _BodyTimeout):
            return _read(stream, length, max_bytes)
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return _read(stream, length, max_bytes)
    expired = threading.Event()

    def expire():
        expired.set()
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RD)  # the blocked recv() returns b"" at once

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    try:
        body = _read(stream, length, max_bytes)
    finally:
        timer.cancel()
    complete = length is None or len(body) == length
    if expired.is_set() and not complete:
        raise _BodyTimeout()
    return body


def _read(stream, length: int | None, max_bytes: int | None) -> bytes:
    """The body: `length` bytes, or a chunked body to its end; less if the client left."""
    parts, total = [], 0
    while length is None or total < length:
        step = READ_STEP if length is None else min(READ_STEP, length - total)
        chunk = stream.read(step)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise _BodyTooLarge()
    return b"".join(parts)


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


def _too_large(environ, start_response, max_bytes):
    from config.api import PayloadTooLarge

    too_large = PayloadTooLarge(max_bytes)
    return _reply(
        environ, start_response, "413 Request Entity Too Large", too_large.code, too_large.message
    )


def _reply(environ, start_response, status: str, code: str, message: str):
    from config.api import API_PREFIX, error_body

    if environ.get("PATH_INFO", "").startswith(API_PREFIX):
        body = json.dumps(error_body(code, message)).encode()
        content_type = "application/json"
    else:
        body = message.encode()
        content_type = "text/plain; charset=utf-8"
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
