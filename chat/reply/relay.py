"""The relay: a reply's event log to one client, as SSE. A relay only reads; a client that is
slow or goes away ends its relay, never the run.

Where the events come from, in order of preference:
1. the run's LocalFeed, when the run is in this worker (the message's own response always);
2. the shared log (Redis Stream, or the database log), while the reply generates, then
   until its done event;
3. the saved reply, once it has ended and its log has expired (or was never written, with
   REPLY_ON_DISCONNECT=cancel): the rest of its text after the client's last event as one
   event, then its done.

A client resumes with `Last-Event-ID: N` (what EventSource sends on reconnect) or
`?after=N`: it gets the events after N. The text of events 1..N joined with the text after
is exactly the saved reply.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from django.conf import settings

from billing.selectors import budget_snapshot
from chat import sse
from chat.models import Message
from chat.reply import registry
from chat.reply.eventlog import release_db_connection, shared_log
from chat.reply.events import Event, is_done, stored_events
from chat.selectors import access_reply
from config.api import ValidationFailed

# A follower on the shared log looks at the reply row this often while no event comes, so a
# reply whose log will not finish (cancel mode, a failed write) is finished from the row.
RECHECK_S = 2.0

KEEP_ALIVE = None  # yielded by a source when nothing happened for SSE_KEEPALIVE_S


def parse_after(value) -> int:
    """The resume point: a non-negative event id; none means from the start."""
    if value in (None, ""):
        return 0
    try:
        after = int(str(value).strip())
    except ValueError:
        after = -1
    if after < 0:
        raise ValidationFailed(
            "The event id to resume after must be a non-negative integer.",
            details={"after": ["Must be a non-negative integer."]},
        )
    return after


def relay_run(run) -> Iterator[bytes]:
    """The message's own response: the run's events from the first. With
    REPLY_ON_DISCONNECT=cancel its client going away stops the run."""
    cancel_on_close = settings.REPLY_ON_DISCONNECT == "cancel"
    try:
        yield from _as_sse(_from_feed(run.feed, 0))
    except GeneratorExit:
        # The client went away (seen on a failed write). Nothing may be yielded from here.
        if cancel_on_close and not run.feed.ended:
            run.request_stop("client_closed")
        raise


def relay_reply(*, user, chat_id, message_id, after: int) -> Iterator[bytes]:
    """GET .../stream: access is checked here (a 404 before the first byte)."""
    reply = access_reply(user=user, chat_id=chat_id, message_id=message_id)
    return _resumed(_as_sse(_events_of(reply, user=user, after=after)))


def _resumed(body: Iterator[bytes]) -> Iterator[bytes]:
    yield sse.RESUMED
    for chunk in body:
        if chunk != sse.KEEP_ALIVE:  # the first event
            yield sse.RETRY + chunk
            break
        yield chunk
    yield from body


def _events_of(reply: Message, *, user, after: int) -> Iterator[list[Event] | None]:
    release_db_connection()  # a follower holds no connection while it waits
    run = registry.get(reply.pk)
    if run is not None:
        yield from _from_feed(run.feed, after)
    elif reply.status == Message.Status.STREAMING:
        yield from _from_shared_log(reply, user=user, after=after)
    else:
        yield from _ended(reply, user=user, after=after)


def _as_sse(source: Iterator[list[Event] | None]) -> Iterator[bytes]:
    """The events read together, written together: one write (one send, one wake-up of the
    client) for what a read found, not one per event; each is written as soon as read."""
    for item in source:
        if item is KEEP_ALIVE:
            yield sse.KEEP_ALIVE
        else:
            yield b"".join(sse.event(data, event_id) for event_id, data in item)


def _from_feed(feed, after: int) -> Iterator[list[Event] | None]:
    while True:
        events = feed.read(after, timeout=settings.SSE_KEEPALIVE_S)
        if not events:
            if feed.ended:
                return
            yield KEEP_ALIVE
            continue
        yield events
        after = events[-1][0]
        if is_done(events[-1][1]):
            return


def _from_shared_log(reply: Message, *, user, after: int) -> Iterator[list[Event] | None]:
    log = shared_log()
    quiet_since = checked_at = time.monotonic()
    while True:
        wait = min(settings.SSE_KEEPALIVE_S, RECHECK_S)
        events = log.read(reply.pk, after, wait)
        now = time.monotonic()
        if events:
            yield events
            after = events[-1][0]
            if is_done(events[-1][1]):
                return
            quiet_since = now
            continue
        if now - quiet_since >= settings.SSE_KEEPALIVE_S:
            yield KEEP_ALIVE
            quiet_since = now
        if now - checked_at >= RECHECK_S:
            checked_at = now
            saved = Message.objects.get(pk=reply.pk)
            release_db_connection()
            if saved.status != Message.Status.STREAMING:
                yield from _ended(saved, user=user, after=after)
                return


def _ended(reply: Message, *, user, after: int) -> Iterator[list[Event]]:
    """A reply that has ended: from its log while it lasts, else from the database."""
    events = shared_log().read(reply.pk, after, 0)
    if events and is_done(events[-1][1]):
        yield events
        return
    budget = budget_snapshot(user=user)
    release_db_connection()
    yield stored_events(reply, after=after, budget=budget)


def text_so_far(reply: Message) -> str:
    """The text of a reply still generating: exact from its run in this worker, else from
    the shared log, else its last checkpoint (at most REPLY_CHECKPOINT_S old)."""
    run = registry.get(reply.pk)
    if run is not None:
        return run.snapshot()[0]
    if settings.REPLY_ON_DISCONNECT == "finish":
        events = shared_log().read(reply.pk, 0, 0)
        texts = [data["text"] for _, data in events if "text" in data]
        if len(texts) >= len(reply.stream_offsets or []):
            return "".join(texts)
    return reply.content
