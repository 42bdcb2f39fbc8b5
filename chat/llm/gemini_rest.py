"""Gemini's streaming call without the SDK's per-chunk objects (docs/decisions/0002).

The google-genai SDK stays the Gemini client: it is configured once (GeminiProvider.client)
and this module takes from it what a request needs, so both paths send the same request:
- the URL, headers (API key, telemetry, X-Server-Timeout) and timeout its own request
  builder produces for `models/{model}:streamGenerateContent?alt=sse`;
- its pooled HTTP client (httpx2; one per process, shared by every greenlet);
- its retry (the tenacity object HttpRetryOptions configured: 408/429/5xx and connect or
  timeout failures, before the response starts, never inside a stream);
- its errors: an error status or an `{"error": ...}` event raises the SDK's own APIError.
What it skips is the per-message and per-chunk work: pydantic request models, the
dict -> JSON -> dict -> pydantic round trip of every chunk, AFC and continuation wrappers.

Those are private attributes of the SDK's client (`_api_client`): read once per provider,
pinned by tests/chat/test_gemini_stream_equivalence.py (same request body, path and
headers on the fake server, same deltas, results and errors on every recorded stream).

The SSE framing mirrors the SDK's (google/genai/_api_client.py, `_SseLineDecoder` and
`HttpResponse._iter_response_stream`): lines end at CR, LF or CRLF only; `data: ` lines
are joined until a blank line; other lines are buffered until their braces balance (an
error body sent without `data: `); what is left at the end is one more event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.genai import _transformers as sdk_transformers
from google.genai import errors as genai_errors
from google.genai import types

from billing.usage import Usage
from chat.llm.base import GenerationOptions, StreamResult, Turn
from chat.llm.errors import ContentBlocked, UpstreamIncomplete, as_llm_error

logger = logging.getLogger(__name__)

HARM_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)
# The SDK's enums are case-insensitive; a block reason it knows is reported in upper case.
_KNOWN_BLOCK_REASONS = frozenset(reason.value for reason in types.BlockedReason)


def request_body(
    *,
    system_prompt: str,
    history: Sequence[Turn],
    message: str,
    max_output_tokens: int,
    options: GenerationOptions,
    safety_threshold: str,
) -> bytes:
    """The JSON the SDK sends for GeminiProvider's config, fields in the SDK's order."""
    contents = [{"parts": [{"text": turn.text}], "role": turn.role} for turn in history]
    contents.append({"parts": [{"text": message}], "role": "user"})
    body: dict[str, Any] = {"contents": contents}
    if system_prompt:
        body["systemInstruction"] = {"parts": [{"text": system_prompt}], "role": "user"}
    body["safetySettings"] = [
        {"category": category, "threshold": safety_threshold} for category in HARM_CATEGORIES
    ]
    config: dict[str, Any] = {}
    if options.temperature is not None:
        config["temperature"] = float(options.temperature)
    if options.top_p is not None:
        config["topP"] = float(options.top_p)
    config["maxOutputTokens"] = int(max_output_tokens)
    if options.stop:
        config["stopSequences"] = list(options.stop)
    body["generationConfig"] = config
    return json.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """Where and how to send streamGenerateContent: all of it read from the SDK's client."""

    http: Any  # the SDK's httpx2.Client
    url: str
    headers: dict[str, str]
    timeout: float | None
    retry: Any  # the SDK's tenacity.Retrying

    @classmethod
    def from_client(cls, client, model: str) -> StreamTarget | None:
        """None when the SDK would not send it through its httpx client (google-auth
        sessions, Vertex AI with credentials): the provider then streams through the SDK."""
        api = client._api_client
        if api._use_google_auth_sync() or (api.vertexai and not api.api_key):
            return None
        path = f"{sdk_transformers.t_model(api, model)}:streamGenerateContent?alt=sse"
        request = api._build_request("post", path, {}, None)
        return cls(
            http=api._httpx_client,
            url=api._httpx_url(request.url, is_async=False),
            headers=request.headers,
            timeout=request.timeout,
            retry=api._retry,
        )

    def open(self, body: bytes):
        """The streaming response, status 200; retried as the SDK retries."""
        return self.retry(self._open_once, body)

    def _open_once(self, body: bytes):
        request = self.http.build_request(
            "post", self.url, content=body, headers=self.headers, timeout=self.timeout
        )
        response = self.http.send(request, stream=True)
        genai_errors.APIError.raise_for_response(response)  # reads and closes an error
        return response


