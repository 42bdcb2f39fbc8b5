from django.conf import settings
from rest_framework import serializers

from billing.serializers import MoneySerializer
from chat.models import Chat, Message
from config.api import StrictCharField


class MessageInputSerializer(serializers.Serializer):
    message = StrictCharField(help_text="1 to MAX_TOKENS_PER_MESSAGE characters after trimming.")

    def validate_message(self, value: str) -> str:
        limit = settings.MAX_TOKENS_PER_MESSAGE  # read per request: it follows settings
        if len(value) > limit:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {limit} characters."
            )
        return value


class ChatInputSerializer(serializers.Serializer):
    title = StrictCharField(required=False, allow_blank=True, max_length=200, default="")


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = [
            "id",
            "role",
            "content",
            "status",
            "input_tokens",
            "output_tokens",
            "tokens_used",
            "token_source",
            "finish_reason",
            "error_code",
            "created_at",
        ]


class StoppedReplySerializer(MessageSerializer):
    """The reply as a stop saved it (POST .../stop)."""


class ChatSerializer(serializers.ModelSerializer):
    class Meta:
        model = Chat
        fields = ["id", "title", "is_active", "created_at", "updated_at"]


class TokenStatsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    average = serializers.FloatField()
    maximum = serializers.IntegerField()
    message_count = serializers.IntegerField()


class ChatDetailSerializer(ChatSerializer):
    messages = MessageSerializer(many=True)
    token_stats = TokenStatsSerializer()
    cost = MoneySerializer(
        allow_null=True, help_text="What the chat's replies cost; null when none was priced."
    )

    class Meta(ChatSerializer.Meta):
        fields = [*ChatSerializer.Meta.fields, "messages", "token_stats", "cost"]


class ChatDeletedSerializer(serializers.Serializer):
    chat_id = serializers.UUIDField()
    deleted_at = serializers.DateTimeField()
