"""Parse an SSE body the way a browser's EventSource does, for assertions."""

from __future__ import annotations

import json


def parse_events(raw: bytes | str) -> list[dict]:
    """Every `data:` event as its JSON object, in order; comments are skipped."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    events = []
    for block in text.split("\n\n"):
        data_lines = [
            line[len("data: ") :] for line in block.split("\n") if line.startswith("data:")
        ]
        if data_lines:
            events.append(json.loads("\n".join(data_lines)))
    return events


def streamed_body(response) -> bytes:
    return b"".join(response.streaming_content)
