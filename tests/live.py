"""A real gunicorn server over the test database, for tests that need real sockets:
unbuffered streaming, client disconnects, killed workers.

    with live_gunicorn(env={"LLM_PROVIDER": "local"}) as server:
        httpx.get(server.url + "/health")

The server runs config/gunicorn.conf.py, as production does, against the database
pytest-django created (use it from a `transaction=True` test so data is committed).
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from django.db import connection

from tests.launcher import ROOT, RunningServer, free_port, gunicorn_server

__all__ = ["ROOT", "LiveServer", "free_port", "live_gunicorn", "wait_until"]

LiveServer = RunningServer
PASSWORD = "a-long-passphrase-42"


def database_url() -> str:
    """The URL of the database this test process uses (pytest-django's test database)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    auth = f"{user}:{s['PASSWORD']}" if s.get("PASSWORD") else user
    return f"postgres://{auth}@{host}:{port}/{s['NAME']}"


def wait_until(predicate, *, timeout: float, interval: float = 0.05, message: str = ""):
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


@contextlib.contextmanager
def live_gunicorn(
    *, env: dict[str, str] | None = None, tmp_path: Path, workers: int = 1
) -> Iterator[LiveServer]:
    """tests/launcher.py's gunicorn over the test database, DEBUG on, no rate limit."""
    server_env = {
        "DATABASE_URL": database_url(),
        "GUNICORN_WORKERS": str(workers),
        "DEBUG": "true",
        "MESSAGE_RATE_LIMIT_MS": "0",
        **(env or {}),
    }
    log_path = tmp_path / f"gunicorn-{uuid.uuid4().hex[:8]}.log"  # one a server
    with gunicorn_server(env=server_env, log_path=log_path) as server:
        yield server


# --- a user's way through the live API ---------------------------------------------------


def make_user_and_token(server, username=None):
    """Register a user through the server; (username, the Authorization header)."""
    username = username or f"u{uuid.uuid4().hex[:10]}"
    httpx.post(
        f"{server.url}/api/auth/register",
        json={"username": username, "email": "", "password": PASSWORD},
    ).raise_for_status()
    pair = httpx.post(
        f"{server.url}/api/auth/token", json={"username": username, "password": PASSWORD}
    ).json()["data"]
    return username, {"Authorization": f"Bearer {pair['access']}"}


def create_chat(server, headers):
    return httpx.post(f"{server.url}/api/chat", json={}, headers=headers).json()["data"]["id"]


def open_raw_stream(server: LiveServer, path: str, headers: dict, body: bytes) -> socket.socket:
    """POST over a bare socket (HTTP/1.0), so a test can hang up whenever it likes."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(
        f"POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
        + body
    )
    return sock


def read_events(sock: socket.socket, count: int) -> bytes:
    """Read until `count` data events arrived (or the server closed)."""
    received = b""
    while received.count(b"data: ") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received
