"""One completion of the OpenAI-compatible /v1 API, from a parsed request to its settled
ledger entry: the same rules as a chat message, without a chat.

    model -> rate limit -> provider available -> reserve (input estimate + output cap)
    -> release the database connection -> the model's first chunk (a failure here is a
    real status; the hold is released) -> relay (stream) or collect (not streamed), with
    the running output count -> settle with the provider's usage (or the count), one ledger
    entry naming the API key and the model (so it has its cost), and no chat.

The rules are chat/reply's and billing's own functions, called rather than copied:
check_rate_limit (chat/ratelimit.py); count_system_prompt_tokens, estimate_input_tokens and
OutputCount (billing/tokens.py); usage_to_bill (chat/reply/tokens.py); the upstream reader
read_upstream / let_upstream_go (chat/reply/run.py); release_db_connection
(chat/reply/eventlog.py); as_service_error (chat/reply/errors.py); storable_text
(chat/text.py); reserve_tokens / settle_reservation / release_reservation
(billing/services.py).

A completion is not a run: it has no chat, no reply row, no event log, no resume and no
stop, so it lives and ends with its response. Its reader feeds a queue this response's
thread waits on (with the keep-alive timeout when streamed), and the settle happens in
that thread when the answer ends (or the client goes away). Nothing is stored but the
ledger entry: the conversation belongs to the caller.

The caller's system messages follow the service's SYSTEM_PROMPT in one system instruction
(docs/api.md): the service prompt stays in force, the caller's adds to it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings

from billing.services import release_reservation, reserve_tokens, settle_reservation
from billing.tokens import OutputCount, count_system_prompt_tokens, estimate_input_tokens
from billing.usage import Usage
from chat import sse
from chat.exceptions import ModelNotFound
from chat.llm import get_provider, require_available
from chat.llm.base import ReplyStream, StreamResult, Turn
from chat.llm.errors import LLMError
from chat.openai_api import response
from chat.openai_api.request import CompletionRequest
from chat.ratelimit import check_rate_limit
from chat.reply.errors import as_service_error
from chat.reply.eventlog import release_db_connection
from chat.reply.run import END, let_upstream_go, read_upstream
from chat.reply.tokens import usage_to_bill
from chat.text import storable_text
from config.api import ServiceError

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
    budget_capped: bool  # the budget, not the provider's maximum, set the output cap

    @property
    def public_id(self) -> str:
        return f"chatcmpl-{self.id.hex}"

    def head(self) -> dict:
        return {"completion_id": self.public_id, "created": self.created, "model": self.model}


class _Upstream:
    """The provider's stream, read by chat/reply's reader on its own greenlet/thread into a
    queue, so the response's thread can wait with a timeout (keep-alives while the model is
    silent, and a gone client learnt from the failed write)."""

    def __init__(self, stream: ReplyStream):
        self.stream = stream
        self.stop_requested = False  # a completion has no stop; the reader asks
        self.closing = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(
            target=read_upstream, args=(stream, self._queue, self), name="v1-reader", daemon=True
        ).start()

    def get(self, timeout: float | None):
        """The next delta, END, an LLMError, or None when `timeout` passed in silence."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def let_go(self) -> None:
        self.closing = True
        let_upstream_go(self.stream)


@dataclass
class _Outcome:
    """How the model's answer went, for the settle and the last chunk."""

    parts: list[str] = field(default_factory=list)
    result: StreamResult | None = None  # the model ended normally
    error: ServiceError | None = None
    capped: bool = False  # the budget's output cap ended it
    disconnected: bool = False  # the client went away

    @property
    def text(self) -> str:
        return "".join(self.parts)


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
    completion, upstream, item = _begin(user=user, api_key_id=api_key_id, request=request)
    outcome = _Outcome()
    output = OutputCount(completion.output_cap if completion.budget_capped else None)
    try:
        while not _take(item, upstream, outcome, output):
            item = upstream.get(timeout=None)  # bounded by the provider's own timeout
    except Exception as exc:
        logger.exception("Collecting completion %s failed", completion.public_id)
        outcome.error = as_service_error(exc)
    finally:
        billed = _end(completion, upstream, outcome)
    if outcome.error is not None:
        raise outcome.error
    return response.completion(
        **completion.head(),
        text=outcome.text,
        finish=_finish_reason(outcome),
        billed=billed,
    )


def stream_completion(*, user, api_key_id: int, request: CompletionRequest) -> Iterator[bytes]:
    """A streamed completion: everything that can fail before the first byte is raised
    here (a real status); the returned generator relays the rest."""
    completion, upstream, first = _begin(user=user, api_key_id=api_key_id, request=request)
    return _relay(completion, upstream, first)


