"""Failures of the model provider, each with the stable code the API and the SSE stream use."""

from rest_framework import status as http

from config.api import ServiceError


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
