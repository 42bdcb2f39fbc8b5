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
