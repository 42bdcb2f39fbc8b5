"""Prices, cost and alerts in the staff back office."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import BudgetAlert, ModelPrice
from tests.ledger import spend


@pytest.fixture
def priced(db):
    return ModelPrice.objects.create(
        model="test-model",
        input_per_million=Decimal("1000"),
        output_per_million=Decimal("2000"),
        effective_from=timezone.now() - timedelta(days=1),
    )


def test_staff_add_a_price_and_the_next_settle_uses_it(staff_client, user):
    response = staff_client.post(
        "/admin/billing/modelprice/add/",
        {
            "model": "new-model",
            "input_per_million": "0.5",
            "output_per_million": "1.5",
            "currency": "USD",
            "effective_from_0": (timezone.now() - timedelta(minutes=1)).strftime("%Y-%m-%d"),
            "effective_from_1": (timezone.now() - timedelta(minutes=1)).strftime("%H:%M:%S"),
            "source": "our contract",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    spend(user, 1_000_000, 1_000_000, model="new-model")
    page = staff_client.get("/admin/billing/ledgerentry/").content.decode()
    assert "2.000000 USD" in page  # 1M x 0.5 + 1M x 1.5, per million


def test_a_price_in_another_currency_is_refused(staff_client, priced):
    response = staff_client.post(
        "/admin/billing/modelprice/add/",
        {
            "model": "eur-model",
            "input_per_million": "1",
            "output_per_million": "1",
            "currency": "EUR",
            "effective_from_0": "2026-01-01",
            "effective_from_1": "00:00:00",
        },
    )
    assert response.status_code == 200
    assert "Every price must be in one currency" in response.content.decode()
    assert not ModelPrice.objects.filter(model="eur-model").exists()


def test_staff_are_warned_of_models_billing_without_a_price(staff_client, user, settings):
    settings.GEMINI_MODEL = "gemini-with-no-price"
    spend(user, 10, 10, model="mystery-model")
    for url in (
        "/admin/billing/modelprice/",
        "/admin/billing/ledgerentry/",
        "/admin/billing/tokenbudget/dashboard/",
    ):
        page = staff_client.get(url).content.decode()
        assert "No price in force for: gemini-with-no-price, mystery-model" in page, url


def test_no_warning_when_every_model_is_priced(staff_client, user, priced, settings):
    settings.GEMINI_MODEL = "test-model"
    spend(user, 10, 10, model="test-model")
    page = staff_client.get("/admin/billing/ledgerentry/").content.decode()
    assert "No price in force" not in page


def test_usage_list_ledger_and_dashboard_show_cost(staff_client, user, other_user, priced):
    spend(user, 1000, 1000, model="test-model")  # 1000 x 1000 + 1000 x 2000, per million = 3
    spend(other_user, 10, 10, model="test-model")
    usage = staff_client.get("/admin/billing/tokenbudget/").content.decode()
    assert "3.000000 USD" in usage
    ledger = staff_client.get("/admin/billing/ledgerentry/").content.decode()
    assert "3.000000 USD" in ledger and "test-model" in ledger

    dashboard = staff_client.get("/admin/billing/tokenbudget/dashboard/").content.decode()
    assert 'id="cost-chart"' in dashboard and "Cost per day" in dashboard
    assert "3.030000" in dashboard  # today's bar: 3 + 0.03
    by_cost = dashboard.split('id="top-users-by-cost"')[1].split("</table>")[0]
    assert by_cost.index("alice") < by_cost.index("bob")
    assert "3.000000 USD" in by_cost


def test_alerts_show_their_deliveries_and_staff_can_retry(staff_client, user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 100
    settings.BUDGET_ALERT_THRESHOLDS = [50]
    settings.ALERT_WEBHOOK_URL = "http://127.0.0.1:9/hook"
    spend(user, 30, 30, model="test-model")
    alert = BudgetAlert.objects.get()
    BudgetAlert.objects.filter(pk=alert.pk).update(
        delivery="failed", attempts=10, last_status="500", next_attempt_at=None
    )

    page = staff_client.get("/admin/billing/budgetalert/").content.decode()
    assert "Gave up" in page and "50%" in page and "alice" in page

    response = staff_client.post(
        "/admin/billing/budgetalert/",
        {"action": "retry_delivery", "_selected_action": [str(alert.pk)]},
    )
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.delivery == "pending" and alert.next_attempt_at <= timezone.now()
    assert staff_client.get(f"/admin/billing/budgetalert/{alert.pk}/delete/").status_code == 403
