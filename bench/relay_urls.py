import json

from django.http import StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from chat import sse
from chat.llm import get_provider


@csrf_exempt
def relay(request, chat_id):
    message = json.loads(request.body)["message"]
    stream = get_provider().stream_reply(
        system_prompt="", history=[], message=message, max_output_tokens=2048
    )

    def body():
        n = 0
        for n, delta in enumerate(stream, start=1):
            yield sse.event({"text": delta}, n)
        yield sse.event({"done": True}, n + 1)

    return StreamingHttpResponse(body(), content_type=sse.CONTENT_TYPE, headers=sse.HEADERS)


def health(request):
    return StreamingHttpResponse([b"ok"])


urlpatterns = [
    path("api/chat/<str:chat_id>/message", relay),
    path("health", health),
]
