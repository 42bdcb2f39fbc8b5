"""Budgets, reservations and the ledger: every change to `used` or `reserved` happens here,
inside a transaction with the budget row locked, and every change to `used` writes a
ledger entry, so that for each user and month used == sum(ledger.total)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from billing.alerts import (
    deliver_after_commit,
    record_threshold_alerts,
    threshold_alerts_cte,
    threshold_alerts_params,
)
from billing.exceptions import BudgetExceeded, InvalidLimit, LimitBelowUsed
from billing.models import LedgerEntry, TokenBudget, TokenReservation
from billing.periods import current_period
from billing.prices import cost_of, entry_cost, price_annotations
from billing.selectors import limit_for
from billing.usage import Usage
from config.postgresql.base import compact

logger = logging.getLogger(__name__)


def get_budget(*, user, period: date | None = None) -> TokenBudget:
    """The user's budget row for the month, opened on first use (no cron needed): a write,
    for the paths that change the budget. A read uses billing.selectors.budget_for, which
    never inserts the row."""
    period = period or current_period()
    try:
        return TokenBudget.objects.get(user_id=user.pk, period=period)
    except TokenBudget.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return TokenBudget.objects.create(user_id=user.pk, period=period, limit=limit_for(user))
    except IntegrityError:  # another request opened it first
        return TokenBudget.objects.get(user_id=user.pk, period=period)


def _locked_budget(*, user, period: date | None = None) -> TokenBudget:
    """The budget row, locked for the rest of the caller's transaction (opened if absent)."""
    period = period or current_period()
    locked = TokenBudget.objects.select_for_update(no_key=True)
    try:
        return locked.get(user_id=user.pk, period=period)
    except TokenBudget.DoesNotExist:
        get_budget(user=user, period=period)
        return locked.get(user_id=user.pk, period=period)


def reserve_tokens(*, user, input_tokens: int, max_output_tokens: int) -> TokenReservation:
    """Hold input + output for one reply; cap the output to what the budget has left.

    Raises BudgetExceeded when the remaining budget cannot cover the input and at least
    one output token.
    """
    if connection.vendor == "postgresql":
        return _reserve_in_one_statement(
            user=user, input_tokens=input_tokens, max_output_tokens=max_output_tokens
        )
    # savepoint=False: inside the caller's transaction a failure aborts it all anyway,
    # and the message path saves two round trips per call.
    with transaction.atomic(savepoint=False):
        budget = _locked_budget(user=user)
        remaining = budget.limit - budget.used - budget.reserved
        if remaining - input_tokens >= 1:
            output_cap = min(max_output_tokens, remaining - input_tokens)
            amount = input_tokens + output_cap
            TokenBudget.objects.filter(pk=budget.pk).update(reserved=F("reserved") + amount)
            return TokenReservation.objects.create(
                user_id=user.pk,
                budget=budget,
                amount=amount,
                output_cap=output_cap,
                expires_at=timezone.now() + timedelta(seconds=settings.RESERVATION_TTL_S),
            )
    # Raised outside the block: nothing was written, and the caller's transaction stays usable.
    raise _budget_exceeded(budget, input_tokens)


