import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


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
        COMPLETE = "complete", "Complete"
        PARTIAL = "partial", "Partial"
        FAILED = "failed", "Failed"

    class TokenSource(models.TextChoices):
        PROVIDER = "provider", "Provider usage report"
        COUNTED = "counted", "Count-tokens API"
        ESTIMATED = "estimated", "Estimate"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=8, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.COMPLETE)
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

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["chat", "-created_at"], name="message_chat_recent")]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
