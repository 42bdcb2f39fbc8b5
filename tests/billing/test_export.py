"""GET /api/user/token-usage/export and the staff export: streamed CSV, stable columns."""

import csv
import io
import tracemalloc
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import LedgerEntry, ModelPrice
from billing.periods import current_period
from billing.selectors import EXPORT_COLUMNS
from tests.ledger import spend

URL = "/api/user/token-usage/export"


def read_csv(response) -> list[dict]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def at_day(entry, day):
    LedgerEntry.objects.filter(pk=entry.pk).update(
        created_at=datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    )


@pytest.fixture
def priced(db):
    ModelPrice.objects.create(
        model="test-model",
        input_per_million=Decimal("1"),
        output_per_million=Decimal("2"),
        effective_from=timezone.now() - timedelta(days=400),
    )


def test_the_callers_entries_between_two_days_as_csv(auth_client, user, other_user, priced):
    days = [datetime(2026, 3, d, tzinfo=UTC).date() for d in (1, 2, 3, 4)]
    entries = [
        spend(user, 100 * (i + 1), 100 * (i + 1), model="test-model").entry for i in range(4)
    ]
    for entry, day in zip(entries, days, strict=True):
        at_day(entry, day)
    at_day(spend(other_user, 7, 7, model="test-model").entry, days[1])

    response = auth_client.get(URL, {"from": "2026-03-02", "to": "2026-03-03"})

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="ledger-alice-20260302-20260303.csv"' in response["Content-Disposition"]
    rows = read_csv(response)
    assert list(rows[0]) == EXPORT_COLUMNS
    assert [int(row["entry_id"]) for row in rows] == [entries[1].pk, entries[2].pk]
    row = rows[0]
    assert row["username"] == "alice" and row["user_id"] == str(user.pk)
    assert row["created_at"] == "2026-03-02T12:00:00+00:00"
    assert (row["kind"], row["model"], row["total"]) == ("exchange", "test-model", "400")
    assert (row["cost"], row["currency"]) == ("0.000600", "USD")  # 200 x 1 + 200 x 2, per 1M
    assert row["message_id"] == str(entries[1].message_id)


def test_the_default_period_is_this_month_and_accept_csv_is_fine(auth_client, user, priced):
    spend(user, 5, 5, model="test-model")
    response = auth_client.get(URL, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    rows = read_csv(response)
    assert len(rows) == 1 and rows[0]["period"] == current_period().isoformat()


def test_an_unpriced_entry_has_an_empty_cost_and_text_cannot_become_a_formula(
    auth_client, django_user_model
):
    person = django_user_model.objects.create_user("=cmd|calc", "x@example.com", "pw-long-42!")
    auth_client.force_authenticate(user=person)
    spend(person, 5, 5, model="no-price")
    rows = read_csv(auth_client.get(URL))
    assert rows[0]["cost"] == "" and rows[0]["currency"] == ""
    assert rows[0]["username"] == "'=cmd|calc"


@pytest.mark.parametrize(
    "query",
    [
        {"from": "2026-13-01"},
        {"from": "yesterday"},
        {"to": "2026-02-30"},
        {"from": "2026-03-05", "to": "2026-03-01"},
        {"from": "2026-03-01T00:00:00"},
        {"to": ""},
        {"from": "2026-03-01", "since": "2026-03-01"},
    ],
)
def test_bad_dates_are_a_400_in_the_envelope(auth_client, query):
    response = auth_client.get(URL, query, HTTP_ACCEPT="text/csv")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == "validation_error"
    assert set(body["error"]["details"]) <= {"from", "to", "since"}


def test_the_export_needs_a_token(api_client, db):
    response = api_client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_staff_export_every_users_entries_for_a_period(client, staff_user, user, other_user):
    day = timezone.now().date()
    spend(user, 3, 3, model="test-model")
    spend(other_user, 4, 4, model="test-model")
    client.force_login(staff_user)

    form = client.get("/admin/billing/ledgerentry/export/")
    assert form.status_code == 200 and b'name="from"' in form.content
    response = client.get(
        "/admin/billing/ledgerentry/export/", {"from": day.isoformat(), "to": day.isoformat()}
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert sorted(row["username"] for row in read_csv(response)) == ["alice", "bob"]

    bad = client.get("/admin/billing/ledgerentry/export/", {"from": "2026-99-01"})
    assert bad.status_code == 200 and b"errorlist" in bad.content


def test_the_staff_export_is_refused_to_others(client, user):
    client.force_login(user)
    response = client.get("/admin/billing/ledgerentry/export/", {"from": "2026-01-01"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def insert_entries(user, count: int) -> None:
    """`count` exchange entries for today, generated inside the database by one INSERT
    (a recursive CTE, valid on SQLite and PostgreSQL): bulk_create would build a model
    instance per row and take many times longer."""
    ops = connection.ops
    columns = ", ".join(
        ops.quote_name(name)
        for name in (
            "user_id",
            "period",
            "kind",
            "input_tokens",
            "output_tokens",
            "total",
            "source",
            "model",
            "cost",
            "currency",
            "note",
            "created_at",
        )
    )
    table = ops.quote_name(LedgerEntry._meta.db_table)
    rows = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
        "SELECT %s, %s, 'exchange', i, 7, i + 7, 'provider', 'gemini-2.5-flash', %s, 'USD', "
        "'', %s FROM n"
    )
    sql = f"INSERT INTO {table} ({columns}) {rows}"
    params = [
        count,
        user.pk,
        ops.adapt_datefield_value(current_period()),
        ops.adapt_decimalfield_value(Decimal("0.0000123456"), 20, 10),
        ops.adapt_datetimefield_value(timezone.now()),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    assert LedgerEntry.objects.filter(user=user).count() == count


def test_exporting_100000_entries_uses_bounded_memory(auth_client, user):
    """The whole CSV is about 16 MB; streaming it must never hold more than a few chunks."""
    count = 100_000
    insert_entries(user, count)
    day = timezone.now().date().isoformat()

    tracemalloc.start()
    try:
        response = auth_client.get(URL, {"from": day, "to": day})
        lines = size = biggest = 0
        for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
            size += len(chunk)
            biggest = max(biggest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 200
    assert lines == count + 1
    assert size > 10_000_000
    assert biggest < 200_000  # ~500 rows a chunk
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB export"
    print(f"exported {size / 1e6:.1f} MB, traced peak {peak / 1e6:.2f} MB")
