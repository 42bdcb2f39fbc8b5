"""The /v1 endpoints: authenticated by API key only, errors in OpenAI's shape (the one
exception handler reshapes them under /v1), bodies in OpenAI's objects, no envelope."""

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiKeyAuthentication
from chat import completions, sse
from chat.openai_api import schema
from chat.openai_api.request import parse_completion_request
from config.api import openai_error_responses

TAGS = ["openai-compatible"]


class OpenAIView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]


class ModelListView(OpenAIView):
    @extend_schema(
        operation_id="v1_models_list",
        tags=TAGS,
        responses={200: schema.ModelListSchema, **openai_error_responses(401)},
    )
    def get(self, request):
        return Response({"object": "list", "data": completions.list_models()})


class ModelDetailView(OpenAIView):
    @extend_schema(
        operation_id="v1_models_retrieve",
        tags=TAGS,
        parameters=[OpenApiParameter("model_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={200: schema.ModelSchema, **openai_error_responses(401, 404)},
    )
    def get(self, request, model_id: str):
        return Response(completions.get_model(model_id))


class ChatCompletionView(OpenAIView):
    @extend_schema(
        operation_id="v1_chat_completions_create",
        tags=TAGS,
        request=schema.CompletionRequestSchema,
        responses={
            (200, "application/json"): OpenApiResponse(
                schema.CompletionSchema,
                description="With `stream` false or absent: one chat.completion. "
                + schema.STREAM_DESCRIPTION,
            ),
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description=schema.STREAM_DESCRIPTION
            ),
            **openai_error_responses(400, 401, 404, 413, 429, 502, 503, 504),
        },
    )
    def post(self, request):
        payload = parse_completion_request(request.data)
        caller = {"user": request.user, "api_key_id": request.auth.pk, "request": payload}
        if payload.stream:
            body = completions.stream_completion(**caller)
            return StreamingHttpResponse(body, content_type=sse.CONTENT_TYPE, headers=sse.HEADERS)
        return Response(completions.create_completion(**caller))
