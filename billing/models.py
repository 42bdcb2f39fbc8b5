from django.conf import settings
from django.db import models
from django.db.models import Q


class TokenBudget(models.Model):
    """One user's tokens for one calendar month (UTC). Opened on first use."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_budgets"
    )
    period = models.DateField(help_text="First day of the month, UTC.")
    limit = models.PositiveIntegerField()
    used = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
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
    source = models.CharField(max_length=10, blank=True, default="")
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
            models.Index(fields=["user", "period", "-created_at"], name="ledger_user_period")
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
