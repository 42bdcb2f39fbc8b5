"""A fake Gemini server that speaks the REST protocol the google-genai SDK uses.

The real SDK is pointed at it through GEMINI_BASE_URL; nothing in the SDK is patched.
It serves, under /v1beta/ and /v1/:
  models/{model}:streamGenerateContent?alt=sse   SSE, `data: <json>` events only, status 200,
                                                 chunked (so a dropped connection is visible),
                                                 or connection-delimited (`cut_after`)
  models/{model}:generateContent                 one JSON response
  models/{model}:countTokens                     {"totalTokens": n}

Behaviour is scripted: each generate request takes the next script from a queue (or the
default); see `Script`. A script may replay a recorded response instead
(tests/fixtures/gemini_streams/*.txt: the status line, the headers, a blank line, then the
body's bytes as they came, de-chunked): its SSE events are sent one HTTP chunk each (or
in pieces of N bytes, to split lines and UTF-8 characters across reads), a
`Connection: close` recording as a connection-delimited body. Every request is recorded
(path, body, headers without the key).

A stream whose client closed the connection before its end is recorded in `closed` (the
request's path and how many chunks were written before a write failed).

Standalone, for live-server tests and benchmarks:
    python -m tests.fakes.gemini --port 0 --chunks 50 --delay-ms 40 --usage
prints `PORT <n>` first; scripts can be pushed with POST /_fake/script, the record read
with GET /_fake/requests (and GET /_fake/closed), and everything cleared with POST
/_fake/reset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_STATUS = {
    400: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class Script:
    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the fake", " model."])
    delay_ms: int = 0  # between chunks
    first_delay_ms: int = 0  # before the first chunk
    # (input, output) tokens to report; None: no usageMetadata at all.
    usage: tuple[int, int] | None = (12, 8)
    thinking_tokens: int = 0
    usage_on_every_chunk: bool = True  # as a running total, like the real service
    finish_reason: str = "STOP"
    error_status: int | None = None  # answer with this status and Google's error body
    retry_after: int | None = None
    drop_after: int | None = None  # close the connection abruptly after K chunks
    stall_after: int | None = None  # go silent after K chunks (0: before any) ...
    stall_s: float = 0.0  # ... for this long
    block_prompt: str | None = None  # promptFeedback.blockReason, no candidates
    block_reply: bool = False  # finishReason SAFETY with no text
    malformed_after: int | None = None  # send a broken JSON event after K chunks
    # Send K chunks, then end a connection-delimited body cleanly (no Transfer-Encoding, no
    # Content-Length, `Connection: close`): to HTTP a normal end, but no finishReason came.
    cut_after: int | None = None
    # usageMetadata without candidatesTokenCount (the provider did not report the output)
    usage_without_output: bool = False
    replay: str | None = None  # the path of a recorded response to send as it is
    replay_piece_bytes: int | None = None  # ... in pieces of this many bytes


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # a burst of connections is accepted, as Google's servers do

    def handle_error(self, request, client_address):
        # A client that hangs up mid-stream is part of the tests, not an error.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeGemini:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.default = Script()
        self._scripts: deque[Script] = deque()
        self.requests: list[dict] = []
        self.closed: list[dict] = []  # streams whose client hung up before their end
        # countTokens: answer this status with an error body, else this count (None:
        # ceil(chars / 4) of the text).
        self.count_error_status: int | None = None
        self.count_tokens_value: int | None = None
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = _QuietServer((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # --- control -------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *scripts: Script | dict) -> None:
        with self._lock:
            for s in scripts:
                self._scripts.append(s if isinstance(s, Script) else Script(**s))

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.closed.clear()
            self.default = Script()
            self.count_error_status = None
            self.count_tokens_value = None

    def generate_requests(self) -> list[dict]:
        return [r for r in self.requests if "enerateContent" in r["path"]]

    def count_requests(self) -> list[dict]:
        return [r for r in self.requests if ":countTokens" in r["path"]]

    def start(self) -> FakeGemini:
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, after every test.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # --- used by the handler -----------------------------------------------------------
    def _next_script(self) -> Script:
        with self._lock:
            return self._scripts.popleft() if self._scripts else self.default

    def _record(self, path: str, headers, body) -> None:
        kept = {k.lower(): v for k, v in headers.items() if k.lower() != "x-goog-api-key"}
        kept["has_api_key"] = bool(headers.get("x-goog-api-key"))
        with self._lock:
            self.requests.append({"path": path, "headers": kept, "body": body})


def _usage_json(script: Script, output_so_far: int) -> dict:
    prompt, _ = script.usage
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output_so_far,
        "totalTokenCount": prompt + output_so_far + script.thinking_tokens,
    }
    if script.usage_without_output:
        del usage["candidatesTokenCount"]
    if script.thinking_tokens:
        usage["thoughtsTokenCount"] = script.thinking_tokens
    return usage


def _chunk_json(script: Script, text: str | None, *, last: bool, index: int) -> dict:
    candidate: dict = {"index": 0}
    if text is not None:
        candidate["content"] = {"role": "model", "parts": [{"text": text}]}
    body: dict = {"candidates": [candidate], "modelVersion": "fake-gemini"}
    if last:
        candidate["finishReason"] = script.finish_reason
    if script.usage is not None and (script.usage_on_every_chunk or last):
        _, output = script.usage
        count = len(script.chunks)
        so_far = output if last else math.ceil(output * (index + 1) / max(count, 1))
        body["usageMetadata"] = _usage_json(script, so_far)
    return body


def read_recording(path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of a recorded response; the framing headers are the fake's."""
    with open(path, "rb") as file:
        head, _, body = file.read().partition(b"\n\n")
    status_line, *header_lines = head.decode().split("\n")
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.lower() != "transfer-encoding":
            headers.append((name.strip(), value.strip()))
    return int(status_line.split()[1]), headers, body


