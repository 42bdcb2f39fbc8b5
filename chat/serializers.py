from django.conf import settings
from rest_framework import serializers


class MessageTextField(serializers.CharField):
    """A JSON string, trimmed; numbers and lists are refused rather than turned into text."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class MessageInputSerializer(serializers.Serializer):
    message = MessageTextField(help_text="1 to MAX_TOKENS_PER_MESSAGE characters after trimming.")

    def validate_message(self, value: str) -> str:
        limit = settings.MAX_TOKENS_PER_MESSAGE  # read per request: it follows settings
        if len(value) > limit:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {limit} characters."
            )
        return value
