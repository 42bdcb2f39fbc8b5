"""One completion of the OpenAI-compatible /v1 API, from a parsed request to its settled
ledger entry: the same rules as a chat message, without a chat.

    rate limit -> provider available -> model -> reserve (input estimate + output cap)
    -> release the database connection -> the model's first chunk (a failure here is a
    real status; the hold is released) -> relay (stream) or collect (not streamed), with
    the running output cap -> settle with the provider's usage (or the count), one ledger
    entry naming the API key and no chat.

The rules are the chat path's own functions, called rather than copied: check_rate_limit
(chat/ratelimit.py), estimate_input_tokens, _Pump, _passes_output_cap, _usage_to_bill,
_release_db_connection (chat/streaming.py) and billing's reserve_tokens / settle_reservation
/ release_reservation.
Nothing is stored but the ledger entry: the conversation belongs to the caller.

The caller's system messages follow the service's SYSTEM_PROMPT in one system instruction
(docs/api.md): the service prompt stays in force, the caller's adds to it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

from django.conf import settings

from billing.services import release_reservation, reserve_tokens, settle_reservation
from chat import sse
from chat.exceptions import ModelNotFound, StreamFailed
from chat.llm import get_provider
from chat.llm.base import Turn
from chat.llm.errors import LLMError, LLMUnavailable
from chat.openai_api import response
from chat.openai_api.request import CompletionRequest
from chat.ratelimit import check_rate_limit

# The chat path's rules. TODO(run): import them from the message-path package once the
# chat/streaming.py restructuring lands; they are private helpers there for now.
from chat.streaming import (
    _END,
    _Outcome,
    _passes_output_cap,
    _Pump,
    _release_db_connection,
    _usage_to_bill,
    estimate_input_tokens,
)

logger = logging.getLogger(__name__)


@dataclass
class _Completion:
    """What the relay and the settle need once the view has returned."""

    id: uuid.UUID  # also the ledger entry's message_id
    created: int
    model: str
    api_key_id: int
    request: CompletionRequest
    reservation_id: int
    output_cap: int
    budget_capped: bool

    @property
    def public_id(self) -> str:
        return f"chatcmpl-{self.id.hex}"

    def head(self) -> dict:
        return {"completion_id": self.public_id, "created": self.created, "model": self.model}


def system_prompt_for(caller_system: str) -> str:
    """The service's SYSTEM_PROMPT first, then the caller's system messages."""
    return "\n\n".join(part for part in (settings.SYSTEM_PROMPT, caller_system) if part)


def list_models() -> list[dict]:
    provider = get_provider()
    return [response.model_object(provider.model, owned_by=provider.name)]


def get_model(model_id: str) -> dict:
    provider = get_provider()
    if model_id != provider.model:
        raise ModelNotFound(model_id, available=provider.model)
    return response.model_object(provider.model, owned_by=provider.name)


def create_completion(*, user, api_key_id: int, request: CompletionRequest) -> dict:
    """A non-streamed completion: the whole answer as one `chat.completion`.

    A failure after output began is raised with its status (the output is lost to the
    caller, but what the model consumed is billed, as it is for a chat message).
    """
    completion, pump, item = _begin(user=user, api_key_id=api_key_id, request=request)
    outcome = _Outcome()
    capped = False
    try:
        while True:
            if item is _END:
                outcome.result = pump.result
                outcome.started = True
                break
            if isinstance(item, LLMError):
                outcome.error = item
                break
            if item is not None:
                outcome.started = True
                outcome.parts.append(item)
                outcome.chars += len(item)
                if completion.budget_capped and _passes_output_cap(
                    outcome.chars, completion.output_cap
                ):
                    capped = True
                    break
            item = pump.get(timeout=None)  # bounded by the provider's own timeout
    except Exception:
        logger.exception("Collecting completion %s failed", completion.public_id)
        outcome.error = StreamFailed()
    finally:
        pump.cancel()
        billed = _settle(completion, outcome)
    if outcome.error is not None:
        raise outcome.error
    return response.completion(
        **completion.head(),
        text=outcome.text,
        finish=_finish_reason(outcome, capped=capped),
        billed=billed,
    )


def stream_completion(*, user, api_key_id: int, request: CompletionRequest) -> Iterator[bytes]:
    """A streamed completion: everything that can fail before the first byte is raised
    here (a real status); the returned generator relays the rest."""
    completion, pump, first = _begin(user=user, api_key_id=api_key_id, request=request)
    return _relay(completion, pump, first)


def _begin(*, user, api_key_id: int, request: CompletionRequest):
    provider = get_provider()
    if request.model != provider.model:
        raise ModelNotFound(request.model, available=provider.model)
    check_rate_limit(user=user, window_ms=settings.MESSAGE_RATE_LIMIT_MS)
    if provider.status() != "ok":
        raise LLMUnavailable()
    wanted = min(
        request.max_tokens or settings.GEMINI_MAX_OUTPUT_TOKENS, settings.GEMINI_MAX_OUTPUT_TOKENS
    )
    # The caller's system text is input like the history; the service prompt's count is
    # part of estimate_input_tokens.
    reservation = reserve_tokens(
        user=user,
        input_tokens=estimate_input_tokens(_billed_history(request), request.message),
        max_output_tokens=wanted,
    )
    completion = _Completion(
        id=uuid.uuid4(),
        created=int(time.time()),
        model=provider.model,
        api_key_id=api_key_id,
        request=request,
        reservation_id=reservation.pk,
        output_cap=reservation.output_cap,
        # The provider enforces the cap it is given; ours matters when the budget set it.
        budget_capped=reservation.output_cap < wanted,
    )
    # The wait on the model can be long: hold no database connection during it.
    _release_db_connection()
    try:
        pump = _Pump(
            provider.stream_reply(
                system_prompt=system_prompt_for(request.system),
                history=request.history,
                message=request.message,
                max_output_tokens=completion.output_cap,
                options=request.options,
            )
        )
    except LLMError as exc:
        _settle(completion, _Outcome(error=exc))
        raise
    first = pump.get(timeout=None)  # bounded by the provider's own timeout
    if isinstance(first, LLMError):
        # Nothing was sent yet: a real status, and the hold is released.
        _settle(completion, _Outcome(error=first))
        raise first
    return completion, pump, first


def _relay(completion: _Completion, pump: _Pump, first) -> Iterator[bytes]:
    request = completion.request
    outcome = _Outcome()
    capped = False
    item = first
    try:
        while True:
            if item is None:
                yield sse.KEEP_ALIVE
            elif item is _END:
                outcome.result = pump.result
                outcome.started = True
                break
            elif isinstance(item, LLMError):
                outcome.error = item
                break
            else:
                # The first chunk names the role, as OpenAI's do.
                delta = (
                    {"content": item} if outcome.started else {"role": "assistant", "content": item}
                )
                outcome.started = True
                outcome.parts.append(item)
                outcome.chars += len(item)
                yield sse.data_only(
                    response.chunk(
                        **completion.head(),
                        delta=delta,
                        with_usage_field=request.include_usage,
                    )
                )
                if completion.budget_capped and _passes_output_cap(
                    outcome.chars, completion.output_cap
                ):
                    capped = True
                    break
            item = pump.get(timeout=settings.SSE_KEEPALIVE_S)
    except GeneratorExit:
        # The client went away (seen on a failed write); nothing may be yielded now.
        outcome.disconnected = True
        raise
    except Exception:
        logger.exception("Relaying completion %s failed", completion.public_id)
        outcome.error = StreamFailed()
    finally:
        pump.cancel()
        billed = _settle(completion, outcome)
    if outcome.error is not None:
        error = outcome.error
        yield sse.data_only(response.stream_error(error.code, error.message, error.status))
        return
    yield sse.data_only(
        response.chunk(
            **completion.head(),
            delta={},
            finish=_finish_reason(outcome, capped=capped),
            with_usage_field=request.include_usage,
        )
    )
    if request.include_usage:
        yield sse.data_only(response.usage_chunk(**completion.head(), billed=billed))
    yield sse.DONE


def _finish_reason(outcome: _Outcome, *, capped: bool) -> str:
    if capped:  # the budget's output cap: to the caller, like reaching max_tokens
        return "length"
    return response.finish_reason(outcome.result.finish_reason if outcome.result else "stop")


def _billed_history(request: CompletionRequest) -> list[Turn]:
    """The input besides the service prompt and the last message, for estimates and counts."""
    caller_system = [Turn("user", request.system)] if request.system else []
    return [*caller_system, *request.history]


def _settle(completion: _Completion, outcome: _Outcome) -> dict | None:
    """Charge what was consumed (one ledger entry naming the key) or release the hold.

    Returns the usage billed (None: nothing). Never raises: a failure is logged and the
    hold is left to the stale-reservation sweep.
    """
    request = completion.request
    try:
        usage = _usage_to_bill(
            SimpleNamespace(text=request.message, history=_billed_history(request)), outcome
        )
        if usage is None:
            release_reservation(
                reservation_id=completion.reservation_id,
                reason="client_closed" if outcome.disconnected else "error",
            )
            return None
        settle_reservation(
            reservation_id=completion.reservation_id,
            chat_id=None,
            message_id=completion.id,
            api_key_id=completion.api_key_id,
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            source=usage["source"],
        )
        return usage
    except Exception:
        logger.exception(
            "Could not settle completion %s (%d characters); its reservation is left for "
            "the stale-reservation sweep",
            completion.public_id,
            outcome.chars,
        )
        return None
