"""Reads of budgets and the ledger; query shapes are decided here."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Max, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.models import BudgetAlert, LedgerEntry, ModelPrice, TokenBudget
from billing.periods import current_period, next_period
from billing.prices import money, price_in_force

RECENT_LEDGER_ENTRIES = 20


def limit_for(user) -> int:
    """The user's monthly limit: their own, else DEFAULT_TOKEN_LIMIT."""
    if getattr(user, "from_token_only", False):  # known from its token: read its own limit
        user = get_user_model().objects.only("monthly_token_limit").get(pk=user.pk)
    custom = getattr(user, "monthly_token_limit", None)
    return settings.DEFAULT_TOKEN_LIMIT if custom is None else custom


def budget_for(*, user, period: date | None = None) -> TokenBudget:
    """The user's budget for the month: its row, or while the month has none an unsaved
    budget with the user's limit and nothing used. Never writes: the row is opened by the
    first write that needs it (billing.services.get_budget, on the reserve path)."""
    period = period or current_period()
    budget = TokenBudget.objects.filter(user_id=user.pk, period=period).first()
    if budget is None:
        budget = TokenBudget(user_id=user.pk, period=period, limit=limit_for(user))
    return budget


def budget_snapshot(*, user) -> dict:
    return budget_for(user=user).snapshot()


def usage_summary(*, user) -> dict:
    """This month's tokens, cost and alerts, and the latest ledger entries (three queries)."""
    budget = budget_for(user=user)
    recent = (
        LedgerEntry.objects.filter(user=user)
        .order_by("-created_at", "-id")
        .values(
            "kind",
            "chat_id",
            "message_id",
            "api_key_id",
            "model",
            "input_tokens",
            "output_tokens",
            "total",
            "cost",
            "currency",
            "source",
            "note",
            "created_at",
        )[:RECENT_LEDGER_ENTRIES]
    )
    alerts = BudgetAlert.objects.filter(user=user, period=budget.period).order_by("threshold")
    return {
        **budget.snapshot(),
        "percent_used": round(100 * budget.used / budget.limit, 1) if budget.limit else 100.0,
        "period_start": budget.period,
        "reset_date": next_period(budget.period),
        # The sum of this month's entry costs, kept on the budget row by the settle.
        "cost": money(budget.cost, budget.currency),
        "alerts": [
            {
                "threshold_percent": alert.threshold,
                "used": alert.used,
                "limit": alert.limit,
                "created_at": alert.created_at,
            }
            for alert in alerts.only("threshold", "used", "limit", "created_at")
        ],
        "recent": [_with_money(row) for row in recent],
    }


def _with_money(row: dict) -> dict:
    row["cost"] = money(row["cost"], row.pop("currency"))
    return row


def chat_cost(*, chat_id) -> dict | None:
    """What a chat's replies cost: the sum of its entries' costs; None when none was priced."""
    row = LedgerEntry.objects.filter(chat_id=chat_id, cost__isnull=False).aggregate(
        amount=Sum("cost"), currency=Max("currency")
    )
    return money(row["amount"], row["currency"])


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


def cost_per_day(*, days: int = 30, today=None) -> list[tuple[str, Decimal]]:
    """Cost of the exchanges per UTC day for the last `days` days, zero-filled, oldest first."""
    today = today or timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = (
        LedgerEntry.objects.filter(
            kind=LedgerEntry.Kind.EXCHANGE, created_at__date__gte=start, cost__isnull=False
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(cost=Sum("cost"))
    )
    totals = {row["day"]: row["cost"] for row in rows}
    return [
        (
            (start + timedelta(days=i)).strftime("%m-%d"),
            totals.get(start + timedelta(days=i), Decimal(0)),
        )
        for i in range(days)
    ]


def top_users(*, period=None, limit: int = 10) -> list[dict]:
    return list(
        TokenBudget.objects.filter(period=period or current_period(), used__gt=0)
        .select_related("user")
        .order_by("-used")
        .values("user__username", "used", "limit", "reserved", "cost", "currency")[:limit]
    )


def top_users_by_cost(*, period=None, limit: int = 10) -> list[dict]:
    return list(
        TokenBudget.objects.filter(period=period or current_period(), cost__gt=0)
        .select_related("user")
        .order_by("-cost", "user_id")
        .values("user__username", "cost", "currency", "used")[:limit]
    )


def unpriced_models(*, now=None, recent: int = 1000) -> list[str]:
    """Models that bill tokens with no cost: the configured GEMINI_MODEL without a price in
    force, and models of the latest `recent` exchanges that carried no cost."""
    now = now or timezone.now()
    missing = set()
    if settings.GEMINI_MODEL and price_in_force(model=settings.GEMINI_MODEL, at=now) is None:
        missing.add(settings.GEMINI_MODEL)
    latest = (
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXCHANGE)
        .order_by("-id")
        .values_list("model", "cost")[:recent]
    )
    seen = {model for model, cost in latest if model and cost is None}
    priced_now = set(
        ModelPrice.objects.filter(model__in=seen, effective_from__lte=now).values_list(
            "model", flat=True
        )
    )
    return sorted(missing | (seen - priced_now))


# --- export ------------------------------------------------------------------------------

# The CSV's columns (stable, documented in docs/budgets.md) and the ledger field each is
# read from: one list, so the header and the rows can never disagree.
_EXPORT_COLUMN_FIELDS = [
    ("entry_id", "id"),
    ("created_at", "created_at"),
    ("user_id", "user_id"),
    ("username", "user__username"),
    ("period", "period"),
    ("kind", "kind"),
    ("chat_id", "chat_id"),
    ("message_id", "message_id"),
    ("model", "model"),
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("total", "total"),
    ("cost", "cost"),
    ("currency", "currency"),
    ("source", "source"),
    ("note", "note"),
]
EXPORT_COLUMNS = [column for column, _ in _EXPORT_COLUMN_FIELDS]
_EXPORT_FIELDS = [field for _, field in _EXPORT_COLUMN_FIELDS]
EXPORT_CHUNK_SIZE = 2000


def day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[first 00:00 UTC, the day after last 00:00 UTC): both days included."""
    return (
        datetime.combine(first, time.min, tzinfo=UTC),
        datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC),
    )


def ledger_export_rows(*, first: date, last: date, user=None):
    """Ledger entries created between two UTC days (both included), oldest first, as tuples
    in EXPORT_COLUMNS order; one user's, or everyone's. A server-side cursor read in chunks,
    so memory stays flat whatever the number of rows."""
    start, end = day_bounds(first, last)
    entries = LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=end)
    if user is not None:
        entries = entries.filter(user=user)
    return (
        entries.order_by("created_at", "id")
        .values_list(*_EXPORT_FIELDS)
        .iterator(chunk_size=EXPORT_CHUNK_SIZE)
    )
