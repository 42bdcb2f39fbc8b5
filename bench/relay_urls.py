"""The benchmark's baseline: a bare Django view relaying the upstream the service streams from,
with no auth, no database, no billing, and no SDK.

- LLM_PROVIDER=gemini: the Gemini REST stream (GEMINI_BASE_URL, e.g. bench/upstream.py) read
  with a raw HTTP client (urllib3, one pool per process, connections kept alive): each `data:`
  line is parsed with json.loads and its text sent on as our SSE event.
- otherwise: the offline model (chat.llm.local) through the provider interface, the second
  line of the benchmark.
"""

import json

import urllib3
from django.conf import settings
from django.http import StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from chat import sse
from chat.llm import get_provider

# Under gevent a worker holds up to worker_connections streams: the pool keeps as many.
_pool = urllib3.PoolManager(maxsize=1000, block=False, retries=False)


def _gemini_deltas(message: str):
    url = (
        f"{settings.GEMINI_BASE_URL.rstrip('/')}/{settings.GEMINI_API_VERSION}/models/"
        f"{settings.GEMINI_MODEL}:streamGenerateContent?alt=sse"
    )
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": message}]}]})
    response = _pool.request(
        "POST",
        url,
        body=body.encode(),
        headers={"Content-Type": "application/json", "x-goog-api-key": settings.GEMINI_API_KEY},
        preload_content=False,
        timeout=settings.GEMINI_TIMEOUT_MS / 1000,
    )
    try:
        for line in response:
            if not line.startswith(b"data: "):
                continue
            chunk = json.loads(line[6:])
            for candidate in chunk.get("candidates", [])[:1]:
                for part in candidate.get("content", {}).get("parts", []):
                    if part.get("text") and not part.get("thought"):
                        yield part["text"]
    finally:
        response.release_conn()


def _local_deltas(message: str):
    return get_provider().stream_reply(
        system_prompt="", history=[], message=message, max_output_tokens=2048
    )


@csrf_exempt
def relay(request, chat_id):
    message = json.loads(request.body)["message"]
    if settings.LLM_PROVIDER == "gemini":
        deltas = _gemini_deltas(message)
        first = next(deltas, None)  # like the service: the first chunk before the status
        stream = deltas if first is None else _prepend(first, deltas)
    else:
        stream = _local_deltas(message)

    def body():
        n = 0
        for n, delta in enumerate(stream, start=1):
            yield sse.event({"text": delta}, n)
        yield sse.event({"done": True}, n + 1)

    return StreamingHttpResponse(body(), content_type=sse.CONTENT_TYPE, headers=sse.HEADERS)


def _prepend(first, rest):
    yield first
    yield from rest


def health(request):
    return StreamingHttpResponse([b"ok"])


urlpatterns = [
    path("api/chat/<str:chat_id>/message", relay),
    path("health", health),
]
