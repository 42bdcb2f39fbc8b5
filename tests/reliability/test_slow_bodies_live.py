"""Slow request bodies (issue 12, item 4) against a live gunicorn with few connection slots:
each body that does not arrive within REQUEST_BODY_TIMEOUT_S ends with 408 and frees its slot,
so a normal user is served while hundreds of slow bodies are attempted."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.live import PASSWORD, live_gunicorn, make_user_and_token, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BODY_TIMEOUT_S = 1.5
DRIP_EVERY_S = 1.0
HEAD = (
    b"POST /api/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 200000\r\n\r\n"
)


@dataclass
class SlowBody:
    sock: socket.socket
    opened: float
    next_drip: float
    received: bytes = b""
    closed_at: float | None = None

    @property
    def status(self) -> int | None:
        first = self.received.split(b"\r\n", 1)[0].split()
        return int(first[1]) if len(first) > 1 and first[1].isdigit() else None


@dataclass
class Attack:
    """Opens `total` slow bodies, at most `concurrent` at a time, from one thread (loopback
    only). Each sends its head, then one byte every DRIP_EVERY_S until the server closes it
    or `give_up_s` passes (the server then held it: the failure this test looks for)."""

    address: tuple[str, int]
    total: int
    concurrent: int
    give_up_s: float
    bodies: list[SlowBody] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def open_count(self) -> int:
        return sum(1 for body in self.bodies if body.closed_at is None)

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            while not self.stop.is_set():
                while len(self.bodies) < self.total and self.open_count() < self.concurrent:
                    sock = socket.create_connection(self.address)
                    sock.sendall(HEAD)
                    now = time.monotonic()
                    body = SlowBody(sock=sock, opened=now, next_drip=now + DRIP_EVERY_S)
                    self.bodies.append(body)
                    selector.register(sock, selectors.EVENT_READ, body)
                if len(self.bodies) == self.total and self.open_count() == 0:
                    return
                for key, _ in selector.select(timeout=0.1):
                    body = key.data
                    try:
                        data = body.sock.recv(65536)
                    except OSError:
                        data = b""
                    body.received += data
                    if not data:
                        self._close(selector, body)
                now = time.monotonic()
                for body in self.bodies:
                    if body.closed_at is not None:
                        continue
                    if now - body.opened > self.give_up_s:
                        self._close(selector, body)
                    elif now >= body.next_drip:
                        body.next_drip = now + DRIP_EVERY_S
                        try:
                            body.sock.send(b" ")
                        except OSError:
                            self._close(selector, body)
        finally:
            for body in self.bodies:
                if body.closed_at is None:
                    self._close(selector, body)
            selector.close()

    @staticmethod
    def _close(selector, body: SlowBody) -> None:
        body.closed_at = time.monotonic()
        selector.unregister(body.sock)
        body.sock.close()


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_three_hundred_slow_bodies_against_one_small_gevent_worker(tmp_path):
    slots = 20
    env = {
        "GUNICORN_WORKER_CONNECTIONS": str(slots),
        "REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "LOGIN_THROTTLE_RATE": "1000/min",
    }
    with live_gunicorn(env=env, tmp_path=tmp_path, workers=1) as server:
        username, _ = make_user_and_token(server)
        host, port = server.url.removeprefix("http://").split(":")
        # Twice as many slow bodies open as the worker has slots, 300 in all.
        attack = Attack(address=(host, int(port)), total=300, concurrent=2 * slots, give_up_s=30)
        attacker = threading.Thread(target=attack.run, name="slow-bodies")
        attacker.start()
        served = []
        try:
            wait_until(lambda: attack.open_count() >= 2 * slots, timeout=10, message="the attack")
            while attacker.is_alive() and len(served) < 6:
                with httpx.Client(base_url=server.url, timeout=15) as client:
                    served.append(timed(lambda c=client: c.get("/health")))
                    served.append(
                        timed(
                            lambda c=client: c.post(
                                "/api/auth/token",
                                json={"username": username, "password": PASSWORD},
                            )
                        )
                    )
        finally:
            attacker.join(timeout=120)
            attack.stop.set()
            attacker.join(timeout=10)

    assert len(served) == 6, "the normal user's requests ran while the attack went on"
    assert [response.status_code for response, _ in served] == [200] * 6
    assert "access" in served[1][0].json()["data"]
    assert len(attack.bodies) == 300
    statuses = [body.status for body in attack.bodies]
    assert statuses == [408] * 300, {s: statuses.count(s) for s in set(statuses)}
    assert b'"code": "request_timeout"' in attack.bodies[0].received
    # Held by the server for about BODY_TIMEOUT_S each; the rest of a socket's life is the
    # wait for a free slot behind the other slow bodies (never the 30 s give-up).
    lifetimes = [body.closed_at - body.opened for body in attack.bodies]
    assert max(lifetimes) < 4 * BODY_TIMEOUT_S + 2, max(lifetimes)
    assert max(seconds for _, seconds in served) < 4 * BODY_TIMEOUT_S + 2
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_a_slow_body_is_408_and_an_oversized_one_413_on_each_worker_class(tmp_path, worker_class):
    env = {
        "GUNICORN_WORKER_CLASS": worker_class,
        "GUNICORN_THREADS": "4",
        "GUNICORN_WORKER_CONNECTIONS": "4",
        "REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    with live_gunicorn(env=env, tmp_path=tmp_path, workers=1) as server:
        host, port = server.url.removeprefix("http://").split(":")
        attack = Attack(address=(host, int(port)), total=8, concurrent=8, give_up_s=20)
        attack.run()
        health = httpx.get(f"{server.url}/health", timeout=10)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(HEAD.replace(b"200000", b"10000000") + b"{}")
            too_large = sock.recv(65536)
            while not too_large.endswith(b"}"):  # the head and the body may come apart
                chunk = sock.recv(65536)
                if not chunk:
                    break
                too_large += chunk
        # A body that arrives in time is served as before (here: bad credentials).
        normal = httpx.post(
            f"{server.url}/api/auth/token",
            json={"username": "nobody", "password": "wrong"},
            timeout=10,
        )

    assert [body.status for body in attack.bodies] == [408] * 8
    assert max(body.closed_at - body.opened for body in attack.bodies) < 4 * BODY_TIMEOUT_S + 2
    assert health.status_code == 200
    assert too_large.startswith(b"HTTP/1.1 413 ")
    assert b'"code": "payload_too_large"' in too_large
    assert normal.status_code == 401