def iter_sse_events(chunks: Iterable[bytes]) -> Iterator[str]:
    """The JSON texts of an SSE body, framed as the SDK frames them."""
    pending: list[bytes] = []  # the start of a line not yet ended
    trailing_cr = False
    data: list[str] = []
    raw = _RawJsonLines()
    for chunk in chunks:
        if trailing_cr:
            chunk = b"\r" + chunk
            trailing_cr = False
        if chunk.endswith(b"\r"):  # a CRLF may be split between two reads
            trailing_cr = True
            chunk = chunk[:-1]
        if not chunk:
            continue
        lines = chunk.splitlines()  # bytes split at CR, LF and CRLF only
        tail = None if chunk.endswith((b"\r", b"\n")) else lines.pop()
        if lines and pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending = []
        if tail is not None:
            pending.append(tail)
        for raw_line in lines:
            line = raw_line.decode("utf-8", errors="replace")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data: "):
                data.append(line[6:])
            else:
                event = raw.add(line)
                if event is not None:
                    yield event
    if pending or trailing_cr:
        line = b"".join(pending).decode("utf-8", errors="replace")
        if line.startswith("data: "):
            data.append(line[6:])
        elif line:
            event = raw.add(line)
            if event is not None:
                yield event
        elif data:
            yield "\n".join(data)
            data = []
    remaining = raw.flush()
    if remaining:
        yield remaining
    if data:
        yield "\n".join(data)


class _RawJsonLines:
    """Lines outside `data: `, buffered until their braces balance outside strings."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def add(self, line: str) -> str | None:
        for c in line:
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == "\\":
                    self._escaped = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c == "{":
                self._depth += 1
            elif c == "}":
                self._depth -= 1
        self._lines.append(line)
        return self.flush() if self._depth == 0 else None

    def flush(self) -> str:
        text = "".join(self._lines)
        self._lines = []
        self._depth = 0
        self._in_string = False
        self._escaped = False
        return text


class RestGeminiStream:
    """Iterating sends the request and yields text deltas; the same rules as the SDK's
    stream (chat.llm.gemini.SdkGeminiStream), read from plain dicts."""

    def __init__(self, target: StreamTarget, body: bytes):
        self._target = target
        self._body = body
        self._response = None
        self._closed = False
        self._reading = False  # inside the generator, not suspended at a yield
        self.result: StreamResult | None = None
        self.usage_so_far: Usage | None = None

    def __iter__(self) -> Iterator[str]:
        self._reading = True
        try:
            for delta in self._relay():
                self._reading = False
                yield delta
                self._reading = True
        except Exception as exc:
            raise as_llm_error(exc) from exc
        finally:
            self._reading = False
            self.close()

    def _relay(self) -> Iterator[str]:
        if self._closed:
            return
        self._response = response = self._target.open(self._body)
        usage = None
        finish = None
        sent_text = False
        for text in iter_sse_events(response.iter_bytes()):
            event = json.loads(text)  # a ValueError: the malformed-response error
            if not isinstance(event, dict):
                if isinstance(event, int | float):  # the SDK's converter fails on these
                    raise ValueError("A stream event is a number.")
                continue  # the SDK reads a list, a string or null as an empty chunk
            if event and next(iter(event)) == "error":  # as the SDK: '{"error": ...'
                genai_errors.APIError.raise_error(
                    event.get("error", {}).get("code"), event, response
                )
            feedback = event.get("promptFeedback")
            if feedback and feedback.get("blockReason"):
                reason = str(feedback["blockReason"])
                if reason.upper() in _KNOWN_BLOCK_REASONS:
                    reason = reason.upper()
                raise ContentBlocked(details={"block_reason": reason})
            metadata = event.get("usageMetadata")
            if metadata and (metadata.get("promptTokenCount") or metadata.get("totalTokenCount")):
                usage = metadata  # a running total: the last one wins
                self.usage_so_far = _usage(usage)
            candidates = event.get("candidates")
            candidate = candidates[0] if candidates else None
            if candidate is None:
                continue
            content = candidate.get("content")
            parts = content.get("parts") if content else None
            if parts:
                delta = "".join(
                    part["text"] for part in parts if part.get("text") and not part.get("thought")
                )
                if delta:
                    sent_text = True
                    yield delta
            if candidate.get("finishReason"):
                finish = str(candidate["finishReason"])
        if finish is None:
            raise UpstreamIncomplete()
        if finish.upper() == "SAFETY" and not sent_text:
            raise ContentBlocked("The reply was blocked by the model's safety filters.")
        self.result = StreamResult(
            finish_reason=finish.lower(),
            usage=_usage(usage) if usage is not None else None,
        )

    def close(self) -> None:
        """Closes the HTTP response, unless another greenlet or thread is reading it (as
        the SDK's stream cannot be closed mid-read): that reader closes it when it stops."""
        self._closed = True
        if self._reading:
            return
        response, self._response = self._response, None
        if response is not None:
            try:
                response.close()
            except Exception:
                logger.debug("Closing the Gemini stream failed", exc_info=True)


def _usage(metadata: dict) -> Usage:
    return Usage(
        input_tokens=int(metadata.get("promptTokenCount") or 0),
        output_tokens=int(metadata.get("candidatesTokenCount") or 0),
        thinking_tokens=int(metadata.get("thoughtsTokenCount") or 0),
    )