# The same rules as reserve_tokens' ORM path, as CTEs of one statement: lock the month's budget
# row and only if what remains covers the input and at least one output token, add the hold to
# `reserved` and insert the reservation. `{input}` is the input's SQL (a parameter here, the
# estimate summed over the history in the message set-up's statement, chat/reply/setup.py);
# `{gate}` a FROM item that must yield one row for the budget row to be locked at all. A
# missing budget row (the month's first message) yields no `budget` row and writes nothing:
# the caller opens it through get_budget() and runs the statement again.
_HOLD_CTES = """
budget AS (
    SELECT b.id, b."limit", b.used, b.reserved, {input} AS input,
           b."limit" - b.used - b.reserved - {input} AS left_over
    FROM billing_tokenbudget b {gate}
    WHERE b.user_id = %(user)s AND b.period = %(period)s
    FOR NO KEY UPDATE OF b
), hold AS (
    UPDATE billing_tokenbudget AS row
    SET reserved = row.reserved + budget.input + LEAST(%(max_output)s, budget.left_over)
    FROM budget
    WHERE row.id = budget.id AND budget.left_over >= 1
    RETURNING row.id, budget.input, LEAST(%(max_output)s, budget.left_over) AS output_cap
), reservation AS (
    INSERT INTO billing_tokenreservation
        (user_id, budget_id, amount, output_cap, state, created_at, expires_at)
    SELECT %(user)s, hold.id, hold.input + hold.output_cap, hold.output_cap, %(active)s,
           %(now)s, %(expires)s
    FROM hold
    RETURNING id, output_cap
)"""


def hold_ctes(*, input_sql: str, gate: str = "") -> str:
    """The hold's CTEs (`budget`, `hold`, `reservation`) for a statement of the caller's."""
    return _HOLD_CTES.replace("{input}", input_sql).replace("{gate}", gate)


def hold_params(*, user, max_output_tokens: int, now: datetime) -> dict:
    return {
        "max_output": max_output_tokens,
        "user": user.pk,
        "period": current_period(now),
        "active": TokenReservation.State.ACTIVE,
        "now": now,
        "expires": now + timedelta(seconds=settings.RESERVATION_TTL_S),
    }


# One round trip instead of three.
_RESERVE_SQL = compact(f"""
WITH {hold_ctes(input_sql="%(input)s")}
SELECT budget.id, budget."limit", budget.used, budget.reserved, reservation.id,
       reservation.output_cap
FROM budget LEFT JOIN reservation ON TRUE
""")  # noqa: S608 - built from constants only


def _reserve_in_one_statement(*, user, input_tokens: int, max_output_tokens: int):
    now = timezone.now()
    params = {
        **hold_params(user=user, max_output_tokens=max_output_tokens, now=now),
        "input": input_tokens,
    }
    period = params["period"]
    with connection.prepared_cursor() as cursor:
        cursor.execute(_RESERVE_SQL, params)
        row = cursor.fetchone()
        if row is None:  # the month's first message: open the row, then hold
            get_budget(user=user, period=period)
            cursor.execute(_RESERVE_SQL, params)
            row = cursor.fetchone()
    budget_id, limit, used, reserved, reservation_id, output_cap = row
    budget = TokenBudget(
        id=budget_id, user_id=user.pk, period=period, limit=limit, used=used, reserved=reserved
    )
    if reservation_id is None:
        raise _budget_exceeded(budget, input_tokens)
    budget._state.adding = False
    budget.reserved += input_tokens + output_cap
    reservation = TokenReservation(
        id=reservation_id,
        user_id=user.pk,
        budget=budget,
        amount=input_tokens + output_cap,
        output_cap=output_cap,
        state=TokenReservation.State.ACTIVE,
        created_at=now,
        expires_at=params["expires"],
    )
    reservation._state.adding = False
    return reservation


def budget_exceeded(*, limit: int, used: int, reserved: int, input_tokens: int) -> BudgetExceeded:
    """The refusal of a hold, from the budget as it was when refused."""
    return _budget_exceeded(TokenBudget(limit=limit, used=used, reserved=reserved), input_tokens)


def _budget_exceeded(budget: TokenBudget, input_tokens: int) -> BudgetExceeded:
    remaining = budget.limit - budget.used - budget.reserved
    needed, left = input_tokens + 1, max(0, remaining)
    return BudgetExceeded(
        f"This message needs about {needed} tokens; {left} remain in your monthly budget.",
        details={
            "limit": budget.limit,
            "used": budget.used,
            "reserved": budget.reserved,
            "remaining": left,
            "needed": needed,
        },
    )


