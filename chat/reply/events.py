"""The payloads of a reply's events, in one place: a text event, and the final `done` built
either from a run's end or from the saved reply (for a resume once the event log expired).

Every event has an id: text events are 1..n in order, `done` is n + 1.
"""

from __future__ import annotations

from billing.usage import TokenSource, Usage
from chat.models import Message
from chat.reply.errors import message_for_code
from config.api import ServiceError

NOTHING_BILLED = {"input_tokens": 0, "output_tokens": 0, "source": ""}

Event = tuple[int, dict]


def text_event(text: str) -> dict:
    return {"text": text}


def is_done(data: dict) -> bool:
    return data.get("done") is True


def error_payload(error: ServiceError) -> dict:
    """An error as the `error` member of a done event (code and message, never details)."""
    return {"code": error.code, "message": error.message}


def failed_done(*, reply_id, user_message_id, error: ServiceError, tokens_used: int) -> dict:
    """The done event when the full one cannot be built (the end of the reply failed): the
    contract's failure shape, `done`, `error` {code, message}, the ids and `tokens_used`."""
    return {
        "done": True,
        "error": error_payload(error),
        "message_id": str(reply_id),
        "user_message_id": str(user_message_id) if user_message_id else None,
        "tokens_used": tokens_used,
    }


def done_event(
    *,
    reply_id,
    user_message_id,
    finish_reason: str,
    billed: Usage | None,
    charged: int,
    budget: dict,
    cost: dict | None = None,
    error: ServiceError | None = None,
    error_code: str = "",
    error_message: str = "",
) -> dict:
    done = {
        "done": True,
        "tokens_used": charged,
        "message_id": str(reply_id),
        "user_message_id": str(user_message_id) if user_message_id else None,
        "finish_reason": finish_reason,
        "usage": billed.as_dict() if billed is not None else NOTHING_BILLED,
        "budget": {k: budget[k] for k in ("limit", "used", "remaining")},
        "cost": cost,  # {"amount", "currency"} of this reply; null when its model has no price
    }
    if error is not None:
        done["error"] = error_payload(error)
    elif error_code:  # rebuilt from a saved reply: the same {code, message}
        done["error"] = {"code": error_code, "message": error_message}
    return done


def done_from_reply(reply: Message, *, budget: dict) -> dict:
    """The done event of a saved reply (its run has ended); its cost from its ledger entry."""
    from billing.models import LedgerEntry
    from billing.prices import entry_cost

    entry = LedgerEntry.objects.filter(message_id=reply.pk).only("cost", "currency").first()
    return done_event(
        reply_id=reply.pk,
        user_message_id=reply.reply_to_id,
        finish_reason=reply.finish_reason,
        billed=Usage(
            reply.input_tokens, reply.output_tokens, source=TokenSource(reply.token_source)
        )
        if reply.token_source
        else None,
        charged=reply.tokens_used,
        budget=budget,
        cost=entry_cost(entry) if entry is not None else None,
        error_code=reply.error_code,
        error_message=message_for_code(reply.error_code) if reply.error_code else "",
    )


def stored_events(reply: Message, *, after: int, budget: dict) -> list[Event]:
    """The events after `after` of a reply that has ended, from the database: the rest of
    its text as one event (its id that of the last text event), then its done.

    `stream_offsets[k - 1]` is where text event k ended in `content`, so the text of events
    1..after joined with this rest is exactly the stored reply.
    """
    offsets = reply.stream_offsets or ([len(reply.content)] if reply.content else [])
    last_text_id = len(offsets)
    events: list[Event] = []
    if after < last_text_id:
        start = offsets[after - 1] if after > 0 else 0
        events.append((last_text_id, text_event(reply.content[start:])))
    events.append((last_text_id + 1, done_from_reply(reply, budget=budget)))
    return events
