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