@dataclass(frozen=True, slots=True)
class Settlement:
    entry: LedgerEntry
    budget: dict  # the month's limit, used, reserved and remaining once settled

    @property
    def cost(self) -> dict | None:
        """{"amount", "currency"} of this entry; None when its model has no price."""
        return entry_cost(self.entry)


def _locked_reservation(
    reservation_id: int, *, price_of: str = "", at: datetime | None = None
) -> TokenReservation:
    """The reservation and its budget row, both locked in one statement.

    Every path that settles or releases a hold takes the two locks this same way, so they
    are always taken in the same order. With `price_of`, the same statement also reads the
    model's price in force at `at` (`_price_*` attributes, None when it has none).
    """
    query = TokenReservation.objects.select_for_update(no_key=True, of=("self", "budget"))
    if price_of:
        query = query.annotate(**price_annotations(model=price_of, at=at or timezone.now()))
    return query.select_related("budget").get(pk=reservation_id)


def settle_reservation(
    *,
    reservation_id: int,
    chat_id,
    message_id,
    usage: Usage,
    api_key_id: int | None = None,
    model: str = "",
) -> Settlement:
    """Charge what one reply consumed and drop its hold; one ledger entry per message.

    `chat_id` names the chat of a chat message; `api_key_id` the key of a /v1 completion
    (whose `message_id` is the completion's own id).

    Idempotent: a second call for the same message returns the first entry. The charge is
    clamped so `used` never passes the limit. The entry's cost is what the provider bills for
    the tokens it reported (thinking tokens are output), at `model`'s price in force now;
    none when the model has no price. Crossing an alert threshold records the alert.
    """
    usage = usage.billed()
    if connection.vendor == "postgresql":  # the alerts are recorded in the same statement
        settlement = _settle_in_one_statement(
            reservation_id=reservation_id,
            chat_id=chat_id,
            api_key_id=api_key_id,
            message_id=message_id,
            usage=usage,
            model=model,
        )
        if settlement is not None:
            return settlement
    input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    with transaction.atomic(savepoint=False):
        reservation = _locked_reservation(reservation_id, price_of=model)
        budget = reservation.budget
        active = reservation.state == TokenReservation.State.ACTIVE
        # Only a hold that is no longer active can have been settled already.
        existing = None if active else LedgerEntry.objects.filter(message_id=message_id).first()
        if existing is not None:
            return Settlement(entry=existing, budget=budget.snapshot())
        held = reservation.amount if active else 0
        others_held = budget.reserved - held
        reported = input_tokens + output_tokens
        charge = max(0, min(reported, budget.limit - budget.used - others_held))
        cost, currency = None, ""
        if getattr(reservation, "_price_input_per_million", None) is not None:
            cost = cost_of(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                input_per_million=reservation._price_input_per_million,
                output_per_million=reservation._price_output_per_million,
            )
            currency = reservation._price_currency
        money = {"cost": F("cost") + cost, "currency": currency} if cost is not None else {}
        TokenBudget.objects.filter(pk=budget.pk).update(
            used=F("used") + charge, reserved=F("reserved") - held, **money
        )
        TokenReservation.objects.filter(pk=reservation.pk).update(
            state=TokenReservation.State.SETTLED
        )
        entry = _exchange_entry(
            user_id=reservation.user_id,
            period=budget.period,
            chat_id=chat_id,
            api_key_id=api_key_id,
            message_id=message_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            source=usage.source,
            charge=charge,
            model=model,
            cost=cost,
            currency=currency,
        )
        entry.save(force_insert=True)
        record_threshold_alerts(
            user_id=reservation.user_id,
            period=budget.period,
            limit=budget.limit,
            used_before=budget.used,
            used_after=budget.used + charge,
        )
        # The row is locked until commit, so the update's result is known without a read.
        budget.used += charge
        budget.reserved -= held
        return Settlement(entry=entry, budget=budget.snapshot())


