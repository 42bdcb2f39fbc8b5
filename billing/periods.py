"""The budget's month: a budget, its ledger entries and its alerts belong to the UTC month
that `current_period` names by its first day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.utils import timezone


def current_period(now: datetime | None = None) -> date:
    now = now or timezone.now()
    return now.astimezone(UTC).date().replace(day=1)


def next_period(period: date) -> date:
    return (period.replace(day=28) + timedelta(days=4)).replace(day=1)
