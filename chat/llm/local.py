"""An offline, deterministic model for `make run` without a key, demos and benchmarks.

Its reply depends on the message, streams in several chunks with a configurable delay
(LOCAL_LLM_CHUNK_DELAY_MS), optionally in exactly LOCAL_LLM_CHUNKS chunks, and reports
usage like a real provider: billing's input estimate (estimate_input_tokens, the system
prompt estimated) and running output count (OutputCount), the rules the reservation and the
budget cap use.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence

from django.conf import settings

from billing.tokens import OutputCount, estimate_input_tokens, estimate_tokens
from billing.usage import Usage
from chat.llm.base import GenerationOptions, StreamResult, Turn

OPENINGS = (
    "Here is an idea to build on.",
    "Let's shape that into a concept.",
    "Good question for a collection.",
    "Happy to help with that.",
)
ANGLES = (
    "Start from a clear visual motif and let each token in the collection vary one trait.",
    "Think about rarity: a few striking pieces give the whole set a story.",
    "A limited palette keeps a generative series coherent while traits change.",
    "Write the collection's lore first; the artwork follows more easily.",
    "Consider how the piece reads as a small thumbnail on a marketplace.",
    "Metadata matters: name traits so collectors can filter and compare them.",
)


def compose_reply(message: str) -> str:
    digest = hashlib.sha256(message.encode("utf-8", "surrogatepass")).digest()
    words = [w.strip(".,!?;:") for w in message.split()][:8]
    topic = " ".join(words) or "your idea"
    angles = [ANGLES[(digest[i] + i) % len(ANGLES)] for i in range(3)]
    return " ".join(
        [OPENINGS[digest[0] % len(OPENINGS)], f'You asked about "{topic}".', *dict.fromkeys(angles)]
    )


def split_chunks(text: str, count: int) -> list[str]:
    if count <= 0:
        words = text.split(" ")
        return [
            " ".join(words[i : i + 3]) + (" " if i + 3 < len(words) else "")
            for i in range(0, len(words), 3)
        ]
    size, extra = divmod(len(text), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        chunks.append(text[start:end] or " ")
        start = end
    return chunks


class LocalStream:
    def __init__(self, *, input_tokens: int, chunks: list[str], delay_s: float, cap: int):
        self._input_tokens = input_tokens
        self._chunks = chunks
        self._delay_s = delay_s
        self._closed = threading.Event()
        self._output = OutputCount(cap)  # what was sent
        self.result: StreamResult | None = None

    @property
    def usage_so_far(self) -> Usage:
        return Usage(input_tokens=self._input_tokens, output_tokens=self._output.tokens)

    def __iter__(self) -> Iterator[str]:
        finish = "stop"
        for index, chunk in enumerate(self._chunks):
            if index and self._delay_s and self._closed.wait(self._delay_s):
                return
            if self._closed.is_set():
                return
            with_chunk = self._output.with_text(chunk)
            if with_chunk.passes_cap:
                finish = "max_tokens"
                break
            self._output = with_chunk
            yield chunk
        self.result = StreamResult(finish_reason=finish, usage=self.usage_so_far)

    def close(self) -> None:
        self._closed.set()


class LocalProvider:
    name = "local"
    model = "local-echo-1"

    def status(self) -> str:
        return "ok"

    def stream_reply(
        self,
        *,
        system_prompt: str,
        history: Sequence[Turn],
        message: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,  # ignored: the reply is deterministic
    ) -> LocalStream:
        return LocalStream(
            input_tokens=estimate_input_tokens(
                system_tokens=estimate_tokens(system_prompt),
                history_texts=[turn.text for turn in history],
                message=message,
            ),
            chunks=split_chunks(compose_reply(message), settings.LOCAL_LLM_CHUNKS),
            delay_s=settings.LOCAL_LLM_CHUNK_DELAY_MS / 1000,
            cap=max_output_tokens,
        )

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)
