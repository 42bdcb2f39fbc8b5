"""A TCP proxy in front of PostgreSQL that counts round trips on the wire.

A round trip is a client message the client then waits on before it goes on: a simple
`Query` ('Q') or the `Sync` ('S') that ends an extended-protocol exchange (Parse/Bind/
Execute...). So it counts everything that reaches the server: the statements, BEGIN and
COMMIT, the pool's connection checks, whatever a library sends by itself. Each round trip is
recorded with its SQL (the Query's text or the last Parse's; "(prepared)" for a prepared
statement executed again; "PREPARE " and the SQL for a Parse that executes nothing, which
psycopg sends once per connection for a statement it prepares).

    with CountingProxy("127.0.0.1", 5432) as proxy:
        url = proxy.url("postgres://user@127.0.0.1:5432/db")   # sslmode=disable added
        ...
        proxy.round_trips  # [(connection number, sql), ...]

TLS is turned off on the proxied URL (the proxy reads the protocol in the clear).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


class CountingProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.round_trips: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._connections = 0

    def url(self, database_url: str) -> str:
        """`database_url` through the proxy, TLS and GSS encryption off."""
        parts = urlsplit(database_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        query = "&".join(q for q in (parts.query, "sslmode=disable&gssencmode=disable") if q)
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    def count(self) -> int:
        with self._lock:
            return len(self.round_trips)

    def since(self, start: int) -> list[str]:
        with self._lock:
            return [sql for _, sql in self.round_trips[start:]]

    # --- plumbing ------------------------------------------------------------------------
    def __enter__(self) -> CountingProxy:
        threading.Thread(target=self._accept, daemon=True, name="pgwire-accept").start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            with self._lock:
                self._connections += 1
                number = self._connections
            threading.Thread(
                target=self._client_to_server, args=(client, server, number), daemon=True
            ).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _client_to_server(self, client: socket.socket, server: socket.socket, number: int):
        buffer = b""
        started = False  # after the StartupMessage, every message has a type byte
        last_parse, executes = "", False
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
                buffer += data
                while True:
                    if not started:
                        if len(buffer) < 8:
                            break
                        (length, code) = struct.unpack("!ii", buffer[:8])
                        if len(buffer) < length:
                            break
                        buffer = buffer[length:]
                        if code not in (SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST):
                            started = True
                        continue
                    if len(buffer) < 5:
                        break
                    kind = buffer[:1]
                    (length,) = struct.unpack("!i", buffer[1:5])
                    if len(buffer) < 1 + length:
                        break
                    body, buffer = buffer[5 : 1 + length], buffer[1 + length :]
                    if kind == b"Q":
                        self._record(number, body.split(b"\0", 1)[0].decode(errors="replace"))
                    elif kind == b"P":
                        last_parse = body.split(b"\0")[1].decode(errors="replace")
                    elif kind == b"E":
                        executes = True
                    elif kind == b"S":
                        prepare_only = last_parse and not executes
                        self._record(
                            number,
                            f"PREPARE {last_parse}" if prepare_only else last_parse or "(prepared)",
                        )
                        last_parse, executes = "", False
        self._pipe(client, server)  # closes both

    def _record(self, number: int, sql: str) -> None:
        with self._lock:
            self.round_trips.append((number, sql))
