"""Error to event, in one place: whatever ends a run, the `error` of its done event."""

from __future__ import annotations

from chat import exceptions as chat_exceptions
from chat.llm import errors as llm_errors
from config.api import ServiceError


def as_service_error(exc: BaseException) -> ServiceError:
    """Our errors as they are; anything else is an internal error (logged by the caller)."""
    if isinstance(exc, ServiceError):
        return exc
    return chat_exceptions.StreamFailed()


def _known() -> dict[str, str]:
    known = {}
    for module in (llm_errors, chat_exceptions):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, ServiceError):
                known.setdefault(value.code, value.default_message)
    return known


_MESSAGES = _known()


def message_for_code(code: str) -> str:
    """The message a done event carries for `code` (when rebuilt from a saved reply)."""
    return _MESSAGES.get(code, "The reply failed.")
