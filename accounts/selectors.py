"""Reads of accounts data; query shapes are decided here."""

from __future__ import annotations

from accounts.exceptions import ApiKeyNotFound
from accounts.models import ApiKey


def api_keys_for(*, user):
    """The user's active keys, newest first."""
    return ApiKey.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at", "-id")


def access_api_key(*, user, key_id) -> ApiKey:
    """The caller's active key: 404 when absent, revoked, someone else's or not an id."""
    try:
        pk = int(str(key_id))
    except ValueError:
        raise ApiKeyNotFound() from None
    key = api_keys_for(user=user).filter(pk=pk).first()
    if key is None:
        raise ApiKeyNotFound()
    return key
