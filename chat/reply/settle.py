"""The end of a reply: save it and settle its tokens, once, whoever ends it (its run, or the
sweep for a run whose worker died).

Atomically: the reply row, only while it is `streaming`, decides who ends it (the other
finds it ended and returns None), then the reservation is settled (one ledger entry, the
threshold alerts crossed) or released. If that fails because of the row, the tokens are
settled on their own and the failure logged: the settle never depends on the reply row.

On PostgreSQL a reply with usage to bill ends in one statement, one round trip in autocommit
(`_end_sql`, prepared: docs/decisions/0003): the reply's row locked while `streaming`, then
billing's settle CTEs (the reservation and budget locked, the clamped charge, the settled
hold, the ledger entry, the alerts; `settle_ctes`), and the reply saved with the charge as
its `tokens_used`. The locks are taken in the ORM path's order (the reply's row, then the
reservation and its budget). A hold found already settled (or gone) makes it write nothing;
the transaction below then decides, as it does on SQLite and for a reply with nothing to
bill (the hold released).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from dataclasses import dataclass, field

from django.db import connection, transaction

from billing.selectors import budget_snapshot
from billing.services import (
    SETTLE_RESULT,
    release_reservation,
    settle_ctes,
    settle_params,
    settle_reservation,
    settlement_from_row,
)
from billing.usage import Usage
from chat.exceptions import StreamFailed
from chat.models import Message
from chat.reply.events import done_event
from chat.reply.setup import execute_statement
from config.api import ServiceError
from config.postgresql.base import compact

logger = logging.getLogger(__name__)


@dataclass
class Ending:
    text: str
    offsets: list[int]
    status: str
    finish_reason: str
    billed: Usage | None  # None: nothing was consumed, the hold is released
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
    if (
        connection.vendor == "postgresql"
        and parties.reservation_id is not None
        and ending.billed is not None
    ):
        try:
            ended = _end_in_one_statement(parties, ending)
        except Exception:
            _log_unsaved(parties, ending)
            return _settle_without_the_reply(parties, ending)
        if ended is NOT_STREAMING:
            return None
        if ended is not None:
            return _done(parties, ending, *ended)
    try:
        with transaction.atomic():
            ended = _save(parties, ending)
            if not ended:
                return None
            charged, budget, cost = _settle(parties, ending)
            if ending.billed is not None and charged != ending.billed.total:
                Message.objects.filter(pk=parties.reply_id).update(tokens_used=charged)
    except Exception:
        _log_unsaved(parties, ending)
        return _settle_without_the_reply(parties, ending)
    return _done(parties, ending, charged, budget, cost)


def _log_unsaved(parties: Parties, ending: Ending) -> None:
    logger.exception(
        "Could not save reply %s to message %s (%d characters); settling its tokens on "
        "their own (the ledger entry's message_id is the reply's id)",
        parties.reply_id,
        parties.user_message_id,
        len(ending.text),
    )


NOT_STREAMING = object()


@functools.cache
def _end_sql() -> str:
    return compact(f"""
WITH reply AS (
    SELECT m.id FROM chat_message m
    WHERE m.id = %(reply)s AND m.status = %(streaming)s
    FOR NO KEY UPDATE OF m
), {settle_ctes(gate="CROSS JOIN reply")},
saved AS (
    UPDATE chat_message AS row
    SET content = %(content)s, stream_offsets = %(offsets)s::jsonb, status = %(status)s,
        finish_reason = %(finish_reason)s, error_code = %(error_code)s,
        input_tokens = %(input)s, output_tokens = %(output)s, tokens_used = figures.charge,
        token_source = %(source)s
    FROM figures
    WHERE row.id = %(reply)s
    RETURNING row.id
)
SELECT (SELECT id FROM reply), (SELECT id FROM saved), {SETTLE_RESULT}
FROM (VALUES (1)) AS one (x) LEFT JOIN locked ON TRUE LEFT JOIN figures ON TRUE
""")  # noqa: S608 - built from constants only


def _end_in_one_statement(parties: Parties, ending: Ending):
    """(charged, budget, cost) once saved and settled; NOT_STREAMING when the reply had been
    ended already; None when the statement wrote nothing for another reason (the hold
    settled already, or gone)."""
    params = {
        **settle_params(
            reservation_id=parties.reservation_id,
            chat_id=parties.chat_id,
            api_key_id=None,
            message_id=parties.reply_id,
            usage=ending.billed,
            model=parties.model,
        ),
        "reply": parties.reply_id,
        "streaming": Message.Status.STREAMING,
        "content": ending.text,
        "offsets": json.dumps(ending.offsets),
        "status": ending.status,
        "finish_reason": ending.finish_reason,
        "error_code": ending.error.code if ending.error else "",
    }
    row = execute_statement(_end_sql(), params)
    locked_reply, saved = row[:2]
    if locked_reply is None:
        return NOT_STREAMING
    if saved is None:
        return None
    settlement = settlement_from_row(row[2:], params)
    return settlement.entry.total, settlement.budget, settlement.cost


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
        usage=ending.billed,
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
