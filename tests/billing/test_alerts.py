"""Budget alerts: recorded once per user, month and threshold, shown in token-usage, sent to
a webhook signed as Standard Webhooks says, retried by deliver_alerts."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from model_bakery import baker
from standardwebhooks import Webhook

from billing.alerts import backoff, record_threshold_alerts
from billing.models import BudgetAlert, LedgerEntry, TokenBudget
from billing.periods import current_period
from billing.services import get_budget, reserve_tokens, reset_budget
from billing.services import settle_reservation as settle_reservation_service
from billing.usage import Usage
from tests.concurrency import errors_of, together
from tests.ledger import spend
from tests.live import ROOT, free_port, wait_until

SECRET = "whsec_" + base64.b64encode(b"a test key of 32 bytes, not real").decode()


@pytest.fixture
def limit_1000(settings):
    settings.DEFAULT_TOKEN_LIMIT = 1000
    settings.BUDGET_ALERT_THRESHOLDS = [50, 80, 100]
    settings.ALERT_WEBHOOK_URL = ""


def thresholds(user):
    return sorted(BudgetAlert.objects.filter(user=user).values_list("threshold", flat=True))


def test_thresholds_of_a_limit_in_billions_are_recorded(user, settings):
    # threshold x limit passes a 32-bit integer: the settle statement computes it in 64 bits
    settings.DEFAULT_TOKEN_LIMIT = 2_000_000_000
    settings.BUDGET_ALERT_THRESHOLDS = [50, 80, 100]
    settings.ALERT_WEBHOOK_URL = ""
    spend(user, 1_000_000_000)
    assert thresholds(user) == [50]
    alert = BudgetAlert.objects.get(user=user)
    assert alert.payload["data"]["used"] == 1_000_000_000
    assert alert.payload["data"]["limit"] == 2_000_000_000


def test_each_threshold_is_recorded_when_crossed(user, limit_1000, auth_client):
    spend(user, 499)
    assert thresholds(user) == []
    spend(user, 1)  # exactly 50%
    assert thresholds(user) == [50]
    spend(user, 350)  # 85%: 80 crossed
    spend(user, 10)
    assert thresholds(user) == [50, 80]
    spend(user, 500)  # clamped to the limit: 100%
    assert thresholds(user) == [50, 80, 100]
    alert = BudgetAlert.objects.get(user=user, threshold=80)
    assert (alert.used, alert.limit, alert.period) == (850, 1000, current_period())
    assert alert.delivery == "not_sent"  # no webhook configured

    data = auth_client.get("/api/user/token-usage").json()["data"]
    assert [(a["threshold_percent"], a["used"]) for a in data["alerts"]] == [
        (50, 500),
        (80, 850),
        (100, 1000),
    ]


def test_one_settle_past_several_thresholds_records_each(user, limit_1000):
    spend(user, 900)
    assert thresholds(user) == [50, 80]


def test_a_threshold_is_recorded_once_per_month_even_after_a_reset(user, limit_1000, staff_user):
    spend(user, 600)
    reset_budget(user=user, actor=staff_user)
    spend(user, 600)  # crosses 50% again in the same month
    assert thresholds(user) == [50]
    assert BudgetAlert.objects.count() == 1


def test_no_alerts_without_thresholds(user, limit_1000, settings):
    settings.BUDGET_ALERT_THRESHOLDS = []
    spend(user, 1000)
    assert not BudgetAlert.objects.exists()


def test_backoff_doubles_up_to_six_hours():
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [60, 120, 240]
    assert backoff(30) == timedelta(hours=6)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_settles_record_each_crossing_exactly_once(settings):
    settings.DEFAULT_TOKEN_LIMIT = 1000
    settings.BUDGET_ALERT_THRESHOLDS = [50, 80, 100]
    settings.ALERT_WEBHOOK_URL = ""
    user = baker.make("accounts.User")
    holds = [reserve_tokens(user=user, input_tokens=10, max_output_tokens=40) for _ in range(20)]
    assert TokenBudget.objects.get(user=user).reserved == 1000
    pending = list(holds)
    lock = threading.Lock()

    def settle_one():
        with lock:
            hold = pending.pop()
        settle_reservation_service(
            reservation_id=hold.pk,
            chat_id=uuid.uuid4(),
            message_id=uuid.uuid4(),
            usage=Usage(10, 40),
        )

    assert errors_of(together(*[settle_one] * 20)) == []
    assert thresholds(user) == [50, 80, 100]
    for alert in BudgetAlert.objects.filter(user=user):
        assert alert.used == alert.threshold * 10  # 50 tokens a settle: lands exactly on it
    assert TokenBudget.objects.get(user=user).used == 1000
    assert LedgerEntry.objects.filter(user=user).count() == 20


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_recorders_of_one_crossing_insert_one_row(settings):
    """Without the budget lock (as if two settles both saw the crossing), the unique
    constraint and ON CONFLICT DO NOTHING still leave one alert and raise nothing."""
    settings.BUDGET_ALERT_THRESHOLDS = [80]
    settings.ALERT_WEBHOOK_URL = ""
    user = baker.make("accounts.User")
    budget = get_budget(user=user)

    def record():
        with transaction.atomic():
            record_threshold_alerts(
                user_id=user.pk, period=budget.period, limit=100, used_before=70, used_after=90
            )

    assert errors_of(together(*[record] * 20)) == []
    assert BudgetAlert.objects.filter(user=user, threshold=80).count() == 1


# --- the webhook -------------------------------------------------------------------------


class Receiver:
    """A local HTTP endpoint that answers the given statuses in turn (then 200)."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/budget"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver(statuses=[500])
    yield server
    server.stop()


