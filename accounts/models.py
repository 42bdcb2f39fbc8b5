from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower


class User(AbstractUser):
    """The service's user. Custom from the first migration so it can grow without pain."""

    email = models.EmailField("email address", blank=True)
    # Staff may give a user their own monthly token limit; None means DEFAULT_TOKEN_LIMIT.
    monthly_token_limit = models.PositiveIntegerField(null=True, blank=True)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        constraints = [
            # "Alice" and "alice" are one account: the check in register_user alone lets
            # parallel registrations of case variants through.
            models.UniqueConstraint(Lower("username"), name="accounts_user_username_ci_unique"),
        ]


class ApiKey(models.Model):
    """A user's key for the OpenAI-compatible /v1 API.

    Only a SHA-256 of the key is stored, beside its visible prefix. A plain hash (not a
    password hasher) is enough because the secret is 256 random bits, not something a
    person chose: no dictionary or brute force can reach it, so key stretching would add
    nothing but ~100 ms of CPU to every request. The hash is also what the key is looked
    up by (a unique index), so no row is fetched for a key that does not exist.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True, default="")
    # The key's first characters ("sk-" + 8), shown in lists so a person can tell keys apart.
    prefix = models.CharField(max_length=16, unique=True)
    hashed_key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Recorded at most once a minute per key (accounts.services.LAST_USED_PRECISION_S).
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"
        indexes = [models.Index(fields=["user", "revoked_at"], name="apikey_user_active")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
