"""Authentication classes of our own.

The message endpoint, a reply's resume and its stop (`StatelessJWTAuthentication`): the access
token is checked as everywhere (signature, expiry, type); the user is not read: `TokenUser`
carries only the id. Whether the user still exists and is active is checked by the endpoint's
own statement (chat.selectors.access_chat / access_reply), so a deactivated or deleted user is
refused exactly as before (401 authentication_failed), one round trip cheaper.

`Authorization: Bearer <api key>` for the OpenAI-compatible /v1 API, and only there
(`ApiKeyAuthentication`). The /v1 views list this class as their only authenticator; the rest
of the API keeps JWT (DEFAULT_AUTHENTICATION_CLASSES), so a key never opens /api and a JWT
never opens /v1. `request.auth` is the ApiKey, so the view can name it in the ledger.
"""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework_simplejwt import models
from rest_framework_simplejwt.authentication import JWTStatelessUserAuthentication
from rest_framework_simplejwt.settings import api_settings

from accounts.exceptions import UserInactive, UserNotFound
from accounts.services import authenticate_api_key


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


class InvalidApiKey(exceptions.AuthenticationFailed):
    default_detail = "Incorrect API key provided."
    default_code = "invalid_api_key"


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None  # no credentials: NotAuthenticated (401) from the permission check
        if len(parts) != 2:
            raise InvalidApiKey("Invalid Authorization header: expected 'Bearer <key>'.")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidApiKey() from None
        key = authenticate_api_key(raw=raw)
        if key is None:
            raise InvalidApiKey()
        return key.user, key

    def authenticate_header(self, request):
        return 'Bearer realm="v1"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema names the /v1 authentication."""

    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from POST /api/keys (the /v1 endpoints only).",
        }
