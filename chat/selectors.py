"""Reads of chats and messages; query shapes are decided here."""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model
from django.db.models import Avg, Count, Max, Subquery, Sum
from django.db.models.functions import Coalesce

from accounts.authentication import needs_active_check, refuse_unless_active
from billing.selectors import chat_cost
from chat.exceptions import (
    ChatForbidden,
    ChatNotFound,
    InvalidChatId,
    InvalidMessageId,
    MessageNotFound,
)
from chat.llm.base import Turn
from chat.models import Chat, Message


def parse_chat_id(chat_id) -> uuid.UUID:
    try:
        return uuid.UUID(str(chat_id))
    except ValueError:
        raise InvalidChatId() from None


def parse_message_id(message_id) -> uuid.UUID:
    try:
        return uuid.UUID(str(message_id))
    except ValueError:
        raise InvalidMessageId() from None


def access_reply(*, user, chat_id, message_id) -> Message:
    """A model reply in one of the caller's active chats (one query). Someone else's reply,
    or one in a deleted chat, is 404: its existence is not revealed."""
    chat_pk = parse_chat_id(chat_id)
    pk = parse_message_id(message_id)
    replies = Message.objects.all()
    check_caller = needs_active_check(user)
    if check_caller:  # a user known only from its token: checked in the same statement
        caller = get_user_model().objects.filter(pk=user.pk).values("is_active")
        replies = replies.annotate(caller_active=Subquery(caller[:1]))
    reply = replies.filter(
        pk=pk,
        chat_id=chat_pk,
        role=Message.Role.MODEL,
        chat__owner_id=user.pk,
        chat__is_active=True,
    ).first()
    if check_caller:
        _refuse_an_inactive_caller(reply, caller)
    if reply is None:
        raise MessageNotFound()
    return reply


def _refuse_an_inactive_caller(row, caller) -> None:
    """401 for a deleted or deactivated caller; with no row its status is read on its own
    (an error path)."""
    if row is not None:
        refuse_unless_active(row.caller_active)
    else:
        refuse_unless_active((caller.first() or {}).get("is_active"))


def access_chat(*, user, chat_id, lock: bool = False) -> Chat:
    """The caller's active chat: 400 not a UUID, 404 absent or deleted, 403 someone else's.

    lock=True (inside a transaction) also locks the row FOR NO KEY UPDATE, like the delete's
    own UPDATE: a concurrent delete then either lands first (404) or waits. NO KEY: a plain
    FOR UPDATE would also block the KEY SHARE lock that inserting a reply into the chat
    takes, and a settle that holds the budget row while inserting its reply would deadlock.

    A user known only from a token (the message endpoint's stateless JWT) is checked here,
    in the same statement: deleted or deactivated is 401 authentication_failed.
    """
    pk = parse_chat_id(chat_id)
    chats = Chat.objects.select_for_update(no_key=True, of=("self",)) if lock else Chat.objects
    check_caller = needs_active_check(user)
    if check_caller:
        caller = get_user_model().objects.filter(pk=user.pk).values("is_active")
        chats = chats.annotate(caller_active=Subquery(caller[:1]))
    chat = chats.filter(pk=pk).first()
    if check_caller:
        _refuse_an_inactive_caller(chat, caller)
    refuse_unless_accessible(
        user=user,
        owner_id=chat.owner_id if chat else None,
        is_active=bool(chat and chat.is_active),
    )
    return chat


def refuse_unless_accessible(*, user, owner_id, is_active: bool) -> None:
    """The chat's own rules once its row is read (owner_id None: no such chat): 404 absent or
    deleted, 403 someone else's. access_chat and the one-statement set-up
    (chat/reply/setup.py) both decide with it."""
    if owner_id is None or not is_active:
        raise ChatNotFound()
    if owner_id != user.pk:
        raise ChatForbidden()


def chats_for(*, user):
    return Chat.objects.filter(owner=user, is_active=True).order_by("-created_at")


def chat_messages(*, chat: Chat):
    return Message.objects.filter(chat=chat).order_by("created_at")


def recent_turns(*, chat: Chat, limit: int) -> list[Turn]:
    """The last `limit` messages with text, oldest first, as provider turns."""
    if limit <= 0:
        return []
    rows = (
        Message.objects.filter(chat=chat)
        .exclude(content="")
        .order_by("-created_at")
        .values_list("role", "content")[:limit]
    )
    return [Turn(role=role, text=content) for role, content in reversed(rows)]


def chat_token_stats(*, chat_id) -> dict:
    """The tokens of a chat's model replies: total, per-reply average and maximum, and how
    many replies (one aggregate query)."""
    row = Message.objects.filter(chat_id=chat_id, role=Message.Role.MODEL).aggregate(
        total=Coalesce(Sum("tokens_used"), 0),
        average=Avg("tokens_used"),
        maximum=Coalesce(Max("tokens_used"), 0),
        message_count=Count("pk"),
    )
    row["average"] = round(float(row["average"]), 1) if row["average"] is not None else 0
    return row


def chat_detail(*, user, chat_id) -> dict:
    """The chat, its messages in order, its token totals and its cost (four queries: the
    chat, its messages, their token totals, the sum of its ledger entries' costs). A reply
    still generating shows status `streaming` and its text so far."""
    from chat.reply.relay import text_so_far

    chat = access_chat(user=user, chat_id=chat_id)
    messages = list(chat_messages(chat=chat))
    for message in messages:
        if message.status == Message.Status.STREAMING:
            message.content = text_so_far(message)
    return {
        "id": chat.pk,
        "title": chat.title,
        "is_active": chat.is_active,
        "created_at": chat.created_at,
        "updated_at": chat.updated_at,
        "messages": messages,
        "token_stats": chat_token_stats(chat_id=chat.pk),
        "cost": chat_cost(chat_id=chat.pk),
    }
