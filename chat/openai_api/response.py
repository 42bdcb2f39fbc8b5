"""The objects the /v1 API answers with, in OpenAI's shapes.

A streamed answer is `chat.completion.chunk` objects (`delta.content`), a last chunk with
`finish_reason`, a usage chunk (empty `choices`) when `stream_options.include_usage`, then
`data: [DONE]`. A non-streamed answer is one `chat.completion` with `usage`.
"""

from __future__ import annotations

from billing.usage import Usage
from config.api import openai_error

# Our finish reasons (the provider's, lower-cased) to OpenAI's.
_FINISH_REASONS = {
    "stop": "stop",
    "max_tokens": "length",
    "safety": "content_filter",
    "recitation": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
    "spii": "content_filter",
    "image_safety": "content_filter",
}


def finish_reason(ours: str) -> str:
    return _FINISH_REASONS.get(ours, "stop")


def usage(billed: Usage | None) -> dict:
    """What the exchange consumed (as written to its ledger entry)."""
    prompt = billed.input_tokens if billed else 0
    completion = billed.output_tokens if billed else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _head(*, completion_id: str, created: int, model: str, kind: str) -> dict:
    return {
        "id": completion_id,
        "object": kind,
        "created": created,
        "model": model,
        "system_fingerprint": None,
    }


def completion(
    *, completion_id: str, created: int, model: str, text: str, finish: str, billed: Usage | None
) -> dict:
    return {
        **_head(completion_id=completion_id, created=created, model=model, kind="chat.completion"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage(billed),
    }


def chunk(
    *,
    completion_id: str,
    created: int,
    model: str,
    delta: dict,
    finish: str | None = None,
    with_usage_field: bool = False,
) -> dict:
    body = {
        **_head(
            completion_id=completion_id, created=created, model=model, kind="chat.completion.chunk"
        ),
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage_field:  # as OpenAI does when include_usage: null until the last chunk
        body["usage"] = None
    return body


def usage_chunk(*, completion_id: str, created: int, model: str, billed: Usage | None) -> dict:
    return {
        **_head(
            completion_id=completion_id, created=created, model=model, kind="chat.completion.chunk"
        ),
        "choices": [],
        "usage": usage(billed),
    }


def stream_error(code: str, message: str, status: int) -> dict:
    """The event that ends a stream that failed after output began; the openai SDKs raise
    APIError on it."""
    _, body, _ = openai_error(code, message, status)
    return body


def model_object(model_id: str, owned_by: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owned_by}