def spec_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The spec's algorithm, written out: base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@pytest.mark.django_db(transaction=True)
def test_the_webhook_is_signed_sent_after_commit_and_a_500_is_retried(receiver, settings):
    settings.DEFAULT_TOKEN_LIMIT = 100
    settings.BUDGET_ALERT_THRESHOLDS = [80]
    settings.ALERT_WEBHOOK_URL = receiver.url
    settings.ALERT_WEBHOOK_SECRET = SECRET
    settings.ALERT_WEBHOOK_TIMEOUT_S = 5
    user = baker.make("accounts.User", username="carol")

    with transaction.atomic():
        spend(user, 85)
        assert receiver.requests == []  # never inside the settle's transaction
    # After the commit a background attempt is made; the receiver answers 500.
    alert = wait_until(
        lambda: BudgetAlert.objects.filter(last_status="500").first(),
        timeout=15,
        message="the first attempt",
    )
    assert (alert.delivery, alert.attempts) == ("pending", 1)
    assert alert.next_attempt_at > timezone.now() + timedelta(seconds=30)  # backed off
    assert len(receiver.requests) == 1

    call_command("deliver_alerts")  # not due yet: nothing is sent
    assert len(receiver.requests) == 1
    BudgetAlert.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    call_command("deliver_alerts")  # the retry: 200

    alert.refresh_from_db()
    assert (alert.delivery, alert.attempts, alert.last_status) == ("delivered", 2, "200")
    assert alert.delivered_at is not None and alert.next_attempt_at is None
    assert len(receiver.requests) == 2
    (first_headers, first_body), (headers, body) = receiver.requests
    assert headers["webhook-id"] == first_headers["webhook-id"] == alert.webhook_id
    assert body == first_body  # the same event on every attempt
    assert headers["content-type"] == "application/json"
    for sent_headers, sent_body in receiver.requests:
        expected = spec_signature(
            SECRET, sent_headers["webhook-id"], sent_headers["webhook-timestamp"], sent_body
        )
        assert sent_headers["webhook-signature"] == expected
        Webhook(SECRET).verify(sent_body, sent_headers)  # the reference library agrees
    payload = json.loads(body)
    assert payload["type"] == "budget.threshold_crossed"
    assert payload["data"] == {
        "user": {"id": user.pk, "username": "carol"},
        "period": current_period().isoformat(),
        "threshold_percent": 80,
        "used": 85,
        "limit": 100,
    }
    # A tampered body does not verify.
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(body.replace(b"85", b"15"), headers)

    call_command("deliver_alerts")  # delivered: never sent again
    assert len(receiver.requests) == 2


@pytest.mark.django_db(transaction=True)
def test_a_dead_webhook_never_affects_the_message_and_gives_up_after_max_attempts(settings):
    settings.DEFAULT_TOKEN_LIMIT = 100
    settings.BUDGET_ALERT_THRESHOLDS = [50]
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/nobody-listens"
    settings.ALERT_WEBHOOK_SECRET = SECRET
    settings.ALERT_WEBHOOK_MAX_ATTEMPTS = 2
    user = baker.make("accounts.User")

    settlement = spend(user, 60)

    assert settlement.entry.total == 60
    assert TokenBudget.objects.get(user=user).used == 60
    alert = wait_until(
        lambda: BudgetAlert.objects.filter(attempts=1).exclude(last_status="").first(),
        timeout=15,
        message="the first attempt",
    )
    assert alert.delivery == "pending" and "Refused" in alert.last_status
    BudgetAlert.objects.update(next_attempt_at=timezone.now())
    call_command("deliver_alerts")
    alert.refresh_from_db()
    assert (alert.delivery, alert.attempts, alert.next_attempt_at) == ("failed", 2, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALERT_WEBHOOK_URL": "https://example.com/h"}, "ALERT_WEBHOOK_SECRET"),
        (
            {"ALERT_WEBHOOK_URL": "https://example.com/h", "ALERT_WEBHOOK_SECRET": "whsec_!!"},
            "ALERT_WEBHOOK_SECRET",
        ),
        ({"ALERT_WEBHOOK_URL": "ftp://example.com/h"}, "http(s)"),
        ({"BUDGET_ALERT_THRESHOLDS": "50,eighty"}, "BUDGET_ALERT_THRESHOLDS"),
        ({"BUDGET_ALERT_THRESHOLDS": "50,120"}, "BUDGET_ALERT_THRESHOLDS"),
    ],
)
def test_start_up_refuses_a_broken_alert_configuration(env, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT_", "BUDGET_"))}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, "DATABASE_URL": "sqlite:///:memory:", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and message in done.stderr
