"""The API envelope, shared by every app.

Success: {"status": "success", "message": str?, "data": ...}
Error:   {"status": "error", "error": {"code": str, "message": str, "details": ...}}

Services raise `ServiceError` subclasses that carry a stable code and status (both from
the registry of codes, config/errors.py); the DRF exception handler and the Django error
handlers below turn every failure under /api/ into the error envelope, so a view never
builds an error body itself.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import OperationalError
from django.http import Http404, JsonResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers
from rest_framework import status as http
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import set_rollback

from config.errors import ERRORS, ErrorCode, http_codes, status_description

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
# The OpenAI-compatible API: the same errors, in OpenAI's shape (openai_error_body).
OPENAI_PREFIX = "/v1/"


class ServiceError(Exception):
    """A failure with a stable machine-readable code, raised by services.

    A subclass names its `code` from config.errors and takes its status from there; one
    that states a status must agree with the registry (checked when the class is defined).
    """

    code = "error"
    status = http.HTTP_400_BAD_REQUEST
    default_message = "The request could not be completed."

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = ERRORS.get(cls.code)
        if spec is None:
            raise TypeError(f"{cls.__name__}: code {cls.code!r} is not in config.errors.ERRORS")
        if "status" not in cls.__dict__:
            cls.status = spec.status
        elif cls.status != spec.status:
            raise TypeError(
                f"{cls.__name__}: status {cls.status} for {cls.code!r}, whose status in "
                f"config.errors.ERRORS is {spec.status}"
            )

    def __init__(self, message: str | None = None, *, details: Any = None, headers=None):
        self.message = message or self.default_message
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationFailed(ServiceError):
    code = ErrorCode.VALIDATION_ERROR
    default_message = "The request is not valid."


class PayloadTooLarge(ServiceError):
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE, wherever it is found too large (the WSGI body
    reader, the API middleware, DRF's parsers): one code, one message."""

    code = ErrorCode.PAYLOAD_TOO_LARGE

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is None:
            max_bytes = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        super().__init__(f"The body is larger than {max_bytes} bytes.")


