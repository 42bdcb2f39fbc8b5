"""Prices, the cost of each ledger entry and of a month, and where cost is shown."""

import importlib
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone
from model_bakery import baker

from billing.models import LedgerEntry, ModelPrice, TokenBudget
from billing.prices import cost_of, format_amount
from billing.services import reserve_tokens, reset_budget, settle_reservation
from billing.usage import Usage
from chat.models import Chat
from tests.chat.sse_client import parse_events, streamed_body
from tests.fakes.gemini import Script
from tests.ledger import spend


def price(model, input_per_million, output_per_million, *, since=None, currency="USD"):
    return ModelPrice.objects.create(
        model=model,
        input_per_million=Decimal(input_per_million),
        output_per_million=Decimal(output_per_million),
        currency=currency,
        effective_from=since or timezone.now() - timedelta(days=1),
    )


def assert_cost_matches_ledger(user):
    for budget in TokenBudget.objects.filter(user=user):
        ledger = LedgerEntry.objects.filter(user=user, period=budget.period)
        assert budget.cost == (ledger.aggregate(c=Sum("cost"))["c"] or 0)


def test_cost_is_computed_at_the_settle_from_the_price_in_force(user):
    price("test-model", "0.30", "2.50")

    settlement = spend(user, 1000, 160, model="test-model")

    entry = settlement.entry
    entry.refresh_from_db()
    # 1000 x 0.30 / 1e6 + 160 x 2.50 / 1e6 = 0.0003 + 0.0004
    assert entry.cost == Decimal("0.0007") and entry.currency == "USD"
    assert entry.model == "test-model"
    assert settlement.cost == {"amount": "0.000700", "currency": "USD"}
    assert TokenBudget.objects.get(user=user).cost == Decimal("0.0007")


def test_the_settle_reads_the_price_in_its_locking_query(user, django_assert_num_queries):
    price("test-model", "1", "1")
    hold = reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)
    # lock + price (one statement), budget update, reservation update, ledger insert; on
    # PostgreSQL all of it is one statement
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 4):
        settle_reservation(
            reservation_id=hold.pk,
            chat_id=uuid.uuid4(),
            message_id=uuid.uuid4(),
            usage=Usage(5, 5),
            model="test-model",
        )


def test_a_price_change_mid_month_keeps_the_cost_of_earlier_entries(user, auth_client):
    price("test-model", "1.00", "2.00", since=timezone.now() - timedelta(days=10))
    first = spend(user, 1000, 500, model="test-model").entry  # 0.001 + 0.001

    price("test-model", "3.00", "4.00", since=timezone.now())  # staff add the new price
    price("test-model", "9.00", "9.00", since=timezone.now() + timedelta(days=1))  # not yet
    second = spend(user, 1000, 500, model="test-model").entry  # 0.003 + 0.002

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.cost, second.cost) == (Decimal("0.002"), Decimal("0.005"))
    assert TokenBudget.objects.get(user=user).cost == Decimal("0.007")
    data = auth_client.get("/api/user/token-usage").json()["data"]
    assert data["cost"] == {"amount": "0.007000", "currency": "USD"}
    assert [row["cost"]["amount"] for row in data["recent"]] == ["0.005000", "0.002000"]
    assert_cost_matches_ledger(user)


def test_the_months_cost_equals_the_sum_of_its_entries(user, auth_client, staff_user):
    price("test-model", "0.123457", "7.654321")
    price("other-model", "1.25", "10")
    for index in range(25):
        spend(user, 37 * index + 1, 11 * index, model=("test-model", "other-model")[index % 2])
    spend(user, 50, 50, model="no-price-model")
    reset_budget(user=user, actor=staff_user)  # gives tokens back, never money
    spend(user, 999, 1, model="test-model")

    assert_cost_matches_ledger(user)
    expected = LedgerEntry.objects.filter(user=user).aggregate(c=Sum("cost"))["c"]
    data = auth_client.get("/api/user/token-usage").json()["data"]
    assert data["cost"] == {"amount": format_amount(expected), "currency": "USD"}
    assert Decimal(data["cost"]["amount"]) == expected


