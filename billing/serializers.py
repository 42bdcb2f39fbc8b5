from django.utils import timezone
from rest_framework import serializers

from billing.periods import current_period


class MoneySerializer(serializers.Serializer):
    amount = serializers.CharField(help_text='A decimal string, e.g. "0.000412".')
    currency = serializers.CharField(help_text="ISO 4217, e.g. USD.")


class LedgerEntrySerializer(serializers.Serializer):
    kind = serializers.CharField()
    chat_id = serializers.UUIDField(allow_null=True)
    message_id = serializers.UUIDField(allow_null=True)
    api_key_id = serializers.IntegerField(
        allow_null=True, help_text="The API key of a /v1 completion (then chat_id is null)."
    )
    model = serializers.CharField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total = serializers.IntegerField()
    cost = MoneySerializer(allow_null=True, help_text="null when the model had no price.")
    source = serializers.CharField()
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class BudgetAlertSerializer(serializers.Serializer):
    threshold_percent = serializers.IntegerField()
    used = serializers.IntegerField()
    limit = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class UsageSummarySerializer(serializers.Serializer):
    limit = serializers.IntegerField()
    used = serializers.IntegerField()
    reserved = serializers.IntegerField()
    remaining = serializers.IntegerField()
    percent_used = serializers.FloatField()
    period_start = serializers.DateField()
    reset_date = serializers.DateField()
    cost = MoneySerializer(help_text="This month's cost: the sum of its entries' costs.")
    alerts = BudgetAlertSerializer(many=True, help_text="Thresholds crossed this month.")
    recent = LedgerEntrySerializer(many=True)


class ExportPeriodSerializer(serializers.Serializer):
    """?from=YYYY-MM-DD&to=YYYY-MM-DD, both UTC days included; this month by default."""

    def get_fields(self):
        # "from" is a Python keyword: the fields are named here, not as attributes.
        return {
            "from": serializers.DateField(input_formats=["%Y-%m-%d"], required=False),
            "to": serializers.DateField(input_formats=["%Y-%m-%d"], required=False),
        }

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - {"from", "to"})
        if unknown:
            raise serializers.ValidationError(
                {
                    name or "(empty name)": ["Unknown parameter: use from and to."]
                    for name in unknown
                }
            )
        first = attrs.get("from") or current_period()
        last = attrs.get("to") or timezone.now().date()
        if first > last:
            raise serializers.ValidationError({"from": ["Must not be after `to`."]})
        return {"from": first, "to": last}


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
