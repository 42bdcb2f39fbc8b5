"""Sending a message: one user-visible action, from the request to the settled ledger entry.

`start_reply()` does everything that can fail before the first byte, so those failures
get a real HTTP status: access, rate limit, provider, budget, and the model's first
chunk (the SDK's stream is lazy: nothing is sent until it is asked for). It returns the
generator that relays the reply as SSE. On every way out of that generator (the model
finished, failed, the budget ran out, the client went away) `_finish()` saves the reply
and settles the tokens, so partial text is never lost and no reservation is leaked.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from billing.selectors import budget_snapshot
from billing.services import release_reservation, reserve_tokens, settle_reservation
from billing.tokens import calculate_message_tokens, count_system_prompt_tokens, estimate_tokens
from chat import sse
from chat.exceptions import StreamFailed, TokenLimitReached
from chat.llm import get_provider
from chat.llm.base import ReplyStream, StreamResult, Turn
from chat.llm.errors import LLMError, LLMUnavailable, UpstreamError
from chat.models import Message
from chat.ratelimit import check_rate_limit
from chat.selectors import access_chat, recent_turns
from config.api import ServiceError

logger = logging.getLogger(__name__)


@dataclass
class _Exchange:
    """What the stream needs to know about the request once the view has returned."""

    user: object
    chat_id: uuid.UUID
    text: str
    history: list[Turn]
    user_message_id: uuid.UUID
    reservation_id: int
    output_cap: int
    budget_capped: bool


@dataclass
class _Outcome:
    parts: list[str] = field(default_factory=list)
    chars: int = 0
    result: StreamResult | None = None
    error: ServiceError | None = None
    disconnected: bool = False
    started: bool = False  # at least one chunk was relayed (or the model ended normally)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def start_reply(*, user, chat_id: str, text: str) -> Iterator[bytes]:
    """Validate, save the user's message, reserve budget, wait for the model's first chunk.

    Raises ServiceError subclasses (mapped to the envelope by the API) for every failure
    that can be known before streaming; returns the SSE body otherwise.
    """
    provider = get_provider()
    exchange = _save_user_message_and_reserve(
        user=user, chat_id=chat_id, text=text, provider=provider
    )
    # The wait on the model can be long: hold no database connection during it.
    _release_db_connection()

    pump = _Pump(
        provider.stream_reply(
            system_prompt=settings.SYSTEM_PROMPT,
            history=exchange.history,
            message=text,
            max_output_tokens=exchange.output_cap,
        )
    )
    first = pump.get(timeout=None)  # bounded by the provider's own timeout
    if isinstance(first, LLMError):
        # Nothing was sent yet: answer with a real status; the user message stays saved.
        _finish(exchange, _Outcome(error=first))
        raise first
    return _relay(exchange, pump, first)


def estimate_input_tokens(history: list[Turn], text: str) -> int:
    """What the provider will bill as input: system prompt + history + message + overhead."""
    return (
        count_system_prompt_tokens()
        + sum(estimate_tokens(turn.text) for turn in history)
        + estimate_tokens(text)
        + settings.TOKEN_OVERHEAD
    )


def _save_user_message_and_reserve(*, user, chat_id: str, text: str, provider) -> _Exchange:
    """One transaction: access (chat row locked), rate limit, provider, history, the budget
    reservation and the user's message. Any refusal rolls it all back."""
    with transaction.atomic():
        chat = access_chat(user=user, chat_id=chat_id, lock=True)
        check_rate_limit(user=user, window_ms=settings.MESSAGE_RATE_LIMIT_MS)
        if provider.status() != "ok":
            raise LLMUnavailable()
        history = recent_turns(chat=chat, limit=settings.CONTEXT_MESSAGES)
        reservation = reserve_tokens(
            user=user,
            input_tokens=estimate_input_tokens(history, text),
            max_output_tokens=settings.GEMINI_MAX_OUTPUT_TOKENS,
        )
        message = Message.objects.create(
            chat=chat, role=Message.Role.USER, content=text, status=Message.Status.COMPLETE
        )
    return _Exchange(
        user=user,
        chat_id=chat.pk,
        text=text,
        history=history,
        user_message_id=message.pk,
        reservation_id=reservation.pk,
        output_cap=reservation.output_cap,
        # Only a cap the budget imposed is ours to enforce; the provider keeps its own.
        budget_capped=reservation.output_cap < settings.GEMINI_MAX_OUTPUT_TOKENS,
    )


def _release_db_connection() -> None:
    # With the psycopg pool this returns the connection to the pool; the settle step takes
    # one again. Inside an atomic block (tests wrapping a request) closing would break it.
    if not connection.in_atomic_block:
        connection.close()


_END = object()


