"""Parsing and validating a /v1/chat/completions request into a CompletionRequest.

Supported: model, messages (system/developer, user, assistant; string content or text
parts), stream, stream_options.include_usage, max_tokens / max_completion_tokens,
temperature, top_p, stop. Accepted and ignored because they change nothing in the answer:
user, safety_identifier, metadata, store, service_tier, prompt_cache_*. Accepted only at the
value that changes nothing: n=1, logprobs=false, presence/frequency_penalty=0, logit_bias={},
response_format text, modalities ["text"]. Every other parameter is a 400
`unsupported_parameter` naming it: never silently ignored. A null value counts as absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from chat.exceptions import InvalidParameter, UnsupportedParameter
from chat.llm.base import GenerationOptions, Turn
from chat.text import storable_text

SUPPORTED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
    }
)
IGNORED = frozenset(
    {
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
    }
)
# Parameters accepted only at their no-op value.
NO_OP_VALUES = {
    "n": (1,),
    "logprobs": (False,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logit_bias": ({},),
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
}
MAX_STOP_SEQUENCES = 4
SYSTEM_ROLES = ("system", "developer")
MESSAGE_KEYS = frozenset({"role", "content", "name", "refusal"})
NON_TEXT_PARTS = ("image_url", "input_image", "input_audio", "file", "audio")


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    system: str  # the caller's system (and developer) messages, joined
    history: list[Turn]  # the conversation before the last user message
    message: str  # the last user message
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)


def parse_completion_request(data) -> CompletionRequest:
    if not isinstance(data, dict):
        raise InvalidParameter("The body must be a JSON object.")
    given = {key: value for key, value in data.items() if value is not None}
    _refuse_unsupported(given)
    model = given.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidParameter(
            "'model' is required: a model id from GET /v1/models.", param="model"
        )
    system, history, message = _conversation(given.get("messages"))
    stream = _boolean(given, "stream")
    include_usage = _stream_options(given, stream=stream)
    return CompletionRequest(
        model=model,
        system=system,
        history=history,
        message=message,
        stream=stream,
        include_usage=include_usage,
        max_tokens=_max_tokens(given),
        options=GenerationOptions(
            temperature=_number(given, "temperature", 0, 2),
            top_p=_number(given, "top_p", 0, 1),
            stop=_stop(given),
        ),
    )


def _refuse_unsupported(given: dict) -> None:
    for name, value in given.items():
        if name in SUPPORTED or name in IGNORED:
            continue
        allowed = NO_OP_VALUES.get(name)
        if allowed is not None and any(_same(value, ok) for ok in allowed):
            continue
        if allowed is not None:
            raise UnsupportedParameter(
                f"'{name}' is supported only as {json.dumps(allowed[0])} (its no-op value).",
                param=name,
            )
        raise UnsupportedParameter(f"The parameter '{name}' is not supported.", param=name)


def _same(value, expected) -> bool:
    # bool is an int in Python: True must not pass for n=1, nor 0 for logprobs=false.
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected
    return value == expected


def _conversation(messages) -> tuple[str, list[Turn], str]:
    """(system text, earlier turns, last user message). Consecutive turns of one role are
    joined (Gemini wants user and model to alternate); empty ones are dropped."""
    if not isinstance(messages, list) or not messages:
        raise InvalidParameter("'messages' must be a non-empty array.", param="messages")
    system: list[str] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidParameter(f"'{where}' must be an object.", param=where)
        role = message.get("role")
        if role in ("tool", "function"):
            raise UnsupportedParameter(
                f"'{where}.role': messages with role '{role}' are not supported (no tool calling).",
                param=f"{where}.role",
            )
        if role not in (*SYSTEM_ROLES, "user", "assistant"):
            raise InvalidParameter(
                f"'{where}.role' must be system, developer, user or assistant.",
                param=f"{where}.role",
            )
        for key, value in message.items():
            if key not in MESSAGE_KEYS and value is not None:
                raise UnsupportedParameter(
                    f"'{where}.{key}' is not supported.", param=f"{where}.{key}"
                )
        # JSON may carry lone surrogates (\ud800), which no UTF-8 request to the model can
        # hold, and NUL: chat/text.py's rule (the one for model text) makes them U+FFFD.
        text = storable_text(_content(message.get("content"), where))
        if not text.strip():
            continue
        if role in SYSTEM_ROLES:
            system.append(text)
            continue
        turn_role = "user" if role == "user" else "model"
        if turns and turns[-1].role == turn_role:
            turns[-1] = Turn(turn_role, f"{turns[-1].text}\n\n{text}")
        else:
            turns.append(Turn(turn_role, text))
    if not turns or turns[-1].role != "user":
        raise InvalidParameter(
            "The last message (system messages aside) must be a user message with text.",
            param="messages",
        )
    return "\n\n".join(system), turns[:-1], turns[-1].text


def _content(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidParameter(
            f"'{where}.content' must be a string or an array of text parts.",
            param=f"{where}.content",
        )
    texts = []
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in NON_TEXT_PARTS:
            raise UnsupportedParameter(
                f"'{at}': content parts of type '{kind}' are not supported: text only.",
                param=at,
            )
        else:
            raise InvalidParameter(
                f"'{at}' must be {{'type': 'text', 'text': <string>}}.", param=at
            )
    return "\n".join(texts)


def _boolean(given: dict, name: str) -> bool:
    value = given.get(name, False)
    if not isinstance(value, bool):
        raise InvalidParameter(f"'{name}' must be true or false.", param=name)
    return value


def _stream_options(given: dict, *, stream: bool) -> bool:
    options = given.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise InvalidParameter(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    if not isinstance(options, dict):
        raise InvalidParameter("'stream_options' must be an object.", param="stream_options")
    for key in options:
        if key not in ("include_usage", "include_obfuscation"):
            raise UnsupportedParameter(
                f"'stream_options.{key}' is not supported.", param=f"stream_options.{key}"
            )
    # include_obfuscation (random padding against length side channels) is ignored.
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidParameter(
            "'stream_options.include_usage' must be true or false.",
            param="stream_options.include_usage",
        )
    return include


def _max_tokens(given: dict) -> int | None:
    """max_completion_tokens (OpenAI's current name) wins over max_tokens (its old one)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = given.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameter(f"'{name}' must be a positive integer.", param=name)
        return value
    return None


def _number(given: dict, name: str, low: float, high: float) -> float | None:
    value = given.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidParameter(f"'{name}' must be a number from {low} to {high}.", param=name)
    return float(value)


def _stop(given: dict) -> tuple[str, ...]:
    value = given.get("stop")
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, list)
        or len(values) > MAX_STOP_SEQUENCES
        or not all(isinstance(item, str) and item for item in values)
    ):
        raise InvalidParameter(
            f"'stop' must be a non-empty string or an array of up to {MAX_STOP_SEQUENCES} "
            "non-empty strings.",
            param="stop",
        )
    return tuple(values)
