"""A real gunicorn server over the test database, for tests that need real sockets:
unbuffered streaming, client disconnects, killed workers.

    with live_gunicorn(env={"LLM_PROVIDER": "local"}) as server:
        httpx.get(server.url + "/health")

The server runs config/gunicorn.conf.py, as production does, against the database
pytest-django created (use it from a `transaction=True` test so data is committed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]


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
    port = free_port()
    log_path = tmp_path / f"gunicorn-{port}.log"
    server_env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_ACCESSLOG": "",
        "DEBUG": "true",
        "MESSAGE_RATE_LIMIT_MS": "0",
        **(env or {}),
    }
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT,
            env=server_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:

        def healthy():
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited early:\n{server.log()}")
            try:
                return httpx.get(f"{server.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=30, message="gunicorn to answer /health")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


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
