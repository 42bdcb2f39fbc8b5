from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAdminUser
from rest_framework.views import APIView

from billing.selectors import usage_summary
from billing.serializers import TokenCacheStatsSerializer, UsageSummarySerializer
from billing.tokens import token_cache_stats
from config.api import error_responses, success, success_schema


class TokenUsageView(APIView):
    @extend_schema(
        operation_id="user_token_usage",
        responses={200: success_schema(UsageSummarySerializer), **error_responses(401)},
    )
    def get(self, request):
        return success(UsageSummarySerializer(usage_summary(user=request.user)).data)


class TokenStatsView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="chat_token_stats",
        responses={200: success_schema(TokenCacheStatsSerializer), **error_responses(401, 403)},
    )
    def get(self, request):
        return success(TokenCacheStatsSerializer(token_cache_stats()).data)
