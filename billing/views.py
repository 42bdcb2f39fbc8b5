from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import IsAdminUser
from rest_framework.views import APIView

from billing.export import csv_response
from billing.selectors import EXPORT_COLUMNS, ledger_export_rows, usage_summary
from billing.serializers import (
    ExportPeriodSerializer,
    TokenCacheStatsSerializer,
    UsageSummarySerializer,
)
from billing.tokens import token_cache_stats
from config.api import error_responses, success, success_schema


class TokenUsageView(APIView):
    @extend_schema(
        operation_id="user_token_usage",
        responses={200: success_schema(UsageSummarySerializer), **error_responses(401)},
    )
    def get(self, request):
        return success(UsageSummarySerializer(usage_summary(user=request.user)).data)


class TokenUsageExportView(APIView):
    @extend_schema(
        operation_id="user_token_usage_export",
        parameters=[
            OpenApiParameter(
                name,
                OpenApiTypes.DATE,
                OpenApiParameter.QUERY,
                description=f"YYYY-MM-DD (UTC), included; default: {default}.",
            )
            for name, default in (("from", "the month's first day"), ("to", "today"))
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The caller's ledger entries, oldest first; columns: "
                + ", ".join(EXPORT_COLUMNS),
            ),
            **error_responses(400, 401),
        },
    )
    def get(self, request):
        # A plain dict: from a QueryDict DRF would take `?to=` (empty) as "not given".
        period = ExportPeriodSerializer(data=request.query_params.dict())
        period.is_valid(raise_exception=True)
        first, last = period.validated_data["from"], period.validated_data["to"]
        rows = ledger_export_rows(first=first, last=last, user=request.user)
        return csv_response(rows, first=first, last=last, who=request.user.get_username())


class TokenStatsView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="chat_token_stats",
        responses={200: success_schema(TokenCacheStatsSerializer), **error_responses(401, 403)},
    )
    def get(self, request):
        return success(TokenCacheStatsSerializer(token_cache_stats()).data)
