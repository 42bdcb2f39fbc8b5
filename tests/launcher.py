"""Starting a server process and stopping it, once, for the tests and the benchmarks.

    with gunicorn_server(env={...}, log_path=path) as server:
        httpx.get(server.url + "/health")

`gunicorn_server` runs config/gunicorn.conf.py as production does, on a free port, and
yields once the server answers /health with 200; on the way out it asks it to stop
(SIGTERM, its graceful shutdown) and kills it if that takes too long. `running_server`
is the same for any command (the production install test runs the documented one).
Neither needs Django: tests/live.py adds the test database, bench/run.py its settings.
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

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"]


class ServerDidNotStart(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]


@contextlib.contextmanager
def running_server(
    command: list[str],
    *,
    env: dict[str, str],
    port: int,
    log_path: Path,
    cwd: Path = ROOT,
    start_timeout: float = 30,
    stop_timeout: float = 15,
) -> Iterator[RunningServer]:
    """Run `command` (which serves on 127.0.0.1:`port`), its output to `log_path`, until the
    block ends; it is ready once GET /health answers 200."""
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = RunningServer(f"http://127.0.0.1:{port}", port, process, log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while not _healthy(server):
            if process.poll() is not None:
                raise ServerDidNotStart(f"{command[-1]} exited early:\n{server.log()}")
            if time.monotonic() > deadline:
                raise ServerDidNotStart(
                    f"{command[-1]} did not answer /health in {start_timeout}s:\n{server.log()}"
                )
            time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _healthy(server: RunningServer) -> bool:
    try:
        return httpx.get(f"{server.url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def gunicorn_server(
    *,
    env: dict[str, str],
    log_path: Path,
    settings_module: str = "config.settings",
    start_timeout: float = 30,
    stop_timeout: float = 15,
) -> Iterator[RunningServer]:
    """gunicorn with config/gunicorn.conf.py on a free port: this process's environment,
    then `env`, then the bind address and the settings module."""
    port = free_port()
    server_env = {
        **os.environ,
        "GUNICORN_ACCESSLOG": "",
        **env,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
    }
    with running_server(
        GUNICORN,
        env=server_env,
        port=port,
        log_path=log_path,
        start_timeout=start_timeout,
        stop_timeout=stop_timeout,
    ) as server:
        yield server
