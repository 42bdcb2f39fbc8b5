"""Google Gemini through the official google-genai SDK (3.x).

The SDK is the client: configuration, auth, retries, errors and countTokens. The reply's
stream goes by default through chat.llm.gemini_rest (GEMINI_STREAM_CLIENT=rest): the same
request on the SDK's own HTTP client, parsed without a pydantic object per chunk (ADR 0002);
GEMINI_STREAM_CLIENT=sdk streams through `generate_content_stream` (SdkGeminiStream, the
reference the rest path is proven equal to).

Notes that shaped this module (checked against the SDK's source):
- api_version is set explicitly (3.x defaults to v1; the streaming API we use is v1beta);
- HttpOptions.timeout is in milliseconds and unset means no timeout at all: always set;
  it bounds each connect/read, i.e. the silence between chunks;
- the SDK's own retry (HttpRetryOptions) covers getting the response, never a failure
  inside a stream; we add none of our own;
- network failures are not wrapped by the SDK: they surface as httpx2 exceptions;
- usageMetadata may come on every chunk as a running total: keep the last one;
- a stream always ends with a finishReason: one that ends without it was cut (a proxy or
  the server closed a connection-delimited body, which HTTP sees as a normal end);
- usageMetadata omits zero fields (proto3 JSON): candidatesTokenCount may be absent;
- automatic continuation is turned off so that one message is one request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import httpx2
from django.conf import settings
from google import genai
from google.genai import types

from billing.usage import Usage
from chat.llm import gemini_rest, require_available
from chat.llm.base import GenerationOptions, StreamResult, Turn
from chat.llm.errors import ContentBlocked, UpstreamIncomplete, as_llm_error

logger = logging.getLogger(__name__)

HARM_CATEGORIES = (
    types.HarmCategory.HARM_CATEGORY_HARASSMENT,
    types.HarmCategory.HARM_CATEGORY_HATE_SPEECH,
    types.HarmCategory.HARM_CATEGORY_SEXUALLY_EXPLICIT,
    types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT,
)
RETRY_STATUSES = [408, 429, 500, 502, 503, 504]
# Idle upstream connections kept for the next replies (httpx's default); the connections
# open at once are bounded by GEMINI_MAX_CONNECTIONS.
KEEP_ALIVE_CONNECTIONS = 20


class SdkGeminiStream:
    """Through the SDK's generate_content_stream. Iterating sends the request (the SDK is
    lazy) and yields text deltas."""

    def __init__(self, request):
        self._request = request
        self._chunks = None
        self.result: StreamResult | None = None
        self.usage_so_far: Usage | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._relay()
        except Exception as exc:
            raise as_llm_error(exc) from exc

    def _relay(self) -> Iterator[str]:
        self._chunks = self._request()
        usage = None
        finish = None
        sent_text = False
        for chunk in self._chunks:
            feedback = chunk.prompt_feedback
            if feedback is not None and feedback.block_reason:
                raise ContentBlocked(details={"block_reason": str(feedback.block_reason.value)})
            if chunk.usage_metadata is not None and (
                chunk.usage_metadata.prompt_token_count or chunk.usage_metadata.total_token_count
            ):
                usage = chunk.usage_metadata  # a running total: the last one wins
                self.usage_so_far = _usage(usage)
            candidate = chunk.candidates[0] if chunk.candidates else None
            if candidate is None:
                continue
            if candidate.content is not None and candidate.content.parts:
                text = "".join(
                    part.text for part in candidate.content.parts if part.text and not part.thought
                )
                if text:
                    sent_text = True
                    yield text
            if candidate.finish_reason:
                finish = candidate.finish_reason
        if finish is None:
            raise UpstreamIncomplete()
        if finish == types.FinishReason.SAFETY and not sent_text:
            raise ContentBlocked("The reply was blocked by the model's safety filters.")
        self.result = StreamResult(
            finish_reason=_finish_reason(finish),
            usage=_usage(usage) if usage is not None else None,
        )

    def close(self) -> None:
        if self._chunks is not None:
            try:
                self._chunks.close()  # closes the HTTP response
            except Exception:
                logger.debug("Closing the Gemini stream failed", exc_info=True)


def _usage(metadata) -> Usage:
    return Usage(
        input_tokens=metadata.prompt_token_count or 0,
        output_tokens=metadata.candidates_token_count or 0,
        thinking_tokens=metadata.thoughts_token_count or 0,
    )


def _finish_reason(reason) -> str:
    name = getattr(reason, "name", str(reason))
    return name.lower()


class GeminiProvider:
    name = "gemini"

    def __init__(self):
        self.model = settings.GEMINI_MODEL
        self._client: genai.Client | None = None
        self._stream_target: gemini_rest.StreamTarget | None = None
        self._stream_target_read = False
        self._lock = threading.Lock()

    def status(self) -> str:
        return "ok" if settings.GEMINI_API_KEY else "unavailable"

    @property
    def client(self) -> genai.Client:
        """Created on first use; one per process, shared by threads (API-key auth)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    require_available(self)
                    self._client = genai.Client(
                        api_key=settings.GEMINI_API_KEY,
                        http_options=types.HttpOptions(
                            api_version=settings.GEMINI_API_VERSION,
                            base_url=settings.GEMINI_BASE_URL or None,
                            timeout=settings.GEMINI_TIMEOUT_MS,
                            client_args={
                                "limits": httpx2.Limits(
                                    max_connections=settings.GEMINI_MAX_CONNECTIONS,
                                    max_keepalive_connections=KEEP_ALIVE_CONNECTIONS,
                                )
                            },
                            retry_options=types.HttpRetryOptions(
                                attempts=settings.GEMINI_RETRY_ATTEMPTS,
                                initial_delay=settings.GEMINI_RETRY_INITIAL_DELAY_S,
                                max_delay=settings.GEMINI_RETRY_MAX_DELAY_S,
                                http_status_codes=RETRY_STATUSES,
                            ),
                        ),
                    )
        return self._client

    @property
    def stream_target(self) -> gemini_rest.StreamTarget | None:
        """The rest path's request target, read once from the SDK's client; None when the
        SDK's client cannot be used that way (then the SDK streams)."""
        if not self._stream_target_read:
            client = self.client
            with self._lock:
                if not self._stream_target_read:
                    self._stream_target = gemini_rest.StreamTarget.from_client(client, self.model)
                    self._stream_target_read = True
        return self._stream_target

    def stream_reply(
        self,
        *,
        system_prompt: str,
        history: Sequence[Turn],
        message: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> SdkGeminiStream | gemini_rest.RestGeminiStream:
        options = options or GenerationOptions()
        if settings.GEMINI_STREAM_CLIENT != "sdk":
            target = self.stream_target
            if target is not None:
                body = gemini_rest.request_body(
                    system_prompt=system_prompt,
                    history=history,
                    message=message,
                    max_output_tokens=max_output_tokens,
                    options=options,
                    safety_threshold=settings.GEMINI_SAFETY_THRESHOLD,
                )
                return gemini_rest.RestGeminiStream(target, body)
        return self.sdk_stream_reply(
            system_prompt=system_prompt,
            history=history,
            message=message,
            max_output_tokens=max_output_tokens,
            options=options,
        )

    def sdk_stream_reply(
        self,
        *,
        system_prompt: str,
        history: Sequence[Turn],
        message: str,
        max_output_tokens: int,
        options: GenerationOptions,
    ) -> SdkGeminiStream:
        contents = [
            types.Content(role=turn.role, parts=[types.Part(text=turn.text)]) for turn in history
        ]
        contents.append(types.Content(role="user", parts=[types.Part(text=message)]))
        config = types.GenerateContentConfig(
            system_instruction=system_prompt or None,
            max_output_tokens=max_output_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            stop_sequences=list(options.stop) or None,
            safety_settings=[
                types.SafetySetting(category=category, threshold=settings.GEMINI_SAFETY_THRESHOLD)
                for category in HARM_CATEGORIES
            ],
            automatic_continuation=False,
        )
        client = self.client
        return SdkGeminiStream(
            lambda: client.models.generate_content_stream(
                model=self.model, contents=contents, config=config
            )
        )

    def count_tokens(self, text: str) -> int:
        """countTokens takes contents only: no system instruction, no config."""
        try:
            response = self.client.models.count_tokens(model=self.model, contents=text)
        except Exception as exc:
            raise as_llm_error(exc) from exc
        return int(response.total_tokens or 0)