def _begin(*, user, api_key_id: int, request: CompletionRequest):
    provider = get_provider()
    if request.model != provider.model:
        raise ModelNotFound(request.model, available=provider.model)
    check_rate_limit(user=user, window_ms=settings.MESSAGE_RATE_LIMIT_MS)
    require_available(provider)
    wanted = min(
        request.max_tokens or settings.GEMINI_MAX_OUTPUT_TOKENS, settings.GEMINI_MAX_OUTPUT_TOKENS
    )
    # The caller's system text is input like the history; the service prompt's count (a
    # network call at most once per model, made before the reservation's transaction) is
    # count_system_prompt_tokens.
    reservation = reserve_tokens(
        user=user,
        input_tokens=estimate_input_tokens(
            system_tokens=count_system_prompt_tokens(),
            history_texts=[turn.text for turn in _billed_history(request)],
            message=request.message,
        ),
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
        budget_capped=reservation.output_cap < wanted,
    )
    release_db_connection()  # the wait on the model can be long: hold no connection
    try:
        upstream = _Upstream(
            provider.stream_reply(
                system_prompt=system_prompt_for(request.system),
                history=request.history,
                message=request.message,
                max_output_tokens=completion.output_cap,
                options=request.options,
            )
        )
    except LLMError as exc:
        _settle(completion, None, _Outcome(error=exc))
        raise
    first = upstream.get(timeout=None)  # bounded by the provider's own timeout
    if isinstance(first, LLMError):
        # Nothing was sent yet: a real status, and the hold is released.
        _settle(completion, upstream, _Outcome(error=first))
        raise first
    return completion, upstream, first


def _take(item, upstream: _Upstream, outcome: _Outcome, output: OutputCount) -> bool:
    """Record one item of the upstream queue; True when the answer has ended."""
    if item is END:
        outcome.result = upstream.stream.result
        return True
    if isinstance(item, LLMError):
        outcome.error = item
        return True
    if item is not None:
        item = storable_text(item)  # what is sent is what is counted
        outcome.parts.append(item)
        output.add(item)
        if output.passes_cap:
            outcome.capped = True
            return True
    return False


def _relay(completion: _Completion, upstream: _Upstream, first) -> Iterator[bytes]:
    request = completion.request
    outcome = _Outcome()
    output = OutputCount(completion.output_cap if completion.budget_capped else None)
    item = first
    try:
        while True:
            if item is None:
                yield sse.KEEP_ALIVE
            else:
                sent = len(outcome.parts)
                ended = _take(item, upstream, outcome, output)
                if len(outcome.parts) > sent:
                    text = outcome.parts[-1]
                    # The first chunk names the role, as OpenAI's do.
                    delta = {"content": text} if sent else {"role": "assistant", "content": text}
                    yield sse.data_only(
                        response.chunk(
                            **completion.head(),
                            delta=delta,
                            with_usage_field=request.include_usage,
                        )
                    )
                if ended:
                    break
            item = upstream.get(timeout=settings.SSE_KEEPALIVE_S)
    except GeneratorExit:
        # The client went away (seen on a failed write); nothing may be yielded now.
        outcome.disconnected = True
        raise
    except Exception as exc:
        logger.exception("Relaying completion %s failed", completion.public_id)
        outcome.error = as_service_error(exc)
    finally:
        billed = _end(completion, upstream, outcome)
    if outcome.error is not None:
        error = outcome.error
        yield sse.data_only(response.stream_error(error.code, error.message, error.status))
        return
    yield sse.data_only(
        response.chunk(
            **completion.head(),
            delta={},
            finish=_finish_reason(outcome),
            with_usage_field=request.include_usage,
        )
    )
    if request.include_usage:
        yield sse.data_only(response.usage_chunk(**completion.head(), billed=billed))
    yield sse.DONE


def _finish_reason(outcome: _Outcome) -> str:
    if outcome.capped:  # the budget's output cap: to the caller, like reaching max_tokens
        return "length"
    return response.finish_reason(outcome.result.finish_reason if outcome.result else "stop")


def _billed_history(request: CompletionRequest) -> list[Turn]:
    """The input besides the service prompt and the last message, for estimates and counts."""
    caller_system = [Turn("user", request.system)] if request.system else []
    return [*caller_system, *request.history]


def _end(completion: _Completion, upstream: _Upstream, outcome: _Outcome) -> Usage | None:
    if outcome.result is None:
        upstream.let_go()
    return _settle(completion, upstream, outcome)


def _settle(completion: _Completion, upstream: _Upstream | None, outcome: _Outcome) -> Usage | None:
    """Charge what was consumed (one ledger entry naming the key and the model) or release
    the hold; the same billing rule as a run's end (chat/reply/run.py::Run._ending).

    Returns the usage billed (None: nothing). Never raises: a failure is logged and the
    hold is left to the stale-reservation sweep.
    """
    request = completion.request
    text = outcome.text
    if outcome.result is not None:
        # The model ended normally: what it consumed is billed even for an empty answer.
        provider_usage, produced = outcome.result.usage, True
    elif outcome.disconnected:
        # We closed the call, as a run does for a stop: the provider bills what it
        # generated until then, which its running usage report says when it sent one.
        provider_usage, produced = getattr(upstream.stream, "usage_so_far", None), bool(text)
    else:  # an error, or the budget's output cap: our count of what was produced
        provider_usage, produced = None, bool(text)
    try:
        billed = usage_to_bill(
            provider_usage=provider_usage,
            produced_output=produced,
            message=request.message,
            reply_text=text,
            history=_billed_history(request),
        )
        if billed is None:
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
            usage=billed,
            model=completion.model,
        )
        return billed
    except Exception:
        logger.exception(
            "Could not settle completion %s (%d characters); its reservation is left for "
            "the stale-reservation sweep",
            completion.public_id,
            len(text),
        )
        return None