class StrictCharField(serializers.CharField):
    """A JSON string: numbers, lists and objects are refused rather than coerced to text."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


def success(data: Any = None, *, message: str | None = None, status: int = 200, headers=None):
    body: dict[str, Any] = {"status": "success"}
    if message is not None:
        body["message"] = message
    body["data"] = data
    return Response(body, status=status, headers=headers)


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"status": "error", "error": {"code": code, "message": message, "details": details}}


def error_response(code: str, message: str, status: int, details: Any = None, headers=None):
    response = JsonResponse(error_body(code, message, details), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# --- the OpenAI-compatible /v1 API: errors in OpenAI's shape ----------------------------
#
# {"error": {"message", "type", "code", "param"}}: OpenAI's clients (its SDKs, LibreChat,
# Open WebUI) read this shape and decide on retries by the status. Our codes are kept,
# except where OpenAI's clients know a code of their own.

# our code -> (status under /v1 or None to keep it, OpenAI's type, OpenAI's code)
_OPENAI_ERRORS: dict[str, tuple[int | None, str, str]] = {
    ErrorCode.NOT_AUTHENTICATED: (None, "invalid_request_error", "invalid_api_key"),
    ErrorCode.AUTHENTICATION_FAILED: (None, "invalid_request_error", "invalid_api_key"),
    ErrorCode.INVALID_API_KEY: (None, "invalid_request_error", "invalid_api_key"),
    ErrorCode.RATE_LIMITED: (None, "requests", "rate_limit_exceeded"),
    # The month's budget is spent: what OpenAI answers when a quota is used up. The
    # openai SDKs retry a 429; `x-should-retry: false` (which they obey) stops that.
    ErrorCode.TOKEN_LIMIT_EXCEEDED: (429, "insufficient_quota", "insufficient_quota"),
}


def openai_error(code: str, message: str, status: int, param: str | None = None):
    """(status, body, extra headers) of an error under /v1, from our code and status."""
    override, kind, openai_code = _OPENAI_ERRORS.get(code, (None, "", code))
    status = override or status
    if not kind:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    headers = {"x-should-retry": "false"} if openai_code == "insufficient_quota" else {}
    body = {"error": {"message": message, "type": kind, "code": openai_code, "param": param}}
    return status, body, headers


def _openai_param(details: Any) -> str | None:
    if isinstance(details, dict):
        if isinstance(details.get("param"), str):
            return details["param"]
        fields = [key for key in details if key != "messages"]
        return str(fields[0]) if fields else None
    return None


def is_openai_request(request) -> bool:
    return request.path.startswith(OPENAI_PREFIX)


def _as_openai(response: Response) -> Response:
    """An envelope error response, reshaped for /v1 (same headers, e.g. Retry-After)."""
    error = response.data["error"]
    status, body, headers = openai_error(
        error["code"], error["message"], response.status_code, _openai_param(error["details"])
    )
    reshaped = Response(body, status=status)
    for name, value in [*response.items(), *headers.items()]:
        if name.lower() not in ("content-type", "content-length"):
            reshaped[name] = value
    return reshaped


# DRF's own exceptions, by class, to our codes.
_DRF_CODES: list[tuple[type[Exception], ErrorCode]] = [
    (drf_exceptions.ParseError, ErrorCode.PARSE_ERROR),
    (drf_exceptions.ValidationError, ErrorCode.VALIDATION_ERROR),
    (drf_exceptions.NotAuthenticated, ErrorCode.NOT_AUTHENTICATED),
    (drf_exceptions.AuthenticationFailed, ErrorCode.AUTHENTICATION_FAILED),
    (drf_exceptions.PermissionDenied, ErrorCode.FORBIDDEN),
    (drf_exceptions.NotFound, ErrorCode.NOT_FOUND),
    (drf_exceptions.MethodNotAllowed, ErrorCode.METHOD_NOT_ALLOWED),
    (drf_exceptions.NotAcceptable, ErrorCode.NOT_ACCEPTABLE),
    (drf_exceptions.UnsupportedMediaType, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (drf_exceptions.Throttled, ErrorCode.THROTTLED),
]


def _drf_code(exc: drf_exceptions.APIException) -> str:
    # simplejwt's InvalidToken is an AuthenticationFailed with code "token_not_valid".
    if getattr(exc, "default_code", None) == ErrorCode.TOKEN_NOT_VALID:
        return ErrorCode.TOKEN_NOT_VALID
    for cls, code in _DRF_CODES:
        if isinstance(exc, cls):
            return code
    return getattr(exc, "default_code", "error")


def _drf_message(exc: drf_exceptions.APIException) -> str:
    if isinstance(exc, drf_exceptions.ValidationError):
        return "The request is not valid."
    detail = exc.detail
    if isinstance(detail, dict) and "detail" in detail:
        return str(detail["detail"])
    if isinstance(detail, dict | list):
        return str(exc.default_detail)
    return str(detail)


def _drf_details(exc: drf_exceptions.APIException) -> Any:
    detail = exc.detail
    if isinstance(exc, drf_exceptions.ValidationError):
        return detail
    if isinstance(detail, dict):
        # simplejwt puts its reasons under "messages"; the rest repeats the message.
        return {"messages": detail["messages"]} if "messages" in detail else None
    return None


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception raised in an API view becomes the envelope
    (under /v1, OpenAI's error shape)."""
    response = _envelope_exception_handler(exc, context)
    request = context.get("request")
    if request is not None and is_openai_request(request):
        return _as_openai(response)
    return response


