"""The end of a reply: save it and settle its tokens, once, whoever ends it (its run, or the
sweep for a run whose worker died).

One transaction: a conditional UPDATE of the reply row (`WHERE status = 'streaming'`)
decides who ends it, then the reservation is settled (one ledger entry) or released. If
that fails because of the row, the tokens are settled on their own and the failure logged:
the settle never depends on the reply row.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from django.db import transaction

from billing.selectors import budget_snapshot
from billing.services import release_reservation, settle_reservation
from chat.exceptions import StreamFailed
from chat.models import Message
from chat.reply.events import done_event
from chat.reply.tokens import Billed
from config.api import ServiceError

logger = logging.getLogger(__name__)


@dataclass
class Ending:
    text: str
    offsets: list[int]
    status: str
    finish_reason: str
    billed: Billed | None  # None: nothing was consumed, the hold is released
    error: ServiceError | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Parties:
    """Whose reply it is: enough to settle it without the run's exchange."""

    user: object
    chat_id: uuid.UUID
    reply_id: uuid.UUID
    user_message_id: uuid.UUID | None
    reservation_id: int | None
    model: str  # priced at the settle


def end_reply(parties: Parties, ending: Ending) -> dict | None:
    """Save and settle; the done event. None when the reply had already been ended."""
    try:
        with transaction.atomic():
            ended = _save(parties, ending)
            if not ended:
                return None
            charged, budget, cost = _settle(parties, ending)
            if ending.billed is not None and charged != ending.billed.total:
                Message.objects.filter(pk=parties.reply_id).update(tokens_used=charged)
    except Exception:
        logger.exception(
            "Could not save reply %s to message %s (%d characters); settling its tokens on "
            "their own (the ledger entry's message_id is the reply's id)",
            parties.reply_id,
            parties.user_message_id,
            len(ending.text),
        )
        return _settle_without_the_reply(parties, ending)
    return _done(parties, ending, charged, budget, cost)


def _save(parties: Parties, ending: Ending) -> bool:
    billed = ending.billed
    return bool(
        Message.objects.filter(pk=parties.reply_id, status=Message.Status.STREAMING).update(
            content=ending.text,
            stream_offsets=ending.offsets,
            status=ending.status,
            finish_reason=ending.finish_reason,
            error_code=ending.error.code if ending.error else "",
            input_tokens=billed.input_tokens if billed else 0,
            output_tokens=billed.output_tokens if billed else 0,
            tokens_used=billed.total if billed else 0,
            token_source=billed.source if billed else "",
        )
    )


def _settle(parties: Parties, ending: Ending) -> tuple[int, dict | None, dict | None]:
    """(tokens charged, the month's budget once settled or None, the cost or None)."""
    if parties.reservation_id is None:
        return 0, None, None
    if ending.billed is None:
        release_reservation(reservation_id=parties.reservation_id, reason=ending.finish_reason)
        return 0, None, None
    settlement = settle_reservation(
        reservation_id=parties.reservation_id,
        chat_id=parties.chat_id,
        message_id=parties.reply_id,
        input_tokens=ending.billed.input_tokens,
        output_tokens=ending.billed.output_tokens,
        source=ending.billed.source,
        model=parties.model,
    )
    return settlement.entry.total, settlement.budget, settlement.cost


def _done(
    parties: Parties, ending: Ending, charged: int, budget: dict | None, cost: dict | None
) -> dict:
    if budget is None:  # nothing was charged: read the month's figures
        budget = budget_snapshot(user=parties.user)
    return done_event(
        reply_id=parties.reply_id,
        user_message_id=parties.user_message_id,
        finish_reason=ending.finish_reason,
        billed=ending.billed,
        charged=charged,
        budget=budget,
        cost=cost,
        error=ending.error,
    )


def _settle_without_the_reply(parties: Parties, ending: Ending) -> dict:
    failed = StreamFailed("The reply could not be saved; its tokens were billed.")
    try:
        with transaction.atomic():
            charged, budget, cost = _settle(parties, ending)
    except Exception:
        logger.exception(
            "Could not settle reply %s either; its reservation is left for the sweep",
            parties.reply_id,
        )
        charged, budget, cost = 0, None, None
    try:
        Message.objects.filter(pk=parties.reply_id, status=Message.Status.STREAMING).update(
            status=Message.Status.FAILED,
            finish_reason="error",
            error_code=failed.code,
            tokens_used=charged,
        )
    except Exception:
        logger.exception("Could not mark reply %s failed", parties.reply_id)
    try:
        failed_ending = Ending("", [], "failed", "error", ending.billed, failed)
        return _done(parties, failed_ending, charged, budget, cost)
    except Exception:
        return {
            "done": True,
            "error": {"code": failed.code, "message": failed.message},
            "message_id": str(parties.reply_id),
            "user_message_id": str(parties.user_message_id),
            "tokens_used": charged,
        }
