from config.api import ServiceError
from config.errors import ErrorCode


class InvalidChatId(ServiceError):
    code = ErrorCode.INVALID_CHAT_ID
    default_message = "The chat id is not a valid UUID."


class ChatNotFound(ServiceError):
    code = ErrorCode.CHAT_NOT_FOUND
    default_message = "Chat not found."


class ChatForbidden(ServiceError):
    code = ErrorCode.FORBIDDEN
    default_message = "This chat belongs to someone else."


class ChatLimitReached(ServiceError):
    code = ErrorCode.CHAT_LIMIT_REACHED
    default_message = "You have reached the maximum number of active chats."


class RateLimited(ServiceError):
    code = ErrorCode.RATE_LIMITED
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

    code = ErrorCode.TOKEN_LIMIT_REACHED
    default_message = "The monthly token budget ran out while the reply was streaming."


class StreamFailed(ServiceError):
    code = ErrorCode.INTERNAL_ERROR
    default_message = "An unexpected error occurred while streaming the reply."


class InvalidMessageId(ServiceError):
    code = ErrorCode.INVALID_MESSAGE_ID
    default_message = "The message id is not a valid UUID."


class MessageNotFound(ServiceError):
    code = ErrorCode.MESSAGE_NOT_FOUND
    default_message = "Message not found."


class ReplyInProgress(ServiceError):
    code = ErrorCode.REPLY_IN_PROGRESS
    default_message = "A reply is still being generated in this chat; wait for it or stop it."


class ReplyFinished(ServiceError):
    code = ErrorCode.REPLY_FINISHED
    default_message = "This reply has already ended."


class RunInterrupted(ServiceError):
    """The run generating a reply died with its worker; the sweep ended it."""

    code = ErrorCode.RUN_INTERRUPTED
    default_message = "The reply was interrupted; the text generated so far was kept."


# --- the OpenAI-compatible /v1 API ------------------------------------------------------


class InvalidParameter(ServiceError):
    """A /v1 request parameter with a wrong type or value; `param` names it."""

    code = ErrorCode.INVALID_VALUE
    default_message = "A parameter has an invalid value."

    def __init__(self, message=None, *, param: str | None = None):
        super().__init__(message, details={"param": param})
        self.param = param


class UnsupportedParameter(InvalidParameter):
    """A parameter of OpenAI's API this service does not implement (tools, n > 1, images...):
    refused by name rather than silently ignored."""

    code = ErrorCode.UNSUPPORTED_PARAMETER
    default_message = "This parameter is not supported."


class ModelNotFound(ServiceError):
    code = ErrorCode.MODEL_NOT_FOUND
    default_message = "The model does not exist."

    def __init__(self, model: str, *, available: str):
        super().__init__(
            f"The model '{model}' does not exist; this service offers '{available}'.",
            details={"param": "model"},
        )
