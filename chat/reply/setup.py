"""Set-up: everything that can refuse a message, before the first byte, atomically.

Access (and the caller's `is_active`), one reply at a time per chat, the rate limit, the
provider, the history, the budget reservation, the user's message, and the reply's row
(status `streaming`), so the reply's id is known before the model is asked and the chat never
has two runs. Any refusal writes nothing.

On PostgreSQL it is one statement, one round trip, in autocommit (no BEGIN/COMMIT)
(`_set_up_sql`, prepared: docs/decisions/0003): it locks the chat row, reads the checks'
facts (the chat's owner and state, the caller's `is_active`, a reply generating), and only
when they allow it reads the history (recent_turns' selection), takes the hold (billing's
`hold_ctes`, the rules of `reserve_tokens`) and inserts the question and the reply's row; it
returns the facts, so the same errors are raised in the same order as access_chat and the
checks after it.

The choice, and why the hold is the same amount as on the ORM path: the hold is made from
the input estimate, which depends on the history (estimate_input_tokens). The statement
computes that estimate itself, exactly: billing.tokens.estimate_tokens_sql is estimate_tokens
as SQL, its character class built from the interpreter's own regular expression, checked on
every code point by the tests. So the history is read under the chat's lock and the hold made
from it in the same round trip, as the transaction does, and the amount, the output cap and
every refusal are the ORM path's. (Rejected: a hold on an upper bound of the estimate, which
refuses messages and caps replies earlier near the end of a budget; and two round trips,
which leave a gap between reading the history and holding in which the history can change.)

The rate limit (Redis) cannot join the statement, and comes between its checks in the ORM
order (access, no reply generating, the rate limit, the provider, the rest). So the window is
claimed before the statement and given back when the statement refuses for a check that
comes before it (release_rate_limit); and when the window or the provider refuses, the
checks before them are read (an error path, not the message's) so their errors keep
precedence. The month's first message finds no budget row: the statement writes nothing,
the row is opened (get_budget) and the statement runs again.

SQLite runs the same steps as ORM statements in one transaction under the chat's row lock;
both run under the same tests.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.authentication import needs_active_check, refuse_unless_active
from billing.services import (
    budget_exceeded,
    get_budget,
    hold_ctes,
    hold_params,
    reserve_tokens,
)
from billing.tokens import (
    count_system_prompt_tokens,
    estimate_input_tokens,
    estimate_sql_params,
    estimate_tokens_sql,
)
from chat.exceptions import RateLimited, ReplyInProgress
from chat.llm import require_available
from chat.llm.base import LLMProvider, Turn
from chat.llm.errors import LLMUnavailable
from chat.models import Message
from chat.ratelimit import check_rate_limit, release_rate_limit
from chat.selectors import access_chat, parse_chat_id, recent_turns, refuse_unless_accessible
from config.postgresql.base import compact


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
    system_tokens = count_system_prompt_tokens()
    if connection.vendor == "postgresql":
        return _set_up_in_one_statement(
            user=user, chat_id=chat_id, text=text, provider=provider, system_tokens=system_tokens
        )
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
        if _two_set_ups_raced(exc):
            raise ReplyInProgress() from exc
        raise


def _two_set_ups_raced(exc: IntegrityError) -> bool:
    return any(name in str(exc) for name in ("one_streaming_reply", "chat_message.chat_id"))


def _set_up(*, user, chat_id: str, text: str, provider, system_tokens: int) -> Exchange:
    chat = access_chat(user=user, chat_id=chat_id, lock=True)
    if Message.objects.filter(chat=chat, status=Message.Status.STREAMING).exists():
        raise ReplyInProgress()
    check_rate_limit(user=user, window_ms=settings.MESSAGE_RATE_LIMIT_MS)
    require_available(provider)
    history = recent_turns(chat=chat, limit=settings.CONTEXT_MESSAGES)
    input_estimate = estimate_input_tokens(
        system_tokens=system_tokens,
        history_texts=[turn.text for turn in history],
        message=text,
    )
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


# The checks' facts come back whatever they say; the history, the hold and the two rows only
# when they allow the message (`allowed`). Locks: the chat row, then (through `allowed`) the
# budget row, the order of the ORM path. A set-up that waited for the chat's lock reads the
# other tables as they were when it started (READ COMMITTED re-reads only the locked row):
# if the set-up it waited for left a reply generating, its own reply's INSERT meets the
# partial unique index (one reply generating per chat), which is ReplyInProgress, as in
# set_up_reply.
_MESSAGE_COLUMNS = """(id, chat_id, role, content, status, input_tokens, output_tokens,
         tokens_used, token_source, finish_reason, error_code, created_at, reply_to_id,
         reservation_id, stop_requested_at, heartbeat_at, stream_offsets)"""


@functools.cache
def _set_up_sql() -> str:
    users = connection.ops.quote_name(get_user_model()._meta.db_table)
    return compact(f"""
