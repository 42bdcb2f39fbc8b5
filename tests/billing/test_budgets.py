"""Budgets, reservations and the ledger (billing services)."""

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone
from model_bakery import baker

from billing.exceptions import BudgetExceeded
from billing.models import LedgerEntry, TokenBudget, TokenReservation
from billing.periods import current_period
from billing.selectors import budget_for, usage_summary
from billing.services import (
    get_budget,
    release_reservation,
    release_stale_reservations,
    reserve_tokens,
    reset_budget,
    set_monthly_limit,
    settle_reservation,
)
from billing.usage import Usage
from tests.concurrency import together
from tests.ledger import assert_books_balance


def settle(reservation, input_tokens, output_tokens, message_id=None):
    return settle_reservation(
        reservation_id=reservation.pk,
        chat_id=uuid.uuid4(),
        message_id=message_id or uuid.uuid4(),
        usage=Usage(input_tokens, output_tokens),
    ).entry


def test_reserve_settle_arithmetic_and_ledger(user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 1000
    hold = reserve_tokens(user=user, input_tokens=100, max_output_tokens=200)
    assert (hold.amount, hold.output_cap) == (300, 200)
    assert TokenBudget.objects.get(user=user).reserved == 300

    entry = settle(hold, 90, 40)

    budget = TokenBudget.objects.get(user=user)
    assert (budget.used, budget.reserved) == (130, 0)
    assert (entry.kind, entry.total, entry.input_tokens, entry.output_tokens) == (
        "exchange",
        130,
        90,
        40,
    )
    hold.refresh_from_db()
    assert hold.state == "settled"
    assert_books_balance(user, settled=False)


def test_settlement_reports_the_budget_as_stored(user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 1000
    other = reserve_tokens(user=user, input_tokens=20, max_output_tokens=30)  # still held
    hold = reserve_tokens(user=user, input_tokens=100, max_output_tokens=200)
    settlement = settle_reservation(
        reservation_id=hold.pk,
        chat_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        usage=Usage(90, 40),
    )
    stored = TokenBudget.objects.get(user=user)
    assert settlement.budget == stored.snapshot()
    assert settlement.budget == {"limit": 1000, "used": 130, "reserved": 50, "remaining": 820}
    assert other.state == "active"


def test_refused_when_the_input_cannot_be_covered(user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 100
    with pytest.raises(BudgetExceeded) as caught:
        reserve_tokens(user=user, input_tokens=100, max_output_tokens=50)
    assert caught.value.code == "token_limit_exceeded" and caught.value.status == 403
    assert caught.value.details["remaining"] == 100
    assert budget_for(user=user).reserved == 0
    assert not TokenReservation.objects.exists()


def test_output_is_capped_to_what_remains(user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 1000
    hold = reserve_tokens(user=user, input_tokens=900, max_output_tokens=2048)
    assert hold.output_cap == 100 and hold.amount == 1000


def test_settle_is_idempotent(user):
    hold = reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)
    message_id = uuid.uuid4()
    first = settle(hold, 10, 5, message_id)
    second = settle(hold, 10, 5, message_id)
    assert first.pk == second.pk
    assert LedgerEntry.objects.count() == 1
    assert TokenBudget.objects.get(user=user).used == 15


def test_charge_is_clamped_so_used_never_passes_the_limit(user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 100
    hold = reserve_tokens(user=user, input_tokens=50, max_output_tokens=50)
    entry = settle(hold, 80, 70)  # the provider reported more than was held
    assert entry.total == 100
    assert TokenBudget.objects.get(user=user).used == 100
    assert_books_balance(user, settled=False)


def test_release_is_idempotent_and_charges_nothing(user):
    hold = reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)
    assert release_reservation(reservation_id=hold.pk, reason="error") is True
    assert release_reservation(reservation_id=hold.pk, reason="error") is False
    budget = TokenBudget.objects.get(user=user)
    assert (budget.used, budget.reserved) == (0, 0)


def test_sweep_releases_only_expired_active_holds(user):
    stale = reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)
    fresh = reserve_tokens(user=user, input_tokens=5, max_output_tokens=5)
    TokenReservation.objects.filter(pk=stale.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert release_stale_reservations() == 1
    assert release_stale_reservations() == 0

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.state, fresh.state) == ("released", "active")
    assert TokenBudget.objects.get(user=user).reserved == fresh.amount
    assert LedgerEntry.objects.filter(kind="release", total=0).count() == 1


def test_a_swept_reservation_is_still_billed_once(user):
    hold = reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)
    TokenReservation.objects.filter(pk=hold.pk).update(expires_at=timezone.now())
    release_stale_reservations(now=timezone.now() + timedelta(seconds=1))
    settle(hold, 10, 3)
    budget = TokenBudget.objects.get(user=user)
    assert (budget.used, budget.reserved) == (13, 0)
    assert_books_balance(user, settled=False)


def test_a_new_month_opens_a_fresh_budget_without_a_command(user):
    november = current_period(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    december = current_period(datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    assert (november, december) == (date(2026, 11, 1), date(2026, 12, 1))
    old = get_budget(user=user, period=november)
    TokenBudget.objects.filter(pk=old.pk).update(used=500)
    new = get_budget(user=user, period=december)
    assert new.pk != old.pk and new.used == 0


def test_reading_a_budget_never_opens_its_row(auth_client, user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 1234
    budget = budget_for(user=user)
    assert budget.pk is None and (budget.limit, budget.used, budget.reserved) == (1234, 0, 0)
    assert budget.period == current_period()

    data = auth_client.get("/api/user/token-usage").json()["data"]
    assert (data["limit"], data["used"], data["remaining"]) == (1234, 0, 1234)
    call_command("reset_budgets", "--dry-run")
    assert not TokenBudget.objects.exists()

    reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)  # the write opens it
    assert TokenBudget.objects.get(user=user).reserved == 20


def test_reset_is_idempotent_and_keeps_the_invariant(user):
    hold = reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)
    settle(hold, 10, 10)
    assert reset_budget(user=user) is True
    assert reset_budget(user=user) is False
    assert TokenBudget.objects.get(user=user).used == 0
    assert LedgerEntry.objects.filter(kind="reset").get().total == -20
    assert_books_balance(user, settled=False)


def test_set_monthly_limit_writes_an_adjustment(user, staff_user):
    budget = set_monthly_limit(user=user, limit=555, actor=staff_user)
    assert budget.limit == 555
    user.refresh_from_db()
    assert user.monthly_token_limit == 555
    entry = LedgerEntry.objects.get(kind="adjustment")
    assert entry.actor == staff_user and entry.total == 0


def test_reset_budgets_command_dry_run_and_twice(user, other_user, capsys):
    for account in (user, other_user):
        settle(reserve_tokens(user=account, input_tokens=5, max_output_tokens=5), 5, 5)

    call_command("reset_budgets", "--dry-run")
    assert "2 budget(s) would be reset" in capsys.readouterr().out
    assert TokenBudget.objects.filter(used=10).count() == 2

    call_command("reset_budgets", "--user", "alice")
    assert TokenBudget.objects.get(user=user).used == 0
    assert TokenBudget.objects.get(user=other_user).used == 10

    call_command("reset_budgets")
    entries = LedgerEntry.objects.filter(kind="reset").count()
    call_command("reset_budgets")
    assert "0 budget(s) reset" in capsys.readouterr().out.splitlines()[-1]
    assert LedgerEntry.objects.filter(kind="reset").count() == entries == 2


def test_reset_budgets_unknown_user_is_a_clear_error(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user named"):
        call_command("reset_budgets", "--user", "nobody")


def test_constraints_forbid_negative_counters(user):
    budget = get_budget(user=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        TokenBudget.objects.filter(pk=budget.pk).update(reserved=-1)
    with pytest.raises(IntegrityError), transaction.atomic():
        TokenBudget.objects.filter(pk=budget.pk).update(used=-1)


def test_usage_summary_and_endpoint(auth_client, user, django_assert_num_queries):
    settle(reserve_tokens(user=user, input_tokens=30, max_output_tokens=10), 30, 10)
    with django_assert_num_queries(3):  # the budget, the latest entries, the month's alerts
        summary = usage_summary(user=user)
    assert summary["used"] == 40 and len(summary["recent"]) == 1

    data = auth_client.get("/api/user/token-usage").json()["data"]
    assert data["used"] == 40
    assert data["remaining"] == data["limit"] - 40
    assert data["percent_used"] == round(100 * 40 / data["limit"], 1)
    assert data["reset_date"] > data["period_start"]
    assert data["recent"][0]["total"] == 40


def test_token_usage_needs_a_token(api_client, db):
    assert api_client.get("/api/user/token-usage").status_code == 401


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_reservations_against_a_budget_for_five(settings):
    settings.DEFAULT_TOKEN_LIMIT = 500
    user = baker.make("accounts.User")
    get_budget(user=user)

    results = together(
        *[lambda: reserve_tokens(user=user, input_tokens=50, max_output_tokens=50)] * 20
    )

    holds = [r for r in results if isinstance(r, TokenReservation)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert (len(holds), len(refused)) == (5, 15)
    assert TokenBudget.objects.get(user=user).reserved == 500
    for hold in holds:
        settle(hold, 60, 60)  # more than held: the clamp keeps used within the limit
    assert_books_balance(user, settled=False)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_settles_of_one_reservation_bill_once():
    user = baker.make("accounts.User")
    hold = reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)
    message_id = uuid.uuid4()
    results = together(*[lambda: settle(hold, 10, 10, message_id)] * 8)
    assert all(isinstance(r, LedgerEntry) for r in results)
    assert LedgerEntry.objects.filter(message_id=message_id).count() == 1
    assert TokenBudget.objects.get(user=user).used == 20
