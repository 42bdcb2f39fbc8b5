"""Authentication of the message endpoint without a user row query.

The access token is checked as everywhere (signature, expiry, type); the user is not read:
`TokenUser` carries only the id. Whether the user still exists and is active is checked by
the message's own set-up statement (chat.selectors.access_chat), so a deactivated or deleted
user is refused exactly as before (401 authentication_failed), one round trip cheaper.
"""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt import models
from rest_framework_simplejwt.authentication import JWTStatelessUserAuthentication
from rest_framework_simplejwt.settings import api_settings

from accounts.exceptions import UserInactive, UserNotFound


class TokenUser(models.TokenUser):
    """The user an access token names, unverified against the database: code that needs the
    row reads it (billing looks up the user's own limit when it opens a month's budget)."""

    from_token_only = True

    @property
    def id(self) -> int:
        return int(self.token[api_settings.USER_ID_CLAIM])

    @property
    def pk(self) -> int:
        return self.id


class StatelessJWTAuthentication(JWTStatelessUserAuthentication):
    def get_user(self, validated_token) -> TokenUser:
        super().get_user(validated_token)  # the claim is present
        return TokenUser(validated_token)


def needs_active_check(user) -> bool:
    """True for a user known only from a token: its row was not read."""
    return getattr(user, "from_token_only", False)


def refuse_unless_active(is_active: bool | None) -> None:
    """Raise what JWTAuthentication raises for a deleted (None) or deactivated user."""
    headers = {"WWW-Authenticate": 'Bearer realm="api"'}
    if is_active is None:
        raise UserNotFound(headers=headers)
    if not is_active:
        raise UserInactive(headers=headers)


class StatelessJWTScheme(SimpleJWTScheme):
    """OpenAPI: the same bearer access token as `jwtAuth`, under a name of its own (a schema
    component belongs to one authentication class)."""

    target_class = "accounts.authentication.StatelessJWTAuthentication"
    name = "jwtAuthStateless"
