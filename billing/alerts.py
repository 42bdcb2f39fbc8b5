"""Budget alerts: a month crossing BUDGET_ALERT_THRESHOLDS percent of its limit, and their
webhook, signed as the Standard Webhooks specification says.

Recording happens inside the settle's transaction (`record_threshold_alerts`), with
INSERT ... ON CONFLICT DO NOTHING against the unique (user, period, threshold), so parallel
settles, retries and resets can never record a crossing twice. Sending happens after the
commit, never inside it: a background thread makes the first attempt (best effort, a short
timeout, its failure never reaches the message), and `manage.py deliver_alerts` run from cron
retries what is still pending with exponential backoff until it is delivered or gives up:
at least once delivery, de-duplicated by receivers through `webhook-id`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import urllib.error
import urllib.request
import uuid
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from standardwebhooks import Webhook

from billing.models import BudgetAlert

logger = logging.getLogger(__name__)

EVENT_TYPE = "budget.threshold_crossed"
BACKOFF_BASE_S = 60
BACKOFF_MAX_S = 6 * 3600


def crossed_thresholds(*, used_before: int, used_after: int, limit: int) -> list[int]:
    """The thresholds (percent) a change of `used` from before to after went past."""
    if limit <= 0 or used_after <= used_before:
        return []
    return [
        threshold
        for threshold in settings.BUDGET_ALERT_THRESHOLDS
        if used_before * 100 < threshold * limit <= used_after * 100
    ]


def record_threshold_alerts(
    *, user_id: int, period: date, limit: int, used_before: int, used_after: int
) -> None:
    """Inside the settle's transaction: one alert per threshold crossed, at most once ever per
    user, period and threshold; their webhook is sent once the transaction commits."""
    crossed = crossed_thresholds(used_before=used_before, used_after=used_after, limit=limit)
    if not crossed:
        return
    username = (
        get_user_model().objects.filter(pk=user_id).values_list("username", flat=True).first()
    )
    now = timezone.now()
    url = settings.ALERT_WEBHOOK_URL
    alerts = [
        BudgetAlert(
            user_id=user_id,
            period=period,
            threshold=threshold,
            used=used_after,
            limit=limit,
            webhook_id=f"msg_{uuid.uuid4().hex}",
            payload=_payload(
                user_id=user_id,
                username=username,
                period=period,
                threshold=threshold,
                used=used_after,
                limit=limit,
                at=now,
            ),
            delivery=BudgetAlert.Delivery.PENDING if url else BudgetAlert.Delivery.NOT_SENT,
            next_attempt_at=now if url else None,
        )
        for threshold in crossed
    ]
    # ON CONFLICT DO NOTHING: a row another settle (or an earlier crossing this month, before
    # a reset) already holds is skipped, and its webhook id never reaches the database.
    BudgetAlert.objects.bulk_create(alerts, ignore_conflicts=True)
    if url:
        ids = [alert.webhook_id for alert in alerts]
        transaction.on_commit(functools.partial(_deliver_in_background, ids))


# record_threshold_alerts as a CTE of the settle's statement (billing/services.py): the same
# rows from `figures` (the locked budget's `used` before the charge, the charge, the limit),
# the same payload as _payload() built in SQL, the same ON CONFLICT DO NOTHING. Its webhook ids
# come back for deliver_after_commit().
_ALERTS_CTE = """alerts AS (
    INSERT INTO billing_budgetalert
        (user_id, period, threshold, used, "limit", created_at, webhook_id, payload, delivery,
         attempts, last_status, last_attempt_at, next_attempt_at, delivered_at)
    SELECT figures.user_id, figures.period, t.threshold, figures.used + figures.charge,
           figures."limit", %(alert_at)s, 'msg_' || replace(gen_random_uuid()::text, '-', ''),
           jsonb_build_object(
               'type', %(alert_type)s::text,
               'timestamp', %(alert_stamp)s::text,
               'data', jsonb_build_object(
                   'user', jsonb_build_object('id', figures.user_id, 'username', u.username),
                   'period', to_char(figures.period, 'YYYY-MM-DD'),
                   'threshold_percent', t.threshold,
                   'used', figures.used + figures.charge,
                   'limit', figures."limit")),
           %(alert_delivery)s, 0, '', NULL, %(alert_next_attempt)s, NULL
    FROM figures
    JOIN {users} u ON u.id = figures.user_id
    CROSS JOIN unnest(%(alert_thresholds)s::int[]) AS t(threshold)
    WHERE figures."limit" > 0 AND figures.charge > 0
      AND figures.used * 100 < t.threshold::bigint * figures."limit"
      AND t.threshold::bigint * figures."limit" <= (figures.used + figures.charge) * 100
    ON CONFLICT (user_id, period, threshold) DO NOTHING
    RETURNING webhook_id
)"""


def threshold_alerts_cte() -> str:
    """The `alerts` CTE; it reads a `figures` CTE (user_id, period, limit, used, charge)."""
    users = connection.ops.quote_name(get_user_model()._meta.db_table)
    return _ALERTS_CTE.replace("{users}", users)


def threshold_alerts_params(now: datetime) -> dict:
    url = settings.ALERT_WEBHOOK_URL
    return {
        "alert_at": now,
        "alert_type": EVENT_TYPE,
        "alert_stamp": _stamp(now),
        "alert_delivery": BudgetAlert.Delivery.PENDING if url else BudgetAlert.Delivery.NOT_SENT,
        "alert_next_attempt": now if url else None,
        "alert_thresholds": list(settings.BUDGET_ALERT_THRESHOLDS),
    }


def deliver_after_commit(webhook_ids: list[str]) -> None:
    """The first delivery attempt of alerts just recorded, once their transaction commits."""
    if webhook_ids and settings.ALERT_WEBHOOK_URL:
        transaction.on_commit(functools.partial(_deliver_in_background, list(webhook_ids)))


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _payload(*, user_id, username, period, threshold, used, limit, at: datetime) -> dict:
    return {
        "type": EVENT_TYPE,
        "timestamp": _stamp(at),
        "data": {
            "user": {"id": user_id, "username": username},
            "period": period.isoformat(),
            "threshold_percent": threshold,
            "used": used,
            "limit": limit,
        },
    }


def _deliver_in_background(webhook_ids: list[str]) -> None:
    thread = threading.Thread(
        target=_first_attempt, args=(webhook_ids,), name="budget-alert", daemon=True
    )
    thread.start()


def _first_attempt(webhook_ids: list[str]) -> None:
    try:
        pending = BudgetAlert.objects.filter(
            webhook_id__in=webhook_ids, delivery=BudgetAlert.Delivery.PENDING
        ).values_list("pk", flat=True)
        for alert_id in list(pending):
            deliver_alert(alert_id=alert_id)
    except Exception:
        # deliver_alerts (cron) retries whatever is still pending.
        logger.exception("First delivery attempt of budget alerts %s failed", webhook_ids)
    finally:
        connection.close()  # this thread's own connection (back to the pool)


def body_of(alert: BudgetAlert) -> str:
    """The exact JSON text that is signed and sent, the same on every attempt."""
    return json.dumps(alert.payload, separators=(",", ":"), sort_keys=True)


def signed_headers(*, webhook_id: str, body: str, at: datetime, secret: str) -> dict[str, str]:
    """Standard Webhooks headers: the signature is base64 HMAC-SHA256, keyed with the secret's
    base64 part, of "{webhook-id}.{webhook-timestamp}.{body}" (the reference library's sign)."""
    signature = Webhook(secret).sign(msg_id=webhook_id, timestamp=at, data=body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def backoff(attempts: int) -> timedelta:
    """The wait after the attempts-th failure: 1, 2, 4 ... minutes, at most 6 hours."""
    return timedelta(seconds=min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


def deliver_alert(*, alert_id: int, now: datetime | None = None) -> str | None:
    """One attempt at one alert, if it is pending and due; returns its delivery state after,
    or None when it was not due (or another process claimed it).

    The claim is a conditional UPDATE that also pushes `next_attempt_at` past the request's
    timeout, so the background thread and cron never send the same attempt twice; a process
    killed mid-attempt leaves the alert due again once that lease runs out.
    """
    now = now or timezone.now()
    lease = timedelta(seconds=settings.ALERT_WEBHOOK_TIMEOUT_S + 30)
    claimed = BudgetAlert.objects.filter(
        pk=alert_id, delivery=BudgetAlert.Delivery.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + lease, attempts=F("attempts") + 1, last_attempt_at=now)
    if not claimed:
        return None
    alert = BudgetAlert.objects.get(pk=alert_id)
    ok, status = _post(alert)
    fields: dict = {"last_status": status[:60]}
    if ok:
        fields.update(
            delivery=BudgetAlert.Delivery.DELIVERED,
            delivered_at=timezone.now(),
            next_attempt_at=None,
        )
    elif alert.attempts >= settings.ALERT_WEBHOOK_MAX_ATTEMPTS:
        fields.update(delivery=BudgetAlert.Delivery.FAILED, next_attempt_at=None)
        logger.error(
            "Budget alert %s: giving up after %s attempts (last: %s)",
            alert.webhook_id,
            alert.attempts,
            status,
        )
    else:
        fields.update(next_attempt_at=timezone.now() + backoff(alert.attempts))
        logger.warning(
            "Budget alert %s: attempt %s failed (%s); retried by deliver_alerts",
            alert.webhook_id,
            alert.attempts,
            status,
        )
    BudgetAlert.objects.filter(pk=alert_id).update(**fields)
    return fields.get("delivery", BudgetAlert.Delivery.PENDING)


def deliver_due_alerts(*, now: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """What cron runs: one attempt at every pending alert that is due, oldest first."""
    now = now or timezone.now()
    counts = {"delivered": 0, "pending": 0, "failed": 0, "skipped": 0}
    if not settings.ALERT_WEBHOOK_URL:
        return counts
    due = (
        BudgetAlert.objects.filter(delivery=BudgetAlert.Delivery.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    for alert_id in list(due):
        state = deliver_alert(alert_id=alert_id, now=now)
        counts["skipped" if state is None else state] += 1
    return counts


def retry_alerts(*, alert_ids) -> int:
    """Staff: make alerts due now again (pending), including ones that gave up."""
    return BudgetAlert.objects.filter(
        pk__in=alert_ids,
        delivery__in=[BudgetAlert.Delivery.PENDING, BudgetAlert.Delivery.FAILED],
    ).update(delivery=BudgetAlert.Delivery.PENDING, next_attempt_at=timezone.now())


def _post(alert: BudgetAlert) -> tuple[bool, str]:
    url = settings.ALERT_WEBHOOK_URL
    if not url.startswith(("http://", "https://")):
        return False, "ALERT_WEBHOOK_URL is not http(s)"
    if not settings.ALERT_WEBHOOK_SECRET:
        return False, "ALERT_WEBHOOK_SECRET is not set"
    body = body_of(alert)
    try:
        signature = signed_headers(
            webhook_id=alert.webhook_id,
            body=body,
            at=timezone.now(),
            secret=settings.ALERT_WEBHOOK_SECRET,
        )
    except ValueError:  # not base64 after whsec_ (settings refuse this at start-up)
        return False, "ALERT_WEBHOOK_SECRET is not whsec_<base64>"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "gemini-chat-billing budget alerts",
        **signature,
    }
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=body.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=settings.ALERT_WEBHOOK_TIMEOUT_S
        ) as response:
            return 200 <= response.status < 300, str(response.status)
    except urllib.error.HTTPError as exc:
        return False, str(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None)
        return False, type(reason if isinstance(reason, BaseException) else exc).__name__
