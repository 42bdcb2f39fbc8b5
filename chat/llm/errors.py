"""Failures of the model provider, each with the stable code the API and the SSE stream use,
and the one mapping of whatever a provider call raises to them (`as_llm_error`)."""

import logging

import httpx2
from google.genai import errors as genai_errors
from rest_framework import status as http

from config.api import ServiceError

logger = logging.getLogger(__name__)


class LLMError(ServiceError):
    """Base of every provider failure. `status` is used when it happens before the first byte."""

    code = "upstream_error"
    status = http.HTTP_502_BAD_GATEWAY
    default_message = "The model service failed."


class UpstreamError(LLMError):
    code = "upstream_error"
    status = http.HTTP_502_BAD_GATEWAY
    default_message = "The model service returned an error."


class UpstreamIncomplete(LLMError):
    """The stream ended without a finish reason: Gemini always sends one, so it was cut."""

    code = "upstream_incomplete"
    status = http.HTTP_502_BAD_GATEWAY
    default_message = "The model service ended the reply before it was finished."


class UpstreamRateLimited(LLMError):
    code = "upstream_rate_limited"
    status = http.HTTP_503_SERVICE_UNAVAILABLE
    default_message = "The model service is rate limiting us; try again shortly."

    def __init__(self, message=None, *, retry_after: int = 5, details=None):
        super().__init__(message, details=details, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class UpstreamTimeout(LLMError):
    code = "upstream_timeout"
    status = http.HTTP_504_GATEWAY_TIMEOUT
    default_message = "The model service did not answer in time."


class ContentBlocked(LLMError):
    code = "content_blocked"
    status = http.HTTP_400_BAD_REQUEST
    default_message = "The content was blocked by the model's safety filters."


class LLMUnavailable(LLMError):
    code = "llm_unavailable"
    status = http.HTTP_503_SERVICE_UNAVAILABLE
    default_message = "The model is not available."


def as_llm_error(exc: BaseException, *, log_unexpected: bool = True) -> LLMError:
    """Whatever a provider call raised, as one of our codes: the one place provider failures
    are mapped (the Gemini SDK's stream and count, the rest stream, and the reply's reader
    for a provider that let anything else through). Our own errors as they are; the SDK's
    APIError by its status; network failures; malformed JSON; anything else an
    UpstreamError, logged unless `log_unexpected` is False (a call being closed)."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, genai_errors.APIError):
        if exc.code == 429:
            retry_after = _retry_after(exc)
            return UpstreamRateLimited(retry_after=retry_after, details={"status": exc.status})
        if exc.code in (408, 504):
            return UpstreamTimeout(details={"status": exc.status})
        return UpstreamError(details={"upstream_status": exc.code, "status": exc.status})
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout()
    if isinstance(exc, httpx2.HTTPError | httpx2.StreamError):
        return UpstreamError("The connection to the model service failed.")
    if isinstance(exc, ValueError):  # malformed JSON in the stream
        return UpstreamError("The model service sent a malformed response.")
    if log_unexpected:
        logger.error("Unexpected error from the model provider", exc_info=exc)
    return UpstreamError()


def _retry_after(exc: genai_errors.APIError) -> int:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return max(1, int(float(headers.get("retry-after", 5))))
    except (TypeError, ValueError):
        return 5