# The same rules as settle_reservation's ORM path, as CTEs of one statement (one round trip
# instead of seven: no BEGIN/COMMIT either, it commits on its own): lock the reservation and
# its budget together (as _locked_reservation does), read the model's price in force; unless
# the hold is settled already, charge what was reported clamped so `used` never passes the
# limit, drop the hold if it is still active, add the cost, mark the hold settled, write the
# ledger entry and record the threshold alerts crossed (billing/alerts.py, the same rows
# record_threshold_alerts writes). Python logs a clamp. A hold found settled (a second
# settle of the same reply) writes nothing and goes the ORM path, which returns the first
# entry: the statement itself cannot look for that entry, since a settle that waited for the
# locks reads other tables as they were before it waited (the locked rows alone are re-read
# once the lock is granted). `{gate}` is a FROM item that must yield one row for anything
# to be locked (the reply's row in the end of a reply's statement, chat/reply/settle.py).
_SETTLE_CTES = """
locked AS (
    SELECT r.id, r.user_id, r.state, r.amount, b.id AS budget_id, b.period, b."limit", b.used,
           b.reserved, price.input_per_million, price.output_per_million,
           price.currency AS price_currency
    FROM billing_tokenreservation r
    JOIN billing_tokenbudget b ON b.id = r.budget_id
    LEFT JOIN LATERAL (
        SELECT input_per_million, output_per_million, currency
        FROM billing_modelprice
        WHERE model = %(model)s AND effective_from <= %(now)s
        ORDER BY effective_from DESC
        LIMIT 1
    ) price ON TRUE
    {gate}
    WHERE r.id = %(reservation)s
    FOR NO KEY UPDATE OF r, b
), holds AS (
    SELECT locked.*, CASE WHEN state = %(active)s THEN amount ELSE 0 END AS held
    FROM locked
    WHERE state <> %(settled)s
), figures AS (
    SELECT holds.*,
           GREATEST(0, LEAST(%(reported)s, "limit" - used - (reserved - held))) AS charge,
           ROUND((%(input)s * input_per_million + %(output)s * output_per_million)
                 * 0.000001, 10) AS cost
    FROM holds
), charged AS (
    UPDATE billing_tokenbudget AS row
    SET used = row.used + figures.charge, reserved = row.reserved - figures.held,
        cost = row.cost + COALESCE(figures.cost, 0),
        currency = CASE WHEN figures.cost IS NULL THEN row.currency
                        ELSE figures.price_currency END
    FROM figures
    WHERE row.id = figures.budget_id
    RETURNING row.id
), settled AS (
    UPDATE billing_tokenreservation AS row
    SET state = %(settled)s
    FROM figures
    WHERE row.id = figures.id
    RETURNING row.id
), entry AS (
    INSERT INTO billing_ledgerentry
        (user_id, period, kind, chat_id, api_key_id, message_id, input_tokens, output_tokens,
         total, source, model, cost, currency, actor_id, note, created_at)
    SELECT user_id, period, %(kind)s, %(chat)s, %(api_key)s, %(message)s, %(input)s,
           %(output)s, charge,
           %(source)s, %(model)s, cost,
           CASE WHEN cost IS NULL THEN '' ELSE price_currency END, NULL,
           CASE WHEN charge = %(reported)s THEN '' ELSE %(clamped)s END, %(now)s
    FROM figures
    RETURNING id
), {alerts}"""
# What a settle statement returns, read by settlement_from_row().
SETTLE_RESULT = """locked.user_id, locked.budget_id, locked.period, locked."limit", locked.used,
       locked.reserved, locked.state, figures.held, figures.charge, figures.cost,
       figures.price_currency, (SELECT id FROM entry),
       (SELECT array_agg(webhook_id) FROM alerts)"""
CLAMPED_NOTE = "clamped to the limit"