def _handler_for(fake: FakeGemini):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # --- plumbing -------------------------------------------------------------
        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return raw.decode(errors="replace")

        def _json(self, status: int, payload, headers: dict | None = None):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, script: Script):
            status = script.error_status
            headers = {"Retry-After": str(script.retry_after)} if script.retry_after else {}
            self._json(
                status,
                {
                    "error": {
                        "code": status,
                        "message": f"fake error {status}",
                        "status": ERROR_STATUS.get(status, "UNKNOWN"),
                    }
                },
                headers,
            )

        def _write_chunk(self, data: bytes) -> None:
            if getattr(self, "_connection_delimited", False):
                self.wfile.write(data)  # the body ends when the connection closes
            else:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            self._written = getattr(self, "_written", 0) + 1

        def _sleep(self, seconds: float) -> bool:
            """False when the server is stopping."""
            return not fake.stopping.wait(seconds) if seconds > 0 else True

        # --- routes ---------------------------------------------------------------
        def do_GET(self):
            if self.path.startswith("/_fake/requests"):
                with fake._lock:
                    return self._json(200, fake.requests)
            if self.path.startswith("/_fake/closed"):
                with fake._lock:
                    return self._json(200, fake.closed)
            self._json(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})

        def do_POST(self):
            body = self._body()
            path = self.path
            if path.startswith("/_fake/"):
                return self._control(path, body)
            fake._record(path, self.headers, body)
            if ":streamGenerateContent" in path:
                self._written = 0
                try:
                    return self._stream(fake._next_script())
                except (BrokenPipeError, ConnectionResetError):
                    with fake._lock:
                        fake.closed.append({"path": path, "chunks_written": self._written})
                    self.close_connection = True
                    return None
            if ":generateContent" in path:
                return self._generate(fake._next_script())
            if ":countTokens" in path:
                return self._count(body)
            self._json(404, {"error": {"code": 404, "message": "no such method"}})

        def _control(self, path, body):
            if path.startswith("/_fake/script"):
                fake.script(*(body if isinstance(body, list) else [body]))
            elif path.startswith("/_fake/default"):
                fake.default = Script(**body)
            elif path.startswith("/_fake/reset"):
                fake.reset()
            self._json(200, {"ok": True})

        def _count(self, body):
            if fake.count_error_status:
                return self._error(Script(error_status=fake.count_error_status))
            text = "".join(
                part.get("text", "")
                for content in (body or {}).get("contents", [])
                for part in content.get("parts", [])
            )
            total = fake.count_tokens_value
            self._json(200, {"totalTokens": math.ceil(len(text) / 4) if total is None else total})

        def _generate(self, script: Script):
            if script.error_status:
                return self._error(script)
            payload = _chunk_json(script, "".join(script.chunks), last=True, index=0)
            self._json(200, payload)

        def _replay(self, script: Script):
            status, headers, body = read_recording(script.replay)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            delimited = status == 200 and ("connection", "close") in (
                (n.lower(), v.lower()) for n, v in headers
            )
            if status != 200:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self._connection_delimited = delimited
            if not delimited:
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")  # as every stream of the fake
            self.end_headers()
            self.close_connection = True
            if script.replay_piece_bytes:
                size = script.replay_piece_bytes
                pieces = [body[i : i + size] for i in range(0, len(body), size)]
            else:
                pieces = [event + b"\r\n\r\n" for event in body.split(b"\r\n\r\n")]
                pieces[-1] = pieces[-1][:-4]
            for piece in pieces:
                if piece:
                    self._write_chunk(piece)
            if not delimited:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        def _stream(self, script: Script):
            if script.replay:
                return self._replay(script)
            if script.error_status:
                return self._error(script)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            if script.cut_after is not None:
                self._connection_delimited = True
                self.send_header("Connection", "close")
            else:
                self.send_header("Transfer-Encoding", "chunked")
                # The fake closes the connection after a stream: say so, or a pooled client
                # may send its next request on it before the close arrives (and fail).
                self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if script.cut_after is not None:
                return self._cut(script)
            if script.block_prompt:
                event = {"promptFeedback": {"blockReason": script.block_prompt}}
                if script.usage:
                    event["usageMetadata"] = _usage_json(script, 0)
                return self._finish_stream([event])
            if not self._sleep(script.first_delay_ms / 1000):
                return
            chunks = [] if script.block_reply else script.chunks
            events = []
            for index, text in enumerate(chunks):
                if script.stall_after == index and not self._sleep(script.stall_s):
                    return
                if script.drop_after == index:
                    return self._drop()
                if script.malformed_after == index:
                    self._write_chunk(b'data: {"candidates": [{"content": \r\n\r\n')
                    return self._finish_stream([])
                if index and not self._sleep(script.delay_ms / 1000):
                    return
                last = index == len(chunks) - 1
                self._write_chunk(self._event(_chunk_json(script, text, last=last, index=index)))
            stall_at_end = script.stall_after is not None and script.stall_after >= len(chunks)
            if stall_at_end and not self._sleep(script.stall_s):
                return
            if script.block_reply:
                reply = {"candidates": [{"index": 0, "finishReason": "SAFETY"}]}
                if script.usage:
                    reply["usageMetadata"] = _usage_json(script, 0)
                events.append(reply)
            self._finish_stream(events)

        def _cut(self, script: Script):
            """K chunks, none of them the last (so no finishReason), then a clean close."""
            for index, text in enumerate(script.chunks[: script.cut_after]):
                if index and not self._sleep(script.delay_ms / 1000):
                    return
                self._write_chunk(self._event(_chunk_json(script, text, last=False, index=index)))
            # Returning closes the connection (close_connection): the body ends there.

        def _event(self, payload: dict) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"

        def _finish_stream(self, events):
            for event in events:
                self._write_chunk(self._event(event))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _drop(self):
            # No terminating chunk: the client sees an incomplete chunked body.
            self.wfile.flush()
            self.connection.shutdown(2)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=4, help="chunks per reply")
    parser.add_argument("--delay-ms", type=int, default=0, help="gap between chunks")
    parser.add_argument("--usage", action="store_true", help="report usageMetadata")
    args = parser.parse_args()
    fake = FakeGemini(args.host, args.port)
    words = [f" word{i}" for i in range(args.chunks)]
    fake.default = Script(
        chunks=words,
        delay_ms=args.delay_ms,
        usage=(20, args.chunks) if args.usage else None,
    )
    print(f"PORT {fake.server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        fake.server.serve_forever()


if __name__ == "__main__":
    main()
