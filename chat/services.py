"""Changes to chats. The message exchange itself lives in chat/reply/."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from chat.exceptions import ChatLimitReached
from chat.models import Chat


def _lock_owner_and_check_limit(*, user) -> None:
    # Lock the owner's row so two parallel creates cannot both pass the limit.
    # NO KEY UPDATE: inserts that reference the user (chats, ledger entries) stay unblocked.
    get_user_model().objects.select_for_update(no_key=True).filter(pk=user.pk).first()
    active = Chat.objects.filter(owner=user, is_active=True).count()
    if active >= settings.MAX_CHATS_PER_USER:
        raise ChatLimitReached(
            details={"limit": settings.MAX_CHATS_PER_USER, "active": active},
        )


def create_chat(*, user, title: str = "") -> Chat:
    with transaction.atomic():
        _lock_owner_and_check_limit(user=user)
        return Chat.objects.create(owner=user, title=title)


def soft_delete_chat(*, chat: Chat) -> Chat:
    """Hide the chat from its owner; staff still see it and can restore it."""
    with transaction.atomic():
        # The row lock orders this against a message being saved into the chat.
        locked = Chat.objects.select_for_update(no_key=True).get(pk=chat.pk)
        if locked.is_active:
            locked.is_active = False
            locked.deleted_at = timezone.now()
            locked.save(update_fields=["is_active", "deleted_at", "updated_at"])
        return locked


def restore_chat(*, chat: Chat) -> Chat:
    with transaction.atomic():
        locked = Chat.objects.select_for_update(no_key=True).get(pk=chat.pk)
        if not locked.is_active:
            _lock_owner_and_check_limit(user=locked.owner)
            locked.is_active = True
            locked.deleted_at = None
            locked.save(update_fields=["is_active", "deleted_at", "updated_at"])
        return locked
