from rest_framework import status as http

from config.api import ServiceError


class InvalidChatId(ServiceError):
    code = "invalid_chat_id"
    status = http.HTTP_400_BAD_REQUEST
    default_message = "The chat id is not a valid UUID."


class ChatNotFound(ServiceError):
    code = "chat_not_found"
    status = http.HTTP_404_NOT_FOUND
    default_message = "Chat not found."


class ChatForbidden(ServiceError):
    code = "forbidden"
    status = http.HTTP_403_FORBIDDEN
    default_message = "This chat belongs to someone else."


class ChatLimitReached(ServiceError):
    code = "chat_limit_reached"
    status = http.HTTP_409_CONFLICT
    default_message = "You have reached the maximum number of active chats."


class RateLimited(ServiceError):
    code = "rate_limited"
    status = http.HTTP_429_TOO_MANY_REQUESTS
    default_message = "You are sending messages too quickly."

    def __init__(self, message=None, *, retry_after: int = 1):
        retry_after = max(1, retry_after)
        super().__init__(
            message,
            details={"retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class TokenLimitReached(ServiceError):
    """The reply was stopped because the monthly budget ran out while it streamed."""

    code = "token_limit_reached"
    status = http.HTTP_403_FORBIDDEN
    default_message = "The monthly token budget ran out while the reply was streaming."


class StreamFailed(ServiceError):
    code = "internal_error"
    status = http.HTTP_500_INTERNAL_SERVER_ERROR
    default_message = "An unexpected error occurred while streaming the reply."


class InvalidMessageId(ServiceError):
    code = "invalid_message_id"
    status = http.HTTP_400_BAD_REQUEST
    default_message = "The message id is not a valid UUID."


class MessageNotFound(ServiceError):
    code = "message_not_found"
    status = http.HTTP_404_NOT_FOUND
    default_message = "Message not found."


class ReplyInProgress(ServiceError):
    code = "reply_in_progress"
    status = http.HTTP_409_CONFLICT
    default_message = "A reply is still being generated in this chat; wait for it or stop it."


class ReplyFinished(ServiceError):
    code = "reply_finished"
    status = http.HTTP_409_CONFLICT
    default_message = "This reply has already ended."


class RunInterrupted(ServiceError):
    """The run generating a reply died with its worker; the sweep ended it."""

    code = "run_interrupted"
    status = http.HTTP_500_INTERNAL_SERVER_ERROR
    default_message = "The reply was interrupted; the text generated so far was kept."


# --- the OpenAI-compatible /v1 API ------------------------------------------------------


class InvalidParameter(ServiceError):
    """A /v1 request parameter with a wrong type or value; `param` names it."""

    code = "invalid_value"
    status = http.HTTP_400_BAD_REQUEST
    default_message = "A parameter has an invalid value."

    def __init__(self, message=None, *, param: str | None = None):
        super().__init__(message, details={"param": param})
        self.param = param


class UnsupportedParameter(InvalidParameter):
    """A parameter of OpenAI's API this service does not implement (tools, n > 1, images...):
    refused by name rather than silently ignored."""

    code = "unsupported_parameter"
    default_message = "This parameter is not supported."


class ModelNotFound(ServiceError):
    code = "model_not_found"
    status = http.HTTP_404_NOT_FOUND
    default_message = "The model does not exist."

    def __init__(self, model: str, *, available: str):
        super().__init__(
            f"The model '{model}' does not exist; this service offers '{available}'.",
            details={"param": "model"},
        )