def _envelope_exception_handler(exc: Exception, context: dict) -> Response:
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    if isinstance(exc, ServiceError):
        set_rollback()
        return Response(
            {"status": "error", "error": exc.as_dict()}, status=exc.status, headers=exc.headers
        )
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    if isinstance(exc, drf_exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        set_rollback()
        return Response(
            error_body(_drf_code(exc), _drf_message(exc), _drf_details(exc)),
            status=exc.status_code,
            headers=headers,
        )

    view = context.get("view")
    view_name = type(view).__name__ if view else "API view"
    if isinstance(exc, OperationalError | RedisConnectionError | RedisTimeoutError):
        # PostgreSQL or Redis is unreachable, or every pooled connection stayed busy past
        # DB_POOL_TIMEOUT / REDIS_POOL_TIMEOUT_S (a burst larger than this node can take in):
        # retry, not a bug.
        logger.warning(
            "Database unavailable in %s: %s", view_name, type(exc.__cause__ or exc).__name__
        )
        set_rollback()
        return Response(
            error_body(
                ErrorCode.DATABASE_UNAVAILABLE,
                "The service is overloaded or its database is unreachable; retry shortly.",
            ),
            status=http.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    logger.exception("Unhandled error in %s", view_name)
    set_rollback()
    return Response(
        error_body(ErrorCode.INTERNAL_ERROR, "An unexpected error occurred."),
        status=http.HTTP_500_INTERNAL_SERVER_ERROR,
    )


class EnvelopePagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_paginated_response(self, data):
        return success(
            {
                "count": self.page.paginator.count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )


def is_api_request(request) -> bool:
    path = request.path
    return path.startswith((API_PREFIX, OPENAI_PREFIX)) or path == API_PREFIX.rstrip("/")


# Django's own error answers under /api/ and /v1/ (its handlers, or with DEBUG on its
# technical pages), as the envelope or, under /v1/, in OpenAI's shape.
_ERROR_CODES = {
    400: (ErrorCode.BAD_REQUEST, "Bad request."),
    403: (ErrorCode.FORBIDDEN, "Forbidden."),
    404: (ErrorCode.NOT_FOUND, "Not found."),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed."),
    500: (ErrorCode.INTERNAL_ERROR, "An unexpected error occurred."),
}


def _error_for(request, code: str, message: str, status: int):
    """An error answer outside DRF (Django's handlers, the middleware), shaped by path."""
    if is_openai_request(request):
        status, body, headers = openai_error(code, message, status)
        response = JsonResponse(body, status=status)
        for name, value in headers.items():
            response[name] = value
        return response
    return error_response(code, message, status)


def error_for_status(request, status: int) -> JsonResponse:
    code, message = _ERROR_CODES.get(status, ("error", "The request could not be completed."))
    return _error_for(request, code, message, status)


class ApiErrorMiddleware:
    """Keeps HTML out of /api/, in every mode (DEBUG true or false).

    Oversize bodies are answered 413 in the envelope: DRF reads the body from the stream
    without Django's size check, so the check is made here, once, for every API request
    that carries one. Any other error answer that is not JSON (an unknown /api/ path, and
    with DEBUG on Django's technical 404 and 500 pages, which bypass the handlers below)
    is replaced by the envelope with the same status.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if is_api_request(request) and request.method in ("POST", "PUT", "PATCH"):
            try:
                request.body  # noqa: B018 - reads and size-checks the body
            except RequestDataTooBig:
                too_large = PayloadTooLarge()
                return _error_for(request, too_large.code, too_large.message, too_large.status)
        response = self.get_response(request)
        if (
            is_api_request(request)
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return error_for_status(request, response.status_code)
        return response


def handler404(request, exception=None):
    if is_api_request(request):
        return error_for_status(request, http.HTTP_404_NOT_FOUND)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if is_api_request(request):
        return error_for_status(request, http.HTTP_500_INTERNAL_SERVER_ERROR)
    from django.views.defaults import server_error

    return server_error(request)


def handler400(request, exception=None):
    if is_api_request(request):
        return error_for_status(request, http.HTTP_400_BAD_REQUEST)
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler403(request, exception=None):
    if is_api_request(request):
        return error_for_status(request, http.HTTP_403_FORBIDDEN)
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


# --- OpenAPI: the envelope around every documented response ---------------------------


@functools.cache
def _error_envelope_serializer():
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    return inline_serializer(
        "ErrorEnvelope",
        {
            "status": serializers.ChoiceField(choices=["error"]),
            "error": inline_serializer(
                "Error",
                {
                    "code": serializers.CharField(),
                    "message": serializers.CharField(),
                    "details": serializers.JSONField(allow_null=True),
                },
            ),
        },
    )


def error_responses(*statuses: int) -> dict:
    """drf-spectacular responses for the given error statuses, each in the error envelope,
    described and exemplified code by code from the registry (config/errors.py)."""
    from drf_spectacular.utils import OpenApiExample, OpenApiResponse

    return {
        status: OpenApiResponse(
            _error_envelope_serializer(),
            description=status_description(status),
            examples=[
                OpenApiExample(
                    code,
                    value=error_body(code, ERRORS[code].when),
                    status_codes=[status],
                    response_only=True,
                )
                for code in http_codes(status)
            ],
        )
        for status in statuses
    }


@functools.cache
def success_schema(serializer_class, *, paginated: bool = False):
    """A component for `{"status": "success", "message"?, "data": <serializer>}`."""
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    name = serializer_class.__name__.removesuffix("Serializer")
    data = serializer_class()
    if paginated:
        data = inline_serializer(
            f"{name}Page",
            {
                "count": serializers.IntegerField(),
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": serializer_class(many=True),
            },
        )
        name = f"{name}Page"
    return inline_serializer(
        f"{name}Envelope",
        {
            "status": serializers.ChoiceField(choices=["success"]),
            "message": serializers.CharField(required=False),
            "data": data,
        },
    )


@functools.cache
def message_only_schema():
    """A component for `{"status": "success", "message": str, "data": null}` (e.g. logout)."""
    from drf_spectacular.utils import extend_schema_field, inline_serializer
    from rest_framework import serializers

    # (an `enum: [null]` would be taken apart by drf-spectacular's enum post-processing)
    @extend_schema_field(
        {"type": "object", "nullable": True, "maxProperties": 0, "description": "Always null."}
    )
    class AlwaysNull(serializers.Field):
        def to_representation(self, value):
            return None

    return inline_serializer(
        "MessageEnvelope",
        {
            "status": serializers.ChoiceField(choices=["success"]),
            "message": serializers.CharField(),
            "data": AlwaysNull(),
        },
    )


_OPENAI_STATUS_TEXT = {
    400: (
        "Invalid request: unsupported_parameter, invalid_value (`param` names the "
        "parameter), parse_error, content_blocked."
    ),
    401: "Missing, unknown or revoked API key (invalid_api_key).",
    404: "Unknown model (model_not_found).",
    413: "The request body is too large.",
    429: (
        "rate_limit_exceeded (see Retry-After), or insufficient_quota: the month's token "
        "budget is spent (x-should-retry: false)."
    ),
    502: (
        "The model service failed, or ended its reply unfinished, before any output "
        "(upstream_error, upstream_incomplete)."
    ),
    503: "The model is unavailable (llm_unavailable, upstream_rate_limited; see Retry-After).",
    504: "The model did not answer in time (upstream_timeout).",
}


@functools.cache
def _openai_error_serializer():
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    return inline_serializer(
        "OpenAIErrorBody",
        {
            "error": inline_serializer(
                "OpenAIError",
                {
                    "message": serializers.CharField(),
                    "type": serializers.CharField(),
                    "code": serializers.CharField(allow_null=True),
                    "param": serializers.CharField(allow_null=True),
                },
            )
        },
    )


def openai_error_responses(*statuses: int) -> dict:
    """drf-spectacular responses for /v1 error statuses, in OpenAI's error shape."""
    from drf_spectacular.utils import OpenApiResponse

    return {
        status: OpenApiResponse(_openai_error_serializer(), description=_OPENAI_STATUS_TEXT[status])
        for status in statuses
    }
