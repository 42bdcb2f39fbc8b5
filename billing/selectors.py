"""Reads of budgets and the ledger; query shapes are decided here."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.models import LedgerEntry, TokenBudget
from billing.services import current_period, get_budget, next_period

RECENT_LEDGER_ENTRIES = 20


def current_budget_or_none(*, user) -> TokenBudget | None:
    """This month's budget row if the user has one; never opens it (a read for staff pages)."""
    return TokenBudget.objects.filter(user=user, period=current_period()).first()


def budget_snapshot(*, user) -> dict:
    return get_budget(user=user).snapshot()


def usage_summary(*, user) -> dict:
    budget = get_budget(user=user)
    recent = (
        LedgerEntry.objects.filter(user=user)
        .order_by("-created_at", "-id")
        .values(
            "kind",
            "chat_id",
            "message_id",
            "api_key_id",
            "input_tokens",
            "output_tokens",
            "total",
            "source",
            "note",
            "created_at",
        )[:RECENT_LEDGER_ENTRIES]
    )
    return {
        **budget.snapshot(),
        "percent_used": round(100 * budget.used / budget.limit, 1) if budget.limit else 100.0,
        "period_start": budget.period,
        "reset_date": next_period(budget.period),
        "recent": list(recent),
    }


def tokens_per_day(*, days: int = 30, today=None) -> list[tuple[str, int]]:
    """Tokens billed per UTC day for the last `days` days, zero-filled, oldest first."""
    today = today or timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = (
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXCHANGE, created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(total=Sum("total"))
    )
    totals = {row["day"]: row["total"] for row in rows}
    return [
        ((start + timedelta(days=i)).strftime("%m-%d"), totals.get(start + timedelta(days=i), 0))
        for i in range(days)
    ]


def top_users(*, period=None, limit: int = 10) -> list[dict]:
    return list(
        TokenBudget.objects.filter(period=period or current_period(), used__gt=0)
        .select_related("user")
        .order_by("-used")
        .values("user__username", "used", "limit", "reserved")[:limit]
    )
