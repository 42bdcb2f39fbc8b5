"""Reads of budgets and the ledger; query shapes are decided here."""

from __future__ import annotations

from billing.models import LedgerEntry
from billing.services import get_budget, next_period

RECENT_LEDGER_ENTRIES = 20


def budget_snapshot(*, user) -> dict:
    budget = get_budget(user=user)
    return {
        "limit": budget.limit,
        "used": budget.used,
        "reserved": budget.reserved,
        "remaining": budget.remaining,
    }


def usage_summary(*, user) -> dict:
    budget = get_budget(user=user)
    recent = (
        LedgerEntry.objects.filter(user=user)
        .order_by("-created_at", "-id")
        .values(
            "kind",
            "chat_id",
            "message_id",
            "input_tokens",
            "output_tokens",
            "total",
            "source",
            "note",
            "created_at",
        )[:RECENT_LEDGER_ENTRIES]
    )
    return {
        "limit": budget.limit,
        "used": budget.used,
        "reserved": budget.reserved,
        "remaining": budget.remaining,
        "percent_used": round(100 * budget.used / budget.limit, 1) if budget.limit else 100.0,
        "period_start": budget.period,
        "reset_date": next_period(budget.period),
        "recent": list(recent),
    }
