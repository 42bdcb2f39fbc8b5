from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from billing.usage import TokenSource

# Costs are stored exactly enough for one token of any listed price: a price per million
# tokens has 6 decimal places, so a single token costs at most 12; 10 keep the error of one
# entry under 1e-10 of a currency unit.
COST_DIGITS = {"max_digits": 20, "decimal_places": 10}
currency_code = RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 code such as USD.")


class ModelPrice(models.Model):
    """A model's list price from `effective_from` on; the price in force at a settle is the
    row with the latest `effective_from` not after it. Rows are never needed to rebuild past
    costs: every ledger entry stores its own."""

    model = models.CharField(max_length=100, help_text="The provider's model name.")
    input_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        validators=[MinValueValidator(0)],
        help_text="Price of one million input tokens (system prompt, history, message).",
    )
    output_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        validators=[MinValueValidator(0)],
        help_text="Price of one million output tokens, thinking tokens included.",
    )
    currency = models.CharField(max_length=3, default="USD", validators=[currency_code])
    effective_from = models.DateTimeField()
    source = models.CharField(
        max_length=200, blank=True, default="", help_text="Where the figure came from."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="price_one_per_model_and_start"
            ),
            models.CheckConstraint(
                condition=Q(input_per_million__gte=0, output_per_million__gte=0),
                name="price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.model}: {self.input_per_million}/{self.output_per_million} "
            f"{self.currency} per 1M tokens from {self.effective_from:%Y-%m-%d %H:%M}"
        )


class TokenBudget(models.Model):
    """One user's tokens for one calendar month (UTC). Opened on first use."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_budgets"
    )
    period = models.DateField(help_text="First day of the month, UTC.")
    limit = models.PositiveIntegerField()
    used = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    # The month's money, beside its tokens: the sum of its ledger entries' costs, kept by the
    # settle in the same locked UPDATE as `used` (entries of unpriced models add nothing).
    cost = models.DecimalField(default=0, **COST_DIGITS)
    currency = models.CharField(max_length=3, default="USD")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period", "user_id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "period"], name="budget_one_per_user_month"),
            models.CheckConstraint(condition=Q(used__gte=0), name="budget_used_not_negative"),
            models.CheckConstraint(
                condition=Q(reserved__gte=0), name="budget_reserved_not_negative"
            ),
            models.CheckConstraint(condition=Q(cost__gte=0), name="budget_cost_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.period:%Y-%m}: {self.used}/{self.limit}"

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used - self.reserved)

    def snapshot(self) -> dict:
        return {
            "limit": self.limit,
            "used": self.used,
            "reserved": self.reserved,
            "remaining": self.remaining,
        }


class TokenReservation(models.Model):
    """A hold on budget for one streaming reply; expires so a sweep can free what a killed
    worker left behind."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    budget = models.ForeignKey(TokenBudget, on_delete=models.CASCADE, related_name="reservations")
    amount = models.PositiveIntegerField()
    output_cap = models.PositiveIntegerField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["state", "expires_at"], name="reservation_sweep")]

    def __str__(self) -> str:
        return f"{self.amount} tokens for user {self.user_id} ({self.state})"


class LedgerEntry(models.Model):
    """Append-only. For every user and period, budget.used == sum(total)."""

    class Kind(models.TextChoices):
        EXCHANGE = "exchange", "Exchange"
        ADJUSTMENT = "adjustment", "Adjustment"
        RESET = "reset", "Reset"
        RELEASE = "release", "Reservation released"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    period = models.DateField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # Plain ids, not foreign keys: billing does not depend on chat, and the ledger
    # outlives whatever it bills.
    chat_id = models.UUIDField(null=True, blank=True)
    message_id = models.UUIDField(null=True, blank=True)
    # The accounts.ApiKey an exchange of the /v1 API was made with (then chat_id is null).
    # A plain id like chat_id: keys are revoked, never deleted, and the entry must not be.
    api_key_id = models.BigIntegerField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    total = models.BigIntegerField()
    # Where input_tokens and output_tokens came from (an exchange's; blank for other kinds).
    source = models.CharField(max_length=10, choices=TokenSource.choices, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    # What the provider bills for input_tokens and output_tokens at the price in force at
    # the settle; null when the model had no price (or the entry bills no exchange).
    cost = models.DecimalField(null=True, blank=True, **COST_DIGITS)
    currency = models.CharField(max_length=3, blank=True, default="")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["user", "period", "-created_at"], name="ledger_user_period"),
            # the export (a user's or everyone's entries between two dates) and a chat's cost
            models.Index(fields=["user", "created_at"], name="ledger_user_created"),
            models.Index(fields=["created_at"], name="ledger_created"),
            models.Index(fields=["chat_id"], name="ledger_chat"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["message_id"],
                condition=Q(message_id__isnull=False),
                name="ledger_one_entry_per_message",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.total:+d} for user {self.user_id} ({self.period:%Y-%m})"


class BudgetAlert(models.Model):
    """A user's month crossed a threshold (percent of its limit). One per user, period and
    threshold, whatever races or resets happen; its webhook delivery is tracked here."""

    class Delivery(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Gave up"
        NOT_SENT = "not_sent", "No webhook configured"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget_alerts"
    )
    period = models.DateField()
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the month's limit.")
    used = models.BigIntegerField(help_text="Tokens used once the crossing settle committed.")
    limit = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Standard Webhooks `webhook-id`: the same on every attempt, so receivers can de-duplicate.
    webhook_id = models.CharField(max_length=64, unique=True)
    payload = models.JSONField()
    delivery = models.CharField(max_length=9, choices=Delivery.choices, default=Delivery.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status = models.CharField(max_length=60, blank=True, default="")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "period", "threshold"], name="alert_once_per_user_period_threshold"
            ),
        ]
        indexes = [models.Index(fields=["delivery", "next_attempt_at"], name="alert_due")]

    def __str__(self) -> str:
        return f"{self.threshold}% of {self.period:%Y-%m} for user {self.user_id}"