def test_a_model_without_a_price_bills_tokens_and_shows_no_cost(user):
    settlement = spend(user, 30, 20, model="unknown-model")

    assert settlement.entry.total == 50 and settlement.cost is None
    entry = LedgerEntry.objects.get()
    assert entry.cost is None and entry.currency == "" and entry.model == "unknown-model"
    budget = TokenBudget.objects.get(user=user)
    assert budget.used == 50 and budget.cost == 0


def test_cost_arithmetic_is_decimal_and_rounds_half_up_to_1e_10():
    assert cost_of(
        input_tokens=1, output_tokens=0, input_per_million="0.000001", output_per_million=0
    ) == Decimal("0E-10")
    assert cost_of(
        input_tokens=3, output_tokens=0, input_per_million="0.000050", output_per_million=0
    ) == Decimal("2E-10")  # 1.5e-10 rounds half up
    assert format_amount(Decimal("0.0004120000")) == "0.000412"
    assert format_amount(Decimal("0.0000001234")) == "0.0000001234"
    assert format_amount(Decimal("12")) == "12.000000"


@pytest.mark.django_db(transaction=True)  # the reply's run works on its own thread
def test_the_done_event_and_the_chat_show_the_cost_with_thinking_as_output(
    auth_client, user, fake_gemini, settings
):
    settings.MESSAGE_RATE_LIMIT_MS = 0
    price(settings.GEMINI_MODEL, "0.30", "2.50", since=timezone.now() - timedelta(seconds=5))
    chat = baker.make(Chat, owner=user)
    fake_gemini.script(Script(usage=(1000, 100), thinking_tokens=60))

    response = auth_client.post(
        f"/api/chat/{chat.pk}/message", {"message": "Ideas for a fox collection"}, format="json"
    )
    done = parse_events(streamed_body(response))[-1]

    # 1000 x 0.30 + (100 + 60 thinking) x 2.50, per million
    assert done["usage"]["output_tokens"] == 160
    assert done["cost"] == {"amount": "0.000700", "currency": "USD"}
    entry = LedgerEntry.objects.get(message_id=done["message_id"])
    assert entry.model == settings.GEMINI_MODEL and entry.cost == Decimal("0.0007")

    fake_gemini.script(Script(usage=(2000, 40)))
    response = auth_client.post(
        f"/api/chat/{chat.pk}/message", {"message": "and another"}, format="json"
    )
    assert parse_events(streamed_body(response))[-1]["cost"]["amount"] == "0.000700"
    detail = auth_client.get(f"/api/chat/{chat.pk}").json()["data"]
    assert detail["cost"] == {"amount": "0.001400", "currency": "USD"}


@pytest.mark.django_db(transaction=True)  # the reply's run works on its own thread
def test_the_offline_model_is_priced_at_zero_by_the_seed(auth_client, user, settings):
    # A transactional test that ran earlier flushed the migration's rows: seed them again
    # with the migration's own function.
    from django.apps import apps

    seed_migration = importlib.import_module("billing.migrations.0003_seed_model_prices")
    seed_migration.seed(apps, None)
    settings.LLM_PROVIDER = "local"
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 0
    settings.MESSAGE_RATE_LIMIT_MS = 0
    assert ModelPrice.objects.filter(model="gemini-2.5-flash").exists()  # seeded list price
    chat = baker.make(Chat, owner=user)

    response = auth_client.post(f"/api/chat/{chat.pk}/message", {"message": "hi"}, format="json")

    done = parse_events(streamed_body(response))[-1]
    assert done["tokens_used"] > 0
    assert done["cost"] == {"amount": "0.000000", "currency": "USD"}


def test_a_chat_without_priced_replies_has_no_cost(auth_client, user):
    chat = baker.make(Chat, owner=user)
    spend(user, 10, 10, model="unknown-model", chat_id=chat.pk)
    assert auth_client.get(f"/api/chat/{chat.pk}").json()["data"]["cost"] is None
