import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from billing.usage import TokenSource


class Chat(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chats"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    is_active = models.BooleanField(default=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "is_active", "-created_at"], name="chat_owner_active")
        ]
        constraints = [
            # Soft delete is one state: inactive exactly when deleted_at is set.
            models.CheckConstraint(
                condition=Q(is_active=True, deleted_at__isnull=True)
                | Q(is_active=False, deleted_at__isnull=False),
                name="chat_soft_delete_consistent",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Chat {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        MODEL = "model", "Model"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"  # its run is generating it
        COMPLETE = "complete", "Complete"
        PARTIAL = "partial", "Partial"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=8, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETE)
    # The token breakdown of the exchange, stored on the model's reply.
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    tokens_used = models.PositiveIntegerField(default=0)
    token_source = models.CharField(
        max_length=10, choices=TokenSource.choices, blank=True, default=""
    )
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    error_code = models.CharField(max_length=40, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=False)
    # A model reply's run (chat/reply/): the question it answers, its budget hold, the stop
    # decided by POST .../stop, the heartbeat the sweep reads, and where each text event of
    # the stream ended in `content`, so a resume after event N finds its text once the event
    # log has expired.
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reservation = models.ForeignKey(
        "billing.TokenReservation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stream_offsets = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["chat", "-created_at"], name="message_chat_recent"),
            # The sweep's query: runs whose heartbeat is old.
            models.Index(
                fields=["heartbeat_at"],
                condition=Q(status="streaming"),
                name="message_streaming_heartbeat",
            ),
        ]
        constraints = [
            # A chat has at most one reply generating (409 reply_in_progress otherwise).
            models.UniqueConstraint(
                fields=["chat"],
                condition=Q(status="streaming"),
                name="message_one_streaming_reply_per_chat",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class ReplyEvent(models.Model):
    """One event of a reply's stream, in the database event log (chat/reply/eventlog.py):
    used when the cache is not Redis. Deleted REPLY_LOG_TTL_S after the reply's end."""

    reply = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="events")
    event_id = models.PositiveIntegerField()
    data = models.JSONField()
    final = models.BooleanField(default=False)  # the `done` event
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["reply", "event_id"]
        constraints = [
            models.UniqueConstraint(fields=["reply", "event_id"], name="reply_event_unique_id"),
        ]
        indexes = [
            models.Index(fields=["created_at"], condition=Q(final=True), name="reply_event_ends")
        ]

    def __str__(self) -> str:
        return f"{self.reply_id} #{self.event_id}"
