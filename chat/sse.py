"""Server-Sent Events framing, in one place.

Every event is `id: <n>` + `data: <one JSON object>` + a blank line. The payload is always
JSON-encoded, so model text containing newlines or `data:` can never forge an event.
"""

import json

KEEP_ALIVE = b": keep-alive\n\n"
# A resumed stream opens with this comment, so its headers go out at once, before any event
# is there to relay, and its first event carries RETRY: how long EventSource waits before
# reconnecting (ms). Not a block of its own: the spec dispatches nothing for a `retry:`-only
# block, but several clients (httpx-sse) hand it out as an event with empty data.
RESUMED = b": resumed\n\n"
RETRY = b"retry: 1000\n"

HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and similar proxies: do not buffer this response.
    "X-Accel-Buffering": "no",
}
CONTENT_TYPE = "text/event-stream"


def event(data: dict, id: int) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # "replace": a lone surrogate from upstream must not break the stream.
    return f"id: {id}\ndata: {payload}\n\n".encode("utf-8", "replace")


# The OpenAI-compatible /v1 stream: bare `data:` lines (no ids), then a literal [DONE].
DONE = b"data: [DONE]\n\n"


def data_only(data: dict) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode("utf-8", "replace")
