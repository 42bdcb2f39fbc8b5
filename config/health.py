"""GET /health: liveness, the database and the model provider."""

from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from chat.llm import provider_state
from config.api import error_response


def database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return "unavailable"
    return "ok"


@never_cache
@require_GET
def health(request):
    data = {"database": database_state(), "model": provider_state()}
    if data["database"] != "ok":
        return error_response("unhealthy", "The database is unreachable.", 503, details=data)
    # A missing key is reported, not fatal: the server answers 503 on use instead.
    return JsonResponse({"status": "success", "data": data})