WITH chat AS (
    SELECT c.id, c.owner_id, c.is_active
    FROM chat_chat c
    WHERE c.id = %(chat)s
    FOR NO KEY UPDATE OF c
), caller AS (
    SELECT (SELECT u.is_active FROM {users} u WHERE %(check_caller)s AND u.id = %(user)s)
        AS is_active
), checks AS (
    SELECT chat.id, chat.owner_id, chat.is_active,
           EXISTS (
               SELECT 1 FROM chat_message m
               WHERE m.chat_id = chat.id AND m.status = %(streaming)s
           ) AS streaming
    FROM chat
), allowed AS (
    SELECT checks.id
    FROM checks, caller
    WHERE checks.is_active AND checks.owner_id = %(user)s AND NOT checks.streaming
      AND (NOT %(check_caller)s OR caller.is_active)
), history AS (
    -- By the chat's id, gated by `allowed` as a one-time filter: joined to `allowed`, the
    -- scan could not give the index's order, so PostgreSQL read and sorted the whole chat.
    SELECT m.role, m.content, m.created_at
    FROM chat_message m
    WHERE m.chat_id = %(chat)s AND NOT (m.content = '') AND EXISTS (SELECT 1 FROM allowed)
    ORDER BY m.created_at DESC
    LIMIT %(context)s
), estimate AS (
    SELECT (%(fixed_input)s + COALESCE(SUM({estimate_tokens_sql("history.content")}), 0))::bigint
        AS input
    FROM history
), {hold_ctes(input_sql="estimate.input", gate=", allowed, estimate")},
question AS (
    INSERT INTO chat_message {_MESSAGE_COLUMNS}
    SELECT %(question)s, %(chat)s, %(user_role)s, %(text)s, %(complete)s, 0, 0, 0, '', '', '',
           %(asked_at)s, NULL, NULL, NULL, NULL, '[]'::jsonb
    FROM reservation
    RETURNING id
), reply AS (
    INSERT INTO chat_message {_MESSAGE_COLUMNS}
    SELECT %(reply)s, %(chat)s, %(model_role)s, '', %(streaming)s, 0, 0, 0, '', '', '',
           %(replied_at)s, question.id, reservation.id, NULL, %(now)s, '[]'::jsonb
    FROM question, reservation
    RETURNING id
)
SELECT caller.is_active, checks.id IS NOT NULL, checks.owner_id, checks.is_active,
       checks.streaming, EXISTS (SELECT 1 FROM allowed), budget.id IS NOT NULL,
       budget."limit", budget.used, budget.reserved, budget.input, reservation.id,
       reservation.output_cap,
       (SELECT json_agg(json_build_array(role, content) ORDER BY created_at) FROM history),
       (SELECT id FROM reply)
