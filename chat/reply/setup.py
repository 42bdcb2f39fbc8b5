"""Set-up: everything that can refuse a message, before the first byte, in one transaction.

Under the chat's row lock: access, one reply at a time per chat, the rate limit, the
provider, the history, the budget reservation, the user's message, and the reply's row
(status `streaming`), so the reply's id is known before the model is asked and the chat
never has two runs. Any refusal rolls it all back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.services import reserve_tokens
from chat.exceptions import ReplyInProgress
from chat.llm.base import LLMProvider, Turn
from chat.llm.errors import LLMUnavailable
from chat.models import Message
from chat.ratelimit import check_rate_limit
from chat.reply.tokens import estimate_input_tokens, system_prompt_tokens
from chat.selectors import access_chat, recent_turns


@dataclass(frozen=True)
class Exchange:
    """What a run needs to know about the message once the request has returned."""

    user: object
    chat_id: uuid.UUID
    text: str
    history: list[Turn]
    user_message_id: uuid.UUID
    reply_id: uuid.UUID
    reservation_id: int
    input_estimate: int
    output_cap: int
    budget_capped: bool  # the budget, not the provider's maximum, set the output cap
    model: str  # the provider's model, priced at the settle


def set_up_reply(*, user, chat_id: str, text: str, provider: LLMProvider) -> Exchange:
    """Raises a ServiceError for every refusal; nothing is saved then."""
    # Any network call (the system prompt's count) happens before the locks are taken.
    system_tokens = system_prompt_tokens()
    try:
        with transaction.atomic():
            return _set_up(
                user=user,
                chat_id=chat_id,
                text=text,
                provider=provider,
                system_tokens=system_tokens,
            )
    except IntegrityError as exc:
        # The partial unique index backs the check above it: two set-ups that raced.
        # (PostgreSQL names the index; SQLite names its column.)
        if any(name in str(exc) for name in ("one_streaming_reply", "chat_message.chat_id")):
            raise ReplyInProgress() from exc
        raise


def _set_up(*, user, chat_id: str, text: str, provider, system_tokens: int) -> Exchange:
    chat = access_chat(user=user, chat_id=chat_id, lock=True)
    if Message.objects.filter(chat=chat, status=Message.Status.STREAMING).exists():
        raise ReplyInProgress()
    check_rate_limit(user=user, window_ms=settings.MESSAGE_RATE_LIMIT_MS)
    if provider.status() != "ok":
        raise LLMUnavailable()
    history = recent_turns(chat=chat, limit=settings.CONTEXT_MESSAGES)
    input_estimate = estimate_input_tokens(system_tokens=system_tokens, history=history, text=text)
    reservation = reserve_tokens(
        user=user,
        input_tokens=input_estimate,
        max_output_tokens=settings.GEMINI_MAX_OUTPUT_TOKENS,
    )
    question = Message.objects.create(
        chat=chat, role=Message.Role.USER, content=text, status=Message.Status.COMPLETE
    )
    reply = Message.objects.create(
        chat=chat,
        role=Message.Role.MODEL,
        status=Message.Status.STREAMING,
        reply_to=question,
        reservation=reservation,
        heartbeat_at=timezone.now(),
    )
    return Exchange(
        user=user,
        chat_id=chat.pk,
        text=text,
        history=history,
        user_message_id=question.pk,
        reply_id=reply.pk,
        reservation_id=reservation.pk,
        input_estimate=input_estimate,
        output_cap=reservation.output_cap,
        budget_capped=reservation.output_cap < settings.GEMINI_MAX_OUTPUT_TOKENS,
        model=provider.model,
    )
