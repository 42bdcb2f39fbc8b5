"""The sweep: ends the runs whose worker died (SIGKILL, a crash, an OOM kill).

A run's worker writes its heartbeat (and its text) every REPLY_CHECKPOINT_S; a reply still
`streaming` whose heartbeat is older than REPLY_STALE_S has no run any more. The sweep ends
it as its run would have: status `failed` (error `run_interrupted`), the text kept so far
(the shared log's when it holds more than the last checkpoint), the tokens settled by our
count (the input as estimated for the reservation, the output estimated from the text), and
a done event for anyone still following its log. Run it from cron with
`manage.py sweep_runs` (it also releases stale reservations and expires event logs).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from chat.exceptions import RunInterrupted
from chat.models import Message
from chat.reply.eventlog import shared_log
from chat.reply.settle import Ending, Parties, end_reply
from chat.reply.tokens import count_output

logger = logging.getLogger(__name__)


def sweep_runs(*, now: datetime | None = None) -> int:
    """End every run whose heartbeat is older than REPLY_STALE_S; how many were ended."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.REPLY_STALE_S)
    dead = Message.objects.filter(
        status=Message.Status.STREAMING, heartbeat_at__lt=stale
    ).select_related("chat__owner", "reservation")
    ended = 0
    for reply in dead.order_by("heartbeat_at"):
        if end_dead_run(reply) is not None:
            ended += 1
    return ended


def end_dead_run(reply: Message, *, finish_reason: str = "error") -> dict | None:
    text, offsets = _kept_text(reply)
    reservation = reply.reservation
    input_estimate = reservation.amount - reservation.output_cap if reservation else 0
    stopped = finish_reason == "stopped"
    ending = Ending(
        text=text,
        offsets=offsets,
        status=Message.Status.PARTIAL if stopped else Message.Status.FAILED,
        finish_reason=finish_reason,
        billed=count_output(input_estimate=input_estimate, reply_text=text),
        error=None if stopped else RunInterrupted(),
    )
    done = end_reply(
        Parties(
            user=reply.chat.owner,
            chat_id=reply.chat_id,
            reply_id=reply.pk,
            user_message_id=reply.reply_to_id,
            reservation_id=reply.reservation_id,
            model=_model(),
        ),
        ending,
    )
    if done is None:
        return None
    logger.warning(
        "Ended run of reply %s (worker gone): %d characters kept, %s tokens billed",
        reply.pk,
        len(text),
        done["tokens_used"],
    )
    try:  # followers of its log get the end too
        shared_log().write({reply.pk: [(len(offsets) + 1, done)]}, {reply.pk})
    except Exception:
        logger.warning("Could not write the done event of reply %s to its log", reply.pk)
    return done


def _model() -> str:
    """The model the dead run asked, as far as we know: this node's provider's."""
    from chat.llm import get_provider

    try:
        return get_provider().model
    except ValueError:
        return ""


def _kept_text(reply: Message) -> tuple[str, list[int]]:
    """The checkpoint, or the shared log's text when it has more events."""
    offsets = list(reply.stream_offsets or [])
    text = reply.content
    try:
        events = shared_log().read(reply.pk, 0, 0)
    except Exception:
        logger.warning("Could not read the event log of reply %s", reply.pk)
        events = []
    texts = [data["text"] for _, data in events if "text" in data]
    if len(texts) > len(offsets):
        text, offsets, total = "", [], 0
        for part in texts:
            total += len(part)
            offsets.append(total)
        text = "".join(texts)
    return text, offsets