FROM caller LEFT JOIN checks ON TRUE LEFT JOIN budget ON TRUE LEFT JOIN reservation ON TRUE
""")  # noqa: S608 - built from constants only


def _set_up_in_one_statement(
    *, user, chat_id: str, text: str, provider, system_tokens: int
) -> Exchange:
    chat_pk = parse_chat_id(chat_id)
    try:
        check_rate_limit(user=user, window_ms=settings.MESSAGE_RATE_LIMIT_MS)
    except RateLimited:
        _refuse_as_the_checks_before_it(user=user, chat_pk=chat_pk, claimed=False)
        raise
    try:
        require_available(provider)
    except LLMUnavailable:
        _refuse_as_the_checks_before_it(user=user, chat_pk=chat_pk, claimed=True)
        raise
    now = timezone.now()
    asked_at = now
    replied_at = max(timezone.now(), asked_at + timedelta(microseconds=1))  # after the question
    params = {
        **hold_params(user=user, max_output_tokens=settings.GEMINI_MAX_OUTPUT_TOKENS, now=now),
        **estimate_sql_params(),
        "chat": chat_pk,
        "check_caller": needs_active_check(user),
        "streaming": Message.Status.STREAMING,
        "complete": Message.Status.COMPLETE,
        "user_role": Message.Role.USER,
        "model_role": Message.Role.MODEL,
        "context": max(settings.CONTEXT_MESSAGES, 0),
        # the input estimate without the history's part, which the statement adds
        "fixed_input": estimate_input_tokens(
            system_tokens=system_tokens, history_texts=(), message=text
        ),
        "question": uuid.uuid4(),
        "reply": uuid.uuid4(),
        "text": text,
        "asked_at": asked_at,
        "replied_at": replied_at,
    }
    try:
        row = execute_statement(_set_up_sql(), params)
        allowed, budget_found = row[5:7]
        if allowed and not budget_found:  # the month's first message: open its budget row
            get_budget(user=user, period=params["period"])
            row = execute_statement(_set_up_sql(), params)
    except IntegrityError as exc:
        if _two_set_ups_raced(exc):
            release_rate_limit(user=user)
            raise ReplyInProgress() from exc
        raise
    caller_active, found, owner_id, is_active, streaming = row[:5]
    limit, used, reserved, input_estimate, reservation_id, output_cap = row[7:13]
    history_rows, reply_id = row[13:]
    try:
        _refuse_unless_allowed(user, caller_active, found, owner_id, is_active, streaming)
    except Exception:
        release_rate_limit(user=user)
        raise
    if reservation_id is None:
        raise budget_exceeded(
            limit=limit, used=used, reserved=reserved, input_tokens=input_estimate
        )
    if isinstance(history_rows, str):
        history_rows = json.loads(history_rows)
    return Exchange(
        user=user,
        chat_id=chat_pk,
        text=text,
        history=[Turn(role=role, text=content) for role, content in history_rows or []],
        user_message_id=params["question"],
        reply_id=reply_id,
        reservation_id=reservation_id,
        input_estimate=input_estimate,
        output_cap=output_cap,
        budget_capped=output_cap < settings.GEMINI_MAX_OUTPUT_TOKENS,
        model=provider.model,
    )


def execute_statement(sql: str, params: dict) -> tuple:
    """One statement of the reply's path, its one row (prepared: PostgreSQL only)."""
    with connection.prepared_cursor() as cursor:
        if connection.in_atomic_block:
            # Inside a caller's transaction (a test, a command): a savepoint, so a refused
            # statement leaves it usable. A request has none: no BEGIN/COMMIT round trips.
            with transaction.atomic():
                cursor.execute(sql, params)
        else:
            cursor.execute(sql, params)
        return cursor.fetchone()


def _refuse_unless_allowed(user, caller_active, found, owner_id, is_active, streaming) -> None:
    """access_chat's rules, then one reply at a time, in their order."""
    if needs_active_check(user):
        refuse_unless_active(caller_active)
    refuse_unless_accessible(
        user=user, owner_id=owner_id if found else None, is_active=bool(is_active)
    )
    if streaming:
        raise ReplyInProgress()


def _refuse_as_the_checks_before_it(*, user, chat_pk: uuid.UUID, claimed: bool) -> None:
    """A refusal of the rate limit or the provider: raise instead what a check that comes
    before them refuses (read without a lock: an error path), giving back a claimed window."""
    try:
        chat = access_chat(user=user, chat_id=chat_pk)
        if Message.objects.filter(chat=chat, status=Message.Status.STREAMING).exists():
            raise ReplyInProgress()
    except Exception:
        if claimed:
            release_rate_limit(user=user)
        raise
