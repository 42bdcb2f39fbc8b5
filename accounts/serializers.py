from django.contrib.auth import get_user_model
from rest_framework import serializers

from config.api import StrictCharField


class RegisterSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    password = StrictCharField(write_only=True, trim_whitespace=False, max_length=128)

    def validate_username(self, value):
        from django.contrib.auth.validators import UnicodeUsernameValidator

        UnicodeUsernameValidator()(value)
        return value


class UserSerializer(serializers.ModelSerializer):
    # Email is optional at registration, so "" is a valid value (not format: email).
    email = serializers.CharField(read_only=True)
    monthly_token_limit = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "is_staff", "date_joined", "monthly_token_limit"]
        read_only_fields = fields


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(write_only=True)


class RefreshSerializer(serializers.Serializer):
    refresh = StrictCharField()


class ApiKeyInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100, required=False, allow_blank=True, default="")


class ApiKeySerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    prefix = serializers.CharField(
        read_only=True, help_text="The key's first characters, to tell keys apart."
    )
    created_at = serializers.DateTimeField(read_only=True)
    last_used_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="Recorded at most once a minute."
    )


class NewApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(
        read_only=True,
        help_text="The whole key. Shown only in this answer: only its hash is stored.",
    )


class RevokedApiKeySerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    revoked_at = serializers.DateTimeField(read_only=True)
