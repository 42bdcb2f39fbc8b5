"""Stopping a reply from any connection (POST .../stop).

The stop is decided in the database, atomically: a conditional UPDATE sets the reply's
`stop_requested_at` only while it is `streaming` and not yet stopped, so of two racing stops
exactly one wins and the other, like a stop of an ended reply, gets 409 `reply_finished`.
The run learns of it at once when it is in this worker, else through the shared log's stop
signal (polled by its worker every REPLY_STOP_POLL_MS). It closes the upstream call, saves the
partial reply with finish_reason `stopped`, bills what was used (once: the run settles) and
sends that done event to every listener. This request waits for that, then answers with the
saved reply.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from chat.exceptions import ReplyFinished
from chat.models import Message
from chat.reply import registry
from chat.reply.eventlog import release_db_connection, shared_log
from chat.selectors import access_reply

WAIT_POLL_S = 0.1


def stop_reply(*, user, chat_id, message_id) -> Message:
    reply = access_reply(user=user, chat_id=chat_id, message_id=message_id)
    won = Message.objects.filter(
        pk=reply.pk, status=Message.Status.STREAMING, stop_requested_at__isnull=True
    ).update(stop_requested_at=timezone.now())
    if not won:
        raise ReplyFinished()
    release_db_connection()
    run = registry.get(reply.pk)
    if run is not None:
        run.request_stop("stopped")
        _wait_for_local(run)
    else:
        shared_log().request_stop(reply.pk)
        _wait_for_row(reply.pk)
    reply.refresh_from_db()
    if reply.status == Message.Status.STREAMING and _is_dead(reply):
        # Its worker died: end it here as the sweep would, as stopped.
        from chat.reply.sweep import end_dead_run

        end_dead_run(reply, finish_reason="stopped")
        reply.refresh_from_db()
    return reply


def _wait_for_local(run) -> None:
    deadline = time.monotonic() + settings.REPLY_STOP_WAIT_S
    while not run.feed.ended and time.monotonic() < deadline:
        run.feed.read(run.feed.last_id, timeout=deadline - time.monotonic())


def _wait_for_row(reply_id) -> None:
    deadline = time.monotonic() + settings.REPLY_STOP_WAIT_S
    while time.monotonic() < deadline:
        streaming = Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).exists()
        release_db_connection()
        if not streaming:
            return
        time.sleep(WAIT_POLL_S)


def _is_dead(reply: Message) -> bool:
    stale = timezone.now() - timedelta(seconds=settings.REPLY_STALE_S)
    return reply.heartbeat_at is None or reply.heartbeat_at < stale
