"""`Authorization: Bearer <api key>` for the OpenAI-compatible /v1 API, and only there.

The /v1 views list this class as their only authenticator; the rest of the API keeps
JWT (DEFAULT_AUTHENTICATION_CLASSES), so a key never opens /api and a JWT never opens /v1.
`request.auth` is the ApiKey, so the view can name it in the ledger.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from accounts.services import authenticate_api_key


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