def settle_ctes(*, gate: str = "") -> str:
    """The settle's CTEs (`locked` ... `entry`, `alerts`) for a statement of the caller's."""
    return _SETTLE_CTES.replace("{gate}", gate).replace("{alerts}", threshold_alerts_cte())


@functools.cache
def _settle_sql() -> str:
    return compact(f"""
WITH {settle_ctes()}
SELECT {SETTLE_RESULT}
FROM locked LEFT JOIN figures ON TRUE
""")  # noqa: S608 - built from constants only


def settle_params(*, reservation_id, chat_id, api_key_id, message_id, usage: Usage, model) -> dict:
    now = timezone.now()
    usage = usage.billed()
    return {
        "reservation": reservation_id,
        "model": model,
        "now": now,
        "message": message_id,
        "chat": chat_id,
        "api_key": api_key_id,
        "active": TokenReservation.State.ACTIVE,
        "settled": TokenReservation.State.SETTLED,
        "kind": LedgerEntry.Kind.EXCHANGE,
        "reported": usage.input_tokens + usage.output_tokens,
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "source": usage.source.value,
        "clamped": CLAMPED_NOTE,
        **threshold_alerts_params(now),
    }


def _settle_in_one_statement(**fields) -> Settlement | None:
    """None when the hold was settled already (nothing written)."""
    params = settle_params(**fields)
    with connection.prepared_cursor() as cursor:
        cursor.execute(_settle_sql(), params)
        row = cursor.fetchone()
    if row is None:
        raise TokenReservation.DoesNotExist(f"No reservation {fields['reservation_id']}")
    return settlement_from_row(row, params)


def settlement_from_row(row, params: dict) -> Settlement | None:
    """The Settlement a settle statement made (SETTLE_RESULT's columns); None when the hold
    was settled already and nothing was written. Logs a clamp; the alerts it recorded are
    sent once the transaction commits (at once in autocommit)."""
    user_id, budget_id, period, limit, used, reserved, state = row[:7]
    held, charge, cost, price_currency, entry_id, alerts = row[7:]
    if state == TokenReservation.State.SETTLED:
        return None
    budget = TokenBudget(
        id=budget_id, user_id=user_id, period=period, limit=limit, used=used, reserved=reserved
    )
    deliver_after_commit(alerts or [])
    entry = _exchange_entry(
        user_id=user_id,
        period=period,
        chat_id=params["chat"],
        api_key_id=params["api_key"],
        message_id=params["message"],
        input_tokens=params["input"],
        output_tokens=params["output"],
        source=params["source"],
        charge=charge,
        model=params["model"],
        cost=cost,
        currency=price_currency,
    )
    entry.id, entry.created_at = entry_id, params["now"]
    entry._state.adding = False  # the statement inserted it
    budget.used += charge
    budget.reserved -= held
    return Settlement(entry=entry, budget=budget.snapshot())


def _exchange_entry(
    *,
    user_id,
    period,
    chat_id,
    api_key_id,
    message_id,
    input_tokens: int,
    output_tokens: int,
    source: str,
    charge: int,
    model: str,
    cost,
    currency: str,
) -> LedgerEntry:
    """One settled exchange's ledger entry (unsaved), as both settle paths write it; logs a
    charge clamped below what was reported.

    A clamp means the provider used more than the budget had left (the output cap is
    enforced by the provider, the input is an estimate): the user is never billed past the
    limit, and staff see the overage in the ledger (reported vs billed).
    """
    reported = input_tokens + output_tokens
    if charge != reported:
        logger.warning(
            "Usage clamped to the limit: user %s, reported %s tokens "
            "(input %s + output %s), billed %s, over by %s",
            user_id,
            reported,
            input_tokens,
            output_tokens,
            charge,
            reported - charge,
        )
    return LedgerEntry(
        user_id=user_id,
        period=period,
        kind=LedgerEntry.Kind.EXCHANGE,
        chat_id=chat_id,
        api_key_id=api_key_id,
        message_id=message_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total=charge,
        source=source,
        model=model,
        cost=cost,
        currency="" if cost is None else currency,
        note="" if charge == reported else CLAMPED_NOTE,
    )


