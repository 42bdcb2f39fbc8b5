from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.views import APIView

from chat import sse
from chat.serializers import MessageInputSerializer
from chat.streaming import start_reply


class MessageView(APIView):
    @extend_schema(
        operation_id="chat_message_send",
        request=MessageInputSerializer,
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                description=(
                    "Server-Sent Events: `id: n` + `data: {json}` per event. Text events "
                    '`{"text": ...}`; the last event is `{"done": true, "tokens_used", '
                    '"message_id", "user_message_id", "finish_reason", "usage", "budget"}`, '
                    'with an `"error": {"code", "message"}` when the reply failed mid-stream. '
                    "`: keep-alive` comments while the model is silent."
                )
            ),
        },
    )
    def post(self, request, chat_id: str):
        payload = MessageInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        body = start_reply(
            user=request.user, chat_id=chat_id, text=payload.validated_data["message"]
        )
        return StreamingHttpResponse(body, content_type=sse.CONTENT_TYPE, headers=sse.HEADERS)
