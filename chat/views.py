from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.views import APIView

from accounts.authentication import StatelessJWTAuthentication
from chat import selectors, services, sse
from chat.reply.relay import parse_after, relay_reply, relay_run
from chat.reply.run import start_reply
from chat.reply.stop import stop_reply
from chat.serializers import (
    ChatDeletedSerializer,
    ChatDetailSerializer,
    ChatInputSerializer,
    ChatSerializer,
    MessageInputSerializer,
    StoppedReplySerializer,
)
from config.api import (
    EnvelopePagination,
    error_responses,
    success,
    success_schema,
)

# Routed as <str:chat_id> so a malformed id reaches access_chat and gets 400 invalid_chat_id.
CHAT_ID = OpenApiParameter("chat_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
MESSAGE_ID = OpenApiParameter(
    "message_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The reply's id."
)
EVENTS = (
    "Server-Sent Events: `id: n` + `data: {json}` per event. Text events "
    '`{"text": ...}` (ids 1..n); the last event is `{"done": true, "tokens_used", '
    '"message_id", "user_message_id", "finish_reason", "usage", "budget", "cost"}` (id n + 1), '
    'with an `"error": {"code", "message"}` when the reply failed mid-stream. '
    "`: keep-alive` comments while the model is silent."
)


class ChatListView(APIView):
    @extend_schema(
        operation_id="chat_list",
        responses={200: success_schema(ChatSerializer, paginated=True), **error_responses(401)},
    )
    def get(self, request):
        paginator = EnvelopePagination()
        page = paginator.paginate_queryset(selectors.chats_for(user=request.user), request, self)
        return paginator.get_paginated_response(ChatSerializer(page, many=True).data)

    @extend_schema(
        operation_id="chat_create",
        request=ChatInputSerializer,
        responses={201: success_schema(ChatSerializer), **error_responses(400, 401, 409)},
    )
    def post(self, request):
        payload = ChatInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        chat = services.create_chat(user=request.user, title=payload.validated_data["title"])
        return success(ChatSerializer(chat).data, status=status.HTTP_201_CREATED)


class ChatDetailView(APIView):
    @extend_schema(
        operation_id="chat_detail",
        parameters=[CHAT_ID],
        responses={
            200: success_schema(ChatDetailSerializer),
            **error_responses(400, 401, 403, 404),
        },
    )
    def get(self, request, chat_id: str):
        detail = selectors.chat_detail(user=request.user, chat_id=chat_id)
        return success(ChatDetailSerializer(detail).data)

    @extend_schema(
        operation_id="chat_delete",
        parameters=[CHAT_ID],
        responses={
            200: success_schema(ChatDeletedSerializer),
            **error_responses(400, 401, 403, 404),
        },
    )
    def delete(self, request, chat_id: str):
        chat = selectors.access_chat(user=request.user, chat_id=chat_id)
        chat = services.soft_delete_chat(chat=chat)
        return success(
            {"chat_id": chat.pk, "deleted_at": chat.deleted_at},
            message="Chat deleted successfully",
        )


class MessageView(APIView):
    # The access token alone (no user row query); the set-up checks the user is active.
    authentication_classes = [StatelessJWTAuthentication]

    @extend_schema(
        operation_id="chat_message_send",
        parameters=[CHAT_ID],
        request=MessageInputSerializer,
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response=OpenApiTypes.STR,
                description=EVENTS + " The reply's id is in the `X-Message-Id` header.",
            ),
            **error_responses(400, 401, 403, 404, 409, 429, 502, 503, 504),
        },
    )
    def post(self, request, chat_id: str):
        payload = MessageInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        run = start_reply(
            user=request.user, chat_id=chat_id, text=payload.validated_data["message"]
        )
        return StreamingHttpResponse(
            relay_run(run),
            content_type=sse.CONTENT_TYPE,
            headers={**sse.HEADERS, "X-Message-Id": str(run.reply_id)},
        )


class ReplyStreamView(APIView):
    # As the message endpoint: the token alone; access_reply checks the user is active.
    authentication_classes = [StatelessJWTAuthentication]

    @extend_schema(
        operation_id="chat_reply_stream",
        parameters=[
            CHAT_ID,
            MESSAGE_ID,
            OpenApiParameter(
                "after",
                OpenApiTypes.INT,
                OpenApiParameter.QUERY,
                required=False,
                description="Resume after this event id (the `Last-Event-ID` header wins).",
            ),
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=False,
                description="Resume after this event id (what EventSource sends).",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response=OpenApiTypes.STR,
                description=EVENTS + " Replays the events after the given id, then follows "
                "the reply live until its done event. For a reply that has ended: the rest "
                "of its text and its done at once.",
            ),
            **error_responses(400, 401, 404),
        },
    )
    def get(self, request, chat_id: str, message_id: str):
        after = parse_after(
            request.headers.get("Last-Event-ID") or request.query_params.get("after")
        )
        body = relay_reply(user=request.user, chat_id=chat_id, message_id=message_id, after=after)
        return StreamingHttpResponse(body, content_type=sse.CONTENT_TYPE, headers=sse.HEADERS)


class ReplyStopView(APIView):
    authentication_classes = [StatelessJWTAuthentication]  # access_reply checks is_active

    @extend_schema(
        operation_id="chat_reply_stop",
        parameters=[CHAT_ID, MESSAGE_ID],
        request=None,
        responses={
            200: success_schema(StoppedReplySerializer),
            **error_responses(400, 401, 404, 409),
        },
    )
    def post(self, request, chat_id: str, message_id: str):
        reply = stop_reply(user=request.user, chat_id=chat_id, message_id=message_id)
        return success(StoppedReplySerializer(reply).data, message="Reply stopped")