def release_reservation(*, reservation_id: int, reason: str) -> bool:
    """Drop a hold without charging; `reason` (why nothing is billed: a finish reason,
    "stale") goes to the log. Idempotent: False when it was no longer active."""
    with transaction.atomic(savepoint=False):
        reservation = _locked_reservation(reservation_id)
        if reservation.state != TokenReservation.State.ACTIVE:
            return False
        TokenBudget.objects.filter(pk=reservation.budget_id).update(
            reserved=F("reserved") - reservation.amount
        )
        TokenReservation.objects.filter(pk=reservation.pk).update(
            state=TokenReservation.State.RELEASED
        )
    logger.info(
        "Released reservation %s of %s tokens (user %s) unbilled: %s",
        reservation.pk,
        reservation.amount,
        reservation.user_id,
        reason,
    )
    return True


def release_stale_reservations(*, now: datetime | None = None) -> int:
    """Free holds past their expiry (their worker was killed mid-stream)."""
    now = now or timezone.now()
    released = 0
    stale = TokenReservation.objects.filter(
        state=TokenReservation.State.ACTIVE, expires_at__lt=now
    ).order_by("pk")
    for reservation in stale.iterator():
        with transaction.atomic():
            if not release_reservation(reservation_id=reservation.pk, reason="stale"):
                continue
            LedgerEntry.objects.create(
                user_id=reservation.user_id,
                period=reservation.budget.period,
                kind=LedgerEntry.Kind.RELEASE,
                total=0,
                note=f"stale reservation {reservation.pk} of {reservation.amount} tokens released",
            )
        logger.warning(
            "Released stale reservation %s (%s tokens, user %s)",
            reservation.pk,
            reservation.amount,
            reservation.user_id,
        )
        released += 1
    return released


def reset_budget(*, user, actor=None, period: date | None = None, note: str = "") -> bool:
    """Set the month's used to zero with a reset entry. False (and no entry) when already 0."""
    with transaction.atomic():
        budget = _locked_budget(user=user, period=period)
        if budget.used == 0:
            return False
        LedgerEntry.objects.create(
            user=user,
            period=budget.period,
            kind=LedgerEntry.Kind.RESET,
            total=-budget.used,
            actor=actor,
            note=note or "budget reset",
        )
        TokenBudget.objects.filter(pk=budget.pk).update(used=F("used") - budget.used)
        return True


def set_monthly_limit(*, user, limit: int, actor) -> TokenBudget:
    """Give a user their own monthly limit, effective now (this month's budget) and for the
    months after; an adjustment entry names the staff member.

    The one way a limit changes (the budget admin's action, the user page's link). A limit
    below what the user has already used this month is refused (LimitBelowUsed): `used`
    never exceeds `limit`. To stop a user for the rest of the month, set it to `used`.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidLimit(details={"limit": limit})
    with transaction.atomic():
        budget = _locked_budget(user=user)
        if limit < budget.used:
            raise LimitBelowUsed(
                f"The user has already used {budget.used:,} tokens this month; the limit "
                f"cannot be lower. Set it to {budget.used:,} to stop them until next month.",
                details={"limit": limit, "used": budget.used},
            )
        old = budget.limit
        type(user).objects.filter(pk=user.pk).update(monthly_token_limit=limit)
        user.monthly_token_limit = limit
        TokenBudget.objects.filter(pk=budget.pk).update(limit=limit)
        LedgerEntry.objects.create(
            user=user,
            period=budget.period,
            kind=LedgerEntry.Kind.ADJUSTMENT,
            total=0,
            actor=actor,
            note=f"monthly limit {old} -> {limit}",
        )
        budget.refresh_from_db()
        return budget
