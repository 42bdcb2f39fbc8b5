from rest_framework import serializers


class LedgerEntrySerializer(serializers.Serializer):
    kind = serializers.CharField()
    chat_id = serializers.UUIDField(allow_null=True)
    message_id = serializers.UUIDField(allow_null=True)
    api_key_id = serializers.IntegerField(
        allow_null=True, help_text="The API key of a /v1 completion (then chat_id is null)."
    )
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total = serializers.IntegerField()
    source = serializers.CharField()
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class UsageSummarySerializer(serializers.Serializer):
    limit = serializers.IntegerField()
    used = serializers.IntegerField()
    reserved = serializers.IntegerField()
    remaining = serializers.IntegerField()
    percent_used = serializers.FloatField()
    period_start = serializers.DateField()
    reset_date = serializers.DateField()
    recent = LedgerEntrySerializer(many=True)


class TokenCacheStatsSerializer(serializers.Serializer):
    hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    hit_rate = serializers.FloatField()
    # What the shared cache holds now; null when its backend cannot list keys.
    entries = serializers.IntegerField(allow_null=True)
    local_entries = serializers.IntegerField(help_text="counts in the answering process's LRU")
    api_calls = serializers.IntegerField()
    estimates = serializers.IntegerField()
    fallbacks = serializers.IntegerField()
