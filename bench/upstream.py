"""A fast fake Gemini upstream for the benchmark: the same REST protocol and SSE bytes as
tests/fakes/gemini.py's default script (text chunks, usageMetadata as a running total on every
chunk, the last one with finishReason STOP), served by asyncio with every response prepared
in advance, HTTP/1.1 keep-alive and chunked bodies (HTTP/1.0 clients get a body delimited by
the connection's close).

tests/fakes/gemini.py is a ThreadingHTTPServer (a thread and a few Python-level writes per
chunk): at a few hundred messages a second it, not the service, would be the bottleneck.
`python -m bench.run` reports this server's own CPU per message and the rate it serves
alone, so a reader can see it is not.

    python -m bench.upstream [--port 0] [--chunks 20] [--delay-ms 0] [--processes 1]

prints `PORT <n>` first. Serves, under any API version:
  models/{model}:streamGenerateContent   the stream (any query string)
  models/{model}:generateContent         one JSON response with the whole text
  models/{model}:countTokens             {"totalTokens": ceil(chars / 4)}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket

PROMPT_TOKENS = 20


def chunk_events(chunks: int) -> list[bytes]:
    """The SSE events of one reply, each `data: <json>\\r\\n\\r\\n`."""
    events = []
    for index in range(chunks):
        last = index == chunks - 1
        candidate: dict = {
            "content": {"role": "model", "parts": [{"text": f" word{index}"}]},
            "index": 0,
        }
        if last:
            candidate["finishReason"] = "STOP"
        payload = {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": PROMPT_TOKENS,
                "candidatesTokenCount": index + 1,
                "totalTokenCount": PROMPT_TOKENS + index + 1,
            },
            "modelVersion": "fake-gemini",
        }
        events.append(b"data: " + json.dumps(payload).encode() + b"\r\n\r\n")
    return events


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Upstream(asyncio.Protocol):
    def __init__(self, events: list[bytes], delay_s: float):
        self.events = events
        self.delay_s = delay_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        self.stream_head_11 = head + b"Transfer-Encoding: chunked\r\n\r\n"
        self.stream_head_10 = head + b"Connection: close\r\n\r\n"
        self.instant_11 = self.stream_head_11 + b"".join(map(_chunked, events)) + b"0\r\n\r\n"
        self.instant_10 = self.stream_head_10 + b"".join(events)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.buffer += data
        if not self.busy:
            self._next_request()

    def _next_request(self):
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1")
        lines = head.split("\r\n")
        _method, path, version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return  # the body is still coming
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if ":streamGenerateContent" in path:
            if self.delay_s > 0:
                self.busy = True
                self.task = asyncio.ensure_future(self._paced(keep_alive))
                return
            self.transport.write(self.instant_11 if keep_alive else self.instant_10)
        elif ":countTokens" in path:
            self._json(keep_alive, {"totalTokens": _count(body)})
        elif ":generateContent" in path:
            text = "".join(f" word{i}" for i in range(len(self.events)))
            self._json(
                keep_alive,
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": text}]},
                            "finishReason": "STOP",
                            "index": 0,
                        }
                    ],
                    "usageMetadata": {
                        "promptTokenCount": PROMPT_TOKENS,
                        "candidatesTokenCount": len(self.events),
                        "totalTokenCount": PROMPT_TOKENS + len(self.events),
                    },
                },
            )
        elif path.startswith("/health"):
            self._json(keep_alive, {"ok": True})
        else:
            self._json(keep_alive, {"error": {"code": 404, "message": "no such method"}}, 404)
        self._after(keep_alive)

    def _after(self, keep_alive: bool):
        if not keep_alive:
            self.transport.close()
        elif self.buffer:
            self._next_request()

    def _json(self, keep_alive: bool, payload: dict, status: int = 200):
        data = json.dumps(payload).encode()
        reason = b"OK" if status == 200 else b"Not Found"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=UTF-8\r\n"
            b"Content-Length: %d\r\n%s\r\n"
            % (status, reason, len(data), b"" if keep_alive else b"Connection: close\r\n")
            + data
        )

    async def _paced(self, keep_alive: bool):
        write = self.transport.write
        write(self.stream_head_11 if keep_alive else self.stream_head_10)
        for index, event in enumerate(self.events):
            if index:
                await asyncio.sleep(self.delay_s)
            if self.transport.is_closing():
                return
            write(_chunked(event) if keep_alive else event)
        if keep_alive:
            write(b"0\r\n\r\n")
        self.busy = False
        self._after(keep_alive)


def _count(body: bytes) -> int:
    with contextlib.suppress(ValueError):
        request = json.loads(body or b"{}")
        text = "".join(
            part.get("text", "")
            for content in request.get("contents", [])
            for part in content.get("parts", [])
        )
        return math.ceil(len(text) / 4)
    return 0


def serve(sock: socket.socket, chunks: int, delay_ms: int) -> None:
    events = chunk_events(chunks)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Upstream(events, delay_ms / 1000), sock=sock, backlog=4096
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    sock.set_inheritable(True)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    children = []
    for _ in range(args.processes - 1):
        pid = os.fork()
        if pid == 0:
            serve(sock, args.chunks, args.delay_ms)
            os._exit(0)
        children.append(pid)

    def stop_children(*_):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    try:
        serve(sock, args.chunks, args.delay_ms)
    finally:
        stop_children()
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
