"""The provider interface the rest of the code uses.

    provider = get_provider()
    stream = provider.stream_reply(system_prompt=..., history=[Turn("user", ...), ...],
                                   message="...", max_output_tokens=512,
                                   options=GenerationOptions(temperature=0.2))  # optional
    for delta in stream:          # text deltas, as they arrive; raises LLMError subclasses
        ...
    stream.result                 # StreamResult(finish_reason, usage) once exhausted
                                  # (usage: billing.usage.Usage, source PROVIDER)
    stream.usage_so_far           # the provider's running usage report (None until one came)
    stream.close()                # abandon the call (the reply was stopped); idempotent

Providers never raise anything but `LLMError` subclasses from `stream_reply`, iteration
or `count_tokens`: SDK and network exceptions are mapped inside the provider.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from billing.usage import Usage


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "model"]
    text: str


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Sampling settings a caller may choose (the /v1 API); None: the model's default."""

    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamResult:
    # "stop", "max_tokens", "safety", or the provider's reason in lower case.
    finish_reason: str
    usage: Usage | None


class ReplyStream(Protocol):
    def __iter__(self) -> Iterator[str]: ...

    @property
    def result(self) -> StreamResult | None:
        """Set once the stream ended normally; None before that or after a failure."""

    @property
    def usage_so_far(self) -> Usage | None:
        """The provider's latest usage report, while the stream runs (what it bills for a
        call closed early); None when none came."""

    def close(self) -> None: ...


class LLMProvider(Protocol):
    name: str  # "gemini" | "local"
    model: str

    def status(self) -> str:
        """ "ok", "unavailable" (e.g. no API key) or "not_configured"."""

    def stream_reply(
        self,
        *,
        system_prompt: str,
        history: Sequence[Turn],
        message: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> ReplyStream: ...

    def count_tokens(self, text: str) -> int: ...
