"""GET /health: liveness, the database, and what the apps register.

config knows no app: an app adds its part of the answer in its AppConfig.ready() with
register_health_check (the chat app: its model provider, as "model"). Only the database
decides the status: a part an app reports (a missing model key) is shown, not fatal.
"""

from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.api import error_response
from config.errors import ErrorCode

_CHECKS: dict[str, Callable[[], Any]] = {}


def register_health_check(name: str, check: Callable[[], Any]) -> None:
    """Report `check()` under `name` in every /health answer (registering again replaces)."""
    _CHECKS[name] = check


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
    data = {"database": database_state(), **{name: check() for name, check in _CHECKS.items()}}
    if data["database"] != "ok":
        return error_response(
            ErrorCode.UNHEALTHY, "The database is unreachable.", 503, details=data
        )
    # A missing key is reported, not fatal: the server answers 503 on use instead.
    return JsonResponse({"status": "success", "data": data})
