"""The books balance: the one check of the ledger's invariant the tests make.

For each of the user's months, `used` is the sum of the ledger's totals and stays within
`0..limit`; once every reply has ended (`settled`, the default), nothing is held either:
`reserved` is 0 and no reservation of the user is active.
"""

from __future__ import annotations

import uuid

from django.db.models import Sum

from billing.models import LedgerEntry, TokenBudget, TokenReservation
from billing.services import reserve_tokens, settle_reservation
from billing.usage import Usage


def spend(user, input_tokens: int, output_tokens: int = 0, *, model: str = "", chat_id=None):
    """Bill one exchange through the services, a hold then its settle (the provider's
    figures, so the entry is clamped at the limit as a real one is); the Settlement."""
    hold = reserve_tokens(user=user, input_tokens=1, max_output_tokens=1)
    return settle_reservation(
        reservation_id=hold.pk,
        chat_id=chat_id or uuid.uuid4(),
        message_id=uuid.uuid4(),
        usage=Usage(input_tokens, output_tokens),
        model=model,
    )


def books_balance(user, *, settled: bool = True) -> list[str]:
    """What is wrong with the user's books (a user or a username); [] when they balance."""
    filters = {"user__username": user} if isinstance(user, str) else {"user": user}
    wrong = []
    budgets = list(TokenBudget.objects.filter(**filters))
    months = {budget.period for budget in budgets}
    unbudgeted = LedgerEntry.objects.filter(**filters).exclude(period__in=months)
    if unbudgeted.exists():
        wrong.append("ledger entries of a month without a budget")
    for budget in budgets:
        ledger = LedgerEntry.objects.filter(**filters, period=budget.period)
        total = ledger.aggregate(total=Sum("total"))["total"] or 0
        if budget.used != total:
            wrong.append(f"{budget.period}: used {budget.used} but the ledger sums to {total}")
        if not 0 <= budget.used <= budget.limit:
            wrong.append(f"{budget.period}: used {budget.used} outside 0..{budget.limit}")
        if settled and budget.reserved:
            wrong.append(f"{budget.period}: {budget.reserved} still reserved")
    if settled and TokenReservation.objects.filter(**filters, state="active").exists():
        wrong.append("an active reservation")
    return wrong


def assert_books_balance(user, *, settled: bool = True) -> None:
    wrong = books_balance(user, settled=settled)
    assert not wrong, f"the books of {user} do not balance: {'; '.join(wrong)}"
