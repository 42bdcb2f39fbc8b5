"""The run: generates one reply to its end, whether or not anyone listens.

It lives in the worker that accepted the message, on its own greenlet (gevent) or thread
(gthread), and is not tied to any HTTP response: upstream -> event log -> (checkpoint,
by the worker's housekeeper) -> settle.

1. Ask the provider; a reader greenlet/thread puts each delta into the run's queue (so a
   stop is seen even while the model is silent).
2. Each delta becomes a text event: into the run's LocalFeed (relays in this worker see it
   at once) and the shared log's next batch (relays elsewhere). The running output count
   stops a reply whose budget ran out.
3. On every way out (the model finished or failed, the budget ran out, a stop, a cancel):
   save the reply and settle its tokens (settle.end_reply), write the done event to the
   shared log, then to the feed, and leave the registry.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Protocol

from django.conf import settings

from billing.tokens import OutputCount
from chat.exceptions import StreamFailed, TokenLimitReached
from chat.llm import get_provider
from chat.llm.base import ReplyStream, StreamResult
from chat.llm.errors import LLMError, as_llm_error
from chat.models import Message
from chat.reply import registry
from chat.reply.errors import as_service_error
from chat.reply.eventlog import LocalFeed, log_writer, release_db_connection
from chat.reply.events import done_from_reply, failed_done, text_event
from chat.reply.settle import Ending, Parties, end_reply
from chat.reply.setup import Exchange, set_up_reply
from chat.reply.tokens import usage_to_bill
from chat.text import storable_text
from config.api import ServiceError

logger = logging.getLogger(__name__)

END = object()  # the provider's stream ended normally (put by read_upstream)
_WAKE = object()  # look at the stop flag


class Reading(Protocol):
    """Whoever owns a reader (a Run; a /v1 completion, chat/completions.py): the reader
    lets the upstream call go at its next delta once either flag is set."""

    stop_requested: bool
    closing: bool


def start_reply(*, user, chat_id: str, text: str) -> Run:
    """Set up (every refusal is a real status), start the run, and wait for its first event:
    a failure before any output is raised here, so it too gets a real status (the reply is
    saved as failed and its hold released first)."""
    provider = get_provider()
    exchange = set_up_reply(user=user, chat_id=chat_id, text=text, provider=provider)
    release_db_connection()  # the wait on the model can be long: hold no connection
    run = Run(exchange, provider)
    run.start()
    run.feed.read(0, timeout=None)  # bounded by the provider's own timeout
    if run.error_before_output is not None:
        raise run.error_before_output
    return run


class Run:
    def __init__(self, exchange: Exchange, provider):
        self.exchange = exchange
        self.reply_id = exchange.reply_id
        self.feed = LocalFeed()
        # The shared log is written unless the reply dies with its connection anyway.
        self.shared = settings.REPLY_ON_DISCONNECT == "finish"
        self.error_before_output: LLMError | None = None
        self.checkpointed_chars = 0  # written by the housekeeper
        self.started_at = time.monotonic()
        self._provider = provider
        self._parts: list[str] = []
        self._offsets: list[int] = []  # where each text event ended in the text
        self._chars = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop_reason: str | None = None
        self._stream: ReplyStream | None = None
        self.closing = False  # the run is ending: its reader must let the upstream call go

    # --- used by other greenlets/threads ---------------------------------------------
    def start(self) -> None:
        registry.add(self)
        threading.Thread(target=self._execute, name="reply-run", daemon=True).start()

    def request_stop(self, reason: str) -> None:
        """Stop the run: `stopped` (POST .../stop), `client_closed` (REPLY_ON_DISCONNECT=
        cancel), `shutdown`. The first reason wins."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._queue.put(_WAKE)

    @property
    def stop_requested(self) -> bool:
        return self._stop_reason is not None

    def snapshot(self) -> tuple[str, list[int]]:
        """The text so far and its event offsets, consistent with each other."""
        offsets = list(self._offsets)
        return "".join(self._parts[: len(offsets)]), offsets

    # --- the run's own greenlet/thread -------------------------------------------------
    def _execute(self) -> None:
        result: StreamResult | None = None
        error: ServiceError | None = None
        try:
            result, error = self._relay_upstream()
        except Exception as exc:
            logger.exception("The run of reply %s failed", self.reply_id)
            error = as_service_error(exc)
        finally:
            self._let_upstream_go()
            self._end(result, error)

    def _let_upstream_go(self) -> None:
        self.closing = True
        if self._stream is not None:
            let_upstream_go(self._stream)

    def _relay_upstream(self) -> tuple[StreamResult | None, ServiceError | None]:
        exchange = self.exchange
        try:
            self._stream = self._provider.stream_reply(
                system_prompt=settings.SYSTEM_PROMPT,
                history=exchange.history,
                message=exchange.text,
                max_output_tokens=exchange.output_cap,
            )
        except LLMError as exc:
            return None, exc
        reader = threading.Thread(
            target=read_upstream, args=(self._stream, self._queue, self), daemon=True
        )
        reader.start()
        # Only a cap the budget imposed is ours to enforce; the provider enforces its own.
        output = OutputCount(exchange.output_cap if exchange.budget_capped else None)
        while True:
            item = self._queue.get()
            if self._stop_reason is not None:
                return None, None
            if item is _WAKE:
                continue
            if item is END:
                return self._stream.result, None
            if isinstance(item, LLMError):
                return None, item
            item = storable_text(item)  # what is sent is exactly what is stored
            self._publish_text(item)
            output.add(item)
            if output.passes_cap:
                return None, TokenLimitReached()

    def _publish_text(self, text: str) -> None:
        self._parts.append(text)
        self._chars += len(text)
        self._offsets.append(self._chars)
        event = self.feed.publish(text_event(text))
        if self.shared:
            log_writer.add(self.reply_id, event)

    def _end(self, result: StreamResult | None, error: ServiceError | None) -> None:
        try:
            if error is not None and not self._parts and isinstance(error, LLMError):
                self.error_before_output = error
            ending = self._ending(result, error)
            exchange = self.exchange
            done = end_reply(
                Parties(
                    user=exchange.user,
                    chat_id=exchange.chat_id,
                    reply_id=self.reply_id,
                    user_message_id=exchange.user_message_id,
                    reservation_id=exchange.reservation_id,
                    model=exchange.model,
                ),
                ending,
            )
            if done is None:  # ended by someone else (the sweep): tell the listeners that
                done = done_from_reply(
                    Message.objects.get(pk=self.reply_id), budget=_budget(exchange.user)
                )
        except Exception:
            logger.exception("Ending the run of reply %s failed", self.reply_id)
            # Nothing is known to be billed by this worker: whoever ends the reply (the
            # sweep, when it is left streaming) bills what it used.
            done = failed_done(
                reply_id=self.reply_id,
                user_message_id=self.exchange.user_message_id,
                error=StreamFailed(),
                tokens_used=0,
            )
        finally:
            release_db_connection()
        event = (self.feed.last_id + 1, done)
        if self.shared:
            # Into the shared log before the feed: once this worker's relays have the done
            # event, every write of this run is over.
            log_writer.add(self.reply_id, event)
            log_writer.flush([self.reply_id])
        self.feed.publish(done)
        registry.remove(self)

    def _ending(self, result: StreamResult | None, error: ServiceError | None) -> Ending:
        text, offsets = self.snapshot()
        exchange = self.exchange
        produced = bool(text)

        def bill(provider_usage, *, produced_output=produced):
            return usage_to_bill(
                provider_usage=provider_usage,
                produced_output=produced_output,
                message=exchange.text,
                reply_text=text,
                history=exchange.history,
            )

        if self._stop_reason is not None:
            # We closed the call: the provider bills what it generated until then, which its
            # running usage report says when it sent one.
            usage = getattr(self._stream, "usage_so_far", None)
            stopped = self._stop_reason == "stopped"
            status = Message.Status.PARTIAL if produced or stopped else Message.Status.FAILED
            return Ending(text, offsets, status, self._stop_reason, bill(usage))
        if error is None and result is not None:
            # The model ended normally: what it consumed is billed even for an empty reply.
            billed = bill(result.usage, produced_output=True)
            return Ending(text, offsets, Message.Status.COMPLETE, result.finish_reason, billed)
        status = Message.Status.PARTIAL if produced else Message.Status.FAILED
        return Ending(text, offsets, status, "error", bill(None), error)


def _budget(user) -> dict:
    from billing.selectors import budget_snapshot

    return budget_snapshot(user=user)


def let_upstream_go(stream: ReplyStream) -> None:
    """Close the upstream call of a reply that ends before its stream did (a stop, the
    budget, an error of ours, a gone client): the reader does at its next delta (its owner
    has set `closing`), and this does at once where the provider's stream can be closed from
    here (the local model; the SDK's cannot, mid-read)."""
    if stream.result is None:
        stream.close()


def read_upstream(stream: ReplyStream, into: queue.SimpleQueue, run: Reading) -> None:
    """The reader, on its own greenlet/thread: the provider's deltas into `into`, then END,
    or the LLMError that ended it (anything else mapped by as_llm_error). When its
    owner stops (or ends early) it closes the upstream call at its next delta (or the
    provider's silence timeout)."""
    try:
        for delta in stream:
            if run.stop_requested or run.closing:
                break
            into.put(delta)
        else:
            into.put(END)
    except Exception as exc:  # never let a provider's failure kill the run
        into.put(as_llm_error(exc, log_unexpected=not run.closing))
    finally:
        if run.stop_requested or run.closing:
            stream.close()