class _Pump:
    """Reads the provider's stream on its own thread.

    The response thread then waits on a queue with a timeout, so it can send keep-alive
    comments while the model is silent (and learn of a gone client from the failed write).
    """

    def __init__(self, stream: ReplyStream):
        self._stream = stream
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llm-stream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for delta in self._stream:
                if self._cancelled.is_set():
                    break
                self._queue.put(delta)
            else:
                self._queue.put(_END)
        except LLMError as exc:
            self._queue.put(exc)
        except Exception:  # a provider must map its failures; never let one kill the stream
            logger.exception("Provider stream raised an unmapped exception")
            self._queue.put(UpstreamError())
        finally:
            if self._cancelled.is_set():
                self._stream.close()

    def get(self, timeout: float | None):
        """The next delta, _END, an LLMError, or None when `timeout` passed in silence."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def result(self) -> StreamResult | None:
        return self._stream.result

    def cancel(self) -> None:
        # The reading thread closes the stream itself when it next wakes (a generator
        # cannot be closed from another thread while it runs).
        self._cancelled.set()


def _relay(exchange: _Exchange, pump: _Pump, first) -> Iterator[bytes]:
    outcome = _Outcome()
    ids = itertools.count(1)
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
                outcome.started = True
                outcome.parts.append(item)
                outcome.chars += len(item)
                yield sse.event({"text": item}, next(ids))
                if exchange.budget_capped and _passes_output_cap(
                    outcome.chars, exchange.output_cap
                ):
                    outcome.error = TokenLimitReached()
                    break
            item = pump.get(timeout=settings.SSE_KEEPALIVE_S)
    except GeneratorExit:
        # The client went away (seen on a failed write). Django swallows errors raised
        # while closing, so _finish logs its own; nothing may be yielded from here on.
        outcome.disconnected = True
        raise
    except Exception:
        logger.exception("Relaying the reply to message %s failed", exchange.user_message_id)
        outcome.error = StreamFailed()
    finally:
        pump.cancel()
        done = _finish(exchange, outcome)
    yield sse.event(done, next(ids))


def _passes_output_cap(chars: int, output_cap: int) -> bool:
    # A running count of the reply: ceil(chars / 4), the estimate's base (no database
    # work per chunk). The provider was asked for at most output_cap tokens; this stops
    # the stream when the budget is spent even if the provider overruns the cap.
    return math.ceil(chars / 4) > output_cap


def _finish(exchange: _Exchange, outcome: _Outcome) -> dict:
    """Save the reply and settle its tokens; return the final event. Never raises."""
    try:
        return _save_reply_and_settle(exchange, outcome)
    except Exception:
        logger.exception(
            "Could not save the reply to message %s (%d characters); its reservation is "
            "left for the stale-reservation sweep",
            exchange.user_message_id,
            outcome.chars,
        )
        return {
            "done": True,
            "error": StreamFailed().as_dict(),
            "user_message_id": str(exchange.user_message_id),
            "message_id": None,
            "tokens_used": 0,
        }


def _save_reply_and_settle(exchange: _Exchange, outcome: _Outcome) -> dict:
    if outcome.result is not None and outcome.error is None and not outcome.disconnected:
        status = Message.Status.COMPLETE
        finish_reason = outcome.result.finish_reason
    else:
        status = Message.Status.PARTIAL if outcome.text else Message.Status.FAILED
        finish_reason = "client_closed" if outcome.disconnected else "error"
    usage = _usage_to_bill(exchange, outcome)
    reply_id = uuid.uuid4()
    with transaction.atomic():
        if usage is None:
            release_reservation(reservation_id=exchange.reservation_id, reason=finish_reason)
            charged, budget = 0, None
        else:
            settlement = settle_reservation(
                reservation_id=exchange.reservation_id,
                chat_id=exchange.chat_id,
                message_id=reply_id,
                input_tokens=usage["input_tokens"],
                output_tokens=usage["output_tokens"],
                source=usage["source"],
            )
            charged, budget = settlement.entry.total, settlement.budget
        Message.objects.create(
            id=reply_id,
            chat_id=exchange.chat_id,
            role=Message.Role.MODEL,
            content=outcome.text,
            status=status,
            input_tokens=usage["input_tokens"] if usage else 0,
            output_tokens=usage["output_tokens"] if usage else 0,
            tokens_used=charged,
            token_source=usage["source"] if usage else "",
            finish_reason=finish_reason,
            error_code=outcome.error.code if outcome.error else "",
        )
    if outcome.disconnected:
        return {}  # nobody is listening
    if budget is None:  # nothing was charged: read the month's figures
        budget = budget_snapshot(user=exchange.user)
    done = {
        "done": True,
        "tokens_used": charged,
        "message_id": str(reply_id),
        "user_message_id": str(exchange.user_message_id),
        "finish_reason": finish_reason,
        "usage": usage or {"input_tokens": 0, "output_tokens": 0, "source": ""},
        "budget": {k: budget[k] for k in ("limit", "used", "remaining")},
    }
    if outcome.error is not None:
        done["error"] = {"code": outcome.error.code, "message": outcome.error.message}
    return done


def _usage_to_bill(exchange: _Exchange, outcome: _Outcome) -> dict | None:
    """The tokens consumed, from the best source there is; None when nothing was.

    1. the provider's usage report (exact, no extra call), 2. the count API (cached),
    3. the estimate: calculate_message_tokens picks 2 or 3 and says which.
    """
    usage = outcome.result.usage if outcome.result is not None else None
    if usage is not None:
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens + usage.thinking_tokens,
            "source": "provider",
        }
    if not outcome.started:
        return None  # failed before any output: the provider billed nothing
    counted = calculate_message_tokens(
        exchange.text, outcome.text, history_texts=[turn.text for turn in exchange.history]
    )
    return {
        "input_tokens": counted.input_tokens,
        "output_tokens": counted.output_tokens,
        "source": counted.source,
    }
