"""Prices per model and the cost of tokens, in Decimal (never float).

The price in force is read inside the settle's own locking SELECT (`price_annotations`), so a
settle costs no extra query and every process sees a price the moment staff save it: there
is no in-process cache to invalidate across workers and nodes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Subquery

from billing.models import COST_DIGITS, LedgerEntry, ModelPrice

PER_MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal(1).scaleb(-COST_DIGITS["decimal_places"])  # 1e-10
# Amounts are shown with at least this many decimal places (and up to the 10 stored).
DISPLAY_PLACES = 6


def price_in_force(*, model: str, at: datetime) -> ModelPrice | None:
    """The row with the latest `effective_from` not after `at` (one indexed query)."""
    if not model:
        return None
    return (
        ModelPrice.objects.filter(model=model, effective_from__lte=at)
        .order_by("-effective_from")
        .first()
    )


def price_annotations(*, model: str, at: datetime) -> dict:
    """Subqueries for the price in force, to annotate onto a query the caller makes anyway."""
    in_force = ModelPrice.objects.filter(model=model, effective_from__lte=at).order_by(
        "-effective_from"
    )
    return {
        f"_price_{name}": Subquery(in_force.values(name)[:1])
        for name in ("input_per_million", "output_per_million", "currency")
    }


def cost_of(
    *, input_tokens: int, output_tokens: int, input_per_million, output_per_million
) -> Decimal:
    """What the tokens cost at the given prices (per million), rounded half-up to 1e-10."""
    amount = (
        Decimal(input_tokens) * Decimal(input_per_million)
        + Decimal(output_tokens) * Decimal(output_per_million)
    ) / PER_MILLION
    return amount.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def format_amount(amount: Decimal) -> str:
    """A decimal string: at least 6 places ("0.000412"), more only when the value has them."""
    amount = Decimal(amount).normalize()
    if amount.as_tuple().exponent > -DISPLAY_PLACES:
        amount = amount.quantize(Decimal(1).scaleb(-DISPLAY_PLACES))
    return f"{amount:f}"


def money(amount, currency: str) -> dict | None:
    """The API's shape of an amount: {"amount": "0.000412", "currency": "USD"}; None if none."""
    if amount is None:
        return None
    return {"amount": format_amount(amount), "currency": currency}


def entry_cost(entry: LedgerEntry) -> dict | None:
    return money(entry.cost, entry.currency)
