"""Budgets, reservations and the ledger: every change to `used` or `reserved` happens here,
inside a transaction with the budget row locked, and every change to `used` writes a
ledger entry, so that for each user and month used == sum(ledger.total)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from billing.alerts import record_threshold_alerts
from billing.exceptions import BudgetExceeded, InvalidLimit, LimitBelowUsed
from billing.models import LedgerEntry, TokenBudget, TokenReservation
from billing.prices import cost_of, entry_cost, price_annotations

logger = logging.getLogger(__name__)


def current_period(now: datetime | None = None) -> date:
    now = now or timezone.now()
    return now.astimezone(UTC).date().replace(day=1)


def next_period(period: date) -> date:
    return (period.replace(day=28) + timedelta(days=4)).replace(day=1)


def limit_for(user) -> int:
    custom = getattr(user, "monthly_token_limit", None)
    return settings.DEFAULT_TOKEN_LIMIT if custom is None else custom


def get_budget(*, user, period: date | None = None) -> TokenBudget:
    """The user's budget row for the month, opened on first use (no cron needed)."""
    period = period or current_period()
    try:
        return TokenBudget.objects.get(user=user, period=period)
    except TokenBudget.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return TokenBudget.objects.create(user=user, period=period, limit=limit_for(user))
    except IntegrityError:  # another request opened it first
        return TokenBudget.objects.get(user=user, period=period)


def _locked_budget(*, user, period: date | None = None) -> TokenBudget:
    """The budget row, locked for the rest of the caller's transaction (opened if absent)."""
    period = period or current_period()
    locked = TokenBudget.objects.select_for_update(no_key=True)
    try:
        return locked.get(user=user, period=period)
    except TokenBudget.DoesNotExist:
        get_budget(user=user, period=period)
        return locked.get(user=user, period=period)


def reserve_tokens(*, user, input_tokens: int, max_output_tokens: int) -> TokenReservation:
    """Hold input + output for one reply; cap the output to what the budget has left.

    Raises BudgetExceeded when the remaining budget cannot cover the input and at least
    one output token.
    """
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
                user=user,
                budget=budget,
                amount=amount,
                output_cap=output_cap,
                expires_at=timezone.now() + timedelta(seconds=settings.RESERVATION_TTL_S),
            )
    # Raised outside the block: nothing was written, and the caller's transaction stays usable.
    needed, left = input_tokens + 1, max(0, remaining)
    raise BudgetExceeded(
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
    input_tokens: int,
    output_tokens: int,
    source: str,
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
        if charge != reported:
            # The provider used more than the budget had left (the output cap is enforced by
            # the provider, the input is an estimate): the user is never billed past the
            # limit, and staff see the overage in the ledger (reported vs billed).
            logger.warning(
                "Usage clamped to the limit: user %s, reported %s tokens "
                "(input %s + output %s), billed %s, over by %s",
                reservation.user_id,
                reported,
                input_tokens,
                output_tokens,
                charge,
                reported - charge,
            )
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
        entry = LedgerEntry.objects.create(
            user_id=reservation.user_id,
            period=budget.period,
            kind=LedgerEntry.Kind.EXCHANGE,
            chat_id=chat_id,
            message_id=message_id,
            api_key_id=api_key_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total=charge,
            source=source,
            model=model,
            cost=cost,
            currency=currency,
            note="" if charge == reported else "clamped to the limit",
        )
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


def release_reservation(*, reservation_id: int, reason: str = "") -> bool:
    """Drop a hold without charging. Idempotent: False when it was no longer active."""
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
