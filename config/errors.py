"""Every error code of the API, once: its HTTP status, where it is answered, and when.

After Zulip's `ErrorCode`: a code is spelled here and nowhere else. From this registry

- a `ServiceError` subclass takes its status (config.api checks, when the class is defined,
  that its code is registered and that a status it states agrees);
- config/api.py builds the OpenAPI description and examples of every error status;
- docs/api.md's table "Status and error codes" is `markdown_table()`, and
  tests/test_error_codes.py fails when the two differ (print it: `python -m config.errors`).

Plain Python (no Django), so the table can be printed without settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "validation_error"
    PARSE_ERROR = "parse_error"
    BAD_REQUEST = "bad_request"
    INVALID_CHAT_ID = "invalid_chat_id"
    INVALID_MESSAGE_ID = "invalid_message_id"
    USERNAME_TAKEN = "username_taken"
    CONTENT_BLOCKED = "content_blocked"
    NOT_AUTHENTICATED = "not_authenticated"
    TOKEN_NOT_VALID = "token_not_valid"  # noqa: S105 - an error code, not a secret
    AUTHENTICATION_FAILED = "authentication_failed"
    FORBIDDEN = "forbidden"
    TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"  # noqa: S105 - an error code
    CHAT_NOT_FOUND = "chat_not_found"
    API_KEY_NOT_FOUND = "api_key_not_found"
    MESSAGE_NOT_FOUND = "message_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    REQUEST_TIMEOUT = "request_timeout"
    CHAT_LIMIT_REACHED = "chat_limit_reached"
    API_KEY_LIMIT_REACHED = "api_key_limit_reached"
    REPLY_IN_PROGRESS = "reply_in_progress"
    REPLY_FINISHED = "reply_finished"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    THROTTLED = "throttled"
    LOGIN_LOCKED = "login_locked"
    INTERNAL_ERROR = "internal_error"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_INCOMPLETE = "upstream_incomplete"
    LLM_UNAVAILABLE = "llm_unavailable"
    UPSTREAM_RATE_LIMITED = "upstream_rate_limited"
    DATABASE_UNAVAILABLE = "database_unavailable"
    UNHEALTHY = "unhealthy"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    # Only in a reply's `done` event: the stream had begun.
    TOKEN_LIMIT_REACHED = "token_limit_reached"  # noqa: S105 - an error code
    RUN_INTERRUPTED = "run_interrupted"
    # Only under /v1 (OpenAI's error shape; docs/api.md "The OpenAI-compatible API").
    INVALID_VALUE = "invalid_value"
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    MODEL_NOT_FOUND = "model_not_found"
    INVALID_API_KEY = "invalid_api_key"
    # Only in the admin (a form error), never an API answer.
    LIMIT_BELOW_USED = "limit_below_used"


# Where a code is answered: an HTTP answer in the envelope (and under /v1 in OpenAI's shape),
# only under /v1, only as the `error` of a done event, only in the admin.
HTTP, V1, STREAM, ADMIN = "http", "v1", "stream", "admin"


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    when: str
    where: str = HTTP


C = ErrorCode
ERRORS: dict[ErrorCode, ErrorSpec] = {
    C.VALIDATION_ERROR: ErrorSpec(
        400,
        "a field is missing, the wrong type, empty after trimming, too long (details per "
        "field); an export date that is not `YYYY-MM-DD`, `from` after `to`, or an unknown "
        "export parameter",
    ),
    C.PARSE_ERROR: ErrorSpec(400, "malformed JSON"),
    C.BAD_REQUEST: ErrorSpec(400, "a request Django itself refuses (its 400 handler)"),
    C.INVALID_CHAT_ID: ErrorSpec(400, "the chat's id is not a UUID"),
    C.INVALID_MESSAGE_ID: ErrorSpec(400, "the message's id is not a UUID"),
    C.USERNAME_TAKEN: ErrorSpec(400, "registration with an existing username, in any letter case"),
    C.CONTENT_BLOCKED: ErrorSpec(
        400, "the model's safety filters blocked the prompt (before any output)"
    ),
    C.NOT_AUTHENTICATED: ErrorSpec(401, "no token"),
    C.TOKEN_NOT_VALID: ErrorSpec(401, "a bad or expired token"),
    C.AUTHENTICATION_FAILED: ErrorSpec(
        401, "wrong password; the token's user is gone or deactivated"
    ),
    C.FORBIDDEN: ErrorSpec(403, "someone else's chat; a non-staff caller of token-stats"),
    C.TOKEN_LIMIT_EXCEEDED: ErrorSpec(
        403,
        "the month's budget cannot cover the message; the message says what it needs and "
        'what remains ("This message needs about 416 tokens; 300 remain in your monthly '
        'budget."), `details` has `limit`, `used`, `reserved`, `remaining`, `needed`',
    ),
    C.CHAT_NOT_FOUND: ErrorSpec(404, "absent or soft-deleted chat"),
    C.API_KEY_NOT_FOUND: ErrorSpec(404, "absent, revoked or someone else's API key"),
    C.MESSAGE_NOT_FOUND: ErrorSpec(
        404,
        "resume or stop of a reply that is not a model reply in one of the caller's active "
        "chats (another user's reply is 404, not 403)",
    ),
    C.NOT_FOUND: ErrorSpec(404, "no such path"),
    C.METHOD_NOT_ALLOWED: ErrorSpec(405, "the path does not take this method"),
    C.NOT_ACCEPTABLE: ErrorSpec(
        406, "not answered in practice: an `Accept` no renderer can meet is disregarded (above)"
    ),
    C.REQUEST_TIMEOUT: ErrorSpec(
        408,
        "the request body did not arrive whole within `REQUEST_BODY_TIMEOUT_S`; the "
        "connection is closed",
    ),
    C.CHAT_LIMIT_REACHED: ErrorSpec(409, "`MAX_CHATS_PER_USER` active chats already"),
    C.API_KEY_LIMIT_REACHED: ErrorSpec(409, "20 active API keys already"),
    C.REPLY_IN_PROGRESS: ErrorSpec(
        409,
        "a message to a chat whose previous reply is still generating (one at a time per "
        "chat; wait for its `done` or stop it)",
    ),
    C.REPLY_FINISHED: ErrorSpec(
        409, "a stop of a reply that has already ended, an earlier stop included"
    ),
    C.PAYLOAD_TOO_LARGE: ErrorSpec(413, "body over `DATA_UPLOAD_MAX_MEMORY_SIZE`"),
    C.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(415, "a body that is not JSON"),
    C.RATE_LIMITED: ErrorSpec(429, "messages closer than `MESSAGE_RATE_LIMIT_MS` (`Retry-After`)"),
    C.THROTTLED: ErrorSpec(429, "login throttling (`Retry-After`)"),
    C.LOGIN_LOCKED: ErrorSpec(
        429, "login lock-out after repeated failures (`Retry-After` = the lock-out's length)"
    ),
    C.INTERNAL_ERROR: ErrorSpec(
        500, "an unexpected error (logged); in a `done` event, a reply that failed on our side"
    ),
    C.UPSTREAM_ERROR: ErrorSpec(502, "the model failed before any output"),
    C.UPSTREAM_INCOMPLETE: ErrorSpec(
        502,
        "the model's stream ended without a finish reason (it was cut) before any output",
    ),
    C.LLM_UNAVAILABLE: ErrorSpec(503, "no key configured"),
    C.UPSTREAM_RATE_LIMITED: ErrorSpec(503, "the model rate-limits us (`Retry-After`)"),
    C.DATABASE_UNAVAILABLE: ErrorSpec(
        503,
        "PostgreSQL or Redis (`CACHE_URL`) is unreachable, or the node is so overloaded that "
        "no pooled connection freed up within `DB_POOL_TIMEOUT` / `REDIS_POOL_TIMEOUT_S` "
        "(`Retry-After`)",
    ),
    C.UNHEALTHY: ErrorSpec(
        503, "`GET /health`: the database is unreachable (`details` has every part's state)"
    ),
    C.UPSTREAM_TIMEOUT: ErrorSpec(
        504, "the model was silent longer than `GEMINI_TIMEOUT_MS` before any output"
    ),
    C.TOKEN_LIMIT_REACHED: ErrorSpec(
        403, "the month's budget ran out while the reply streamed", where=STREAM
    ),
    C.RUN_INTERRUPTED: ErrorSpec(
        500, "the run's worker died; the sweep ended the reply", where=STREAM
    ),
    C.INVALID_VALUE: ErrorSpec(400, "a parameter with a wrong type or value", where=V1),
    C.UNSUPPORTED_PARAMETER: ErrorSpec(400, "a parameter this service refuses", where=V1),
    C.MODEL_NOT_FOUND: ErrorSpec(404, "another model id", where=V1),
    C.INVALID_API_KEY: ErrorSpec(
        401, "no key, unknown, revoked, or its user deactivated", where=V1
    ),
    C.LIMIT_BELOW_USED: ErrorSpec(
        400, "a monthly limit below what the user used this month", where=ADMIN
    ),
}
del C

# What an error status means, before its codes are listed (the OpenAPI descriptions).
STATUS_SUMMARIES = {
    400: "Invalid input",
    401: "Missing, invalid or expired token",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    408: "The request body did not arrive in time",
    409: "Conflict",
    413: "The request body is too large",
    415: "Unsupported media type",
    429: "Too many requests; see Retry-After",
    500: "An unexpected error",
    502: "The model service failed, or ended its reply unfinished, before any output",
    503: "The model or the database is unavailable; see Retry-After",
    504: "The model did not answer in time",
}


def http_codes(status: int | None = None) -> list[ErrorCode]:
    """The codes answered over HTTP in the envelope (of one status), in the registry's order."""
    return [
        code
        for code, spec in ERRORS.items()
        if spec.where == HTTP and (status is None or spec.status == status)
    ]


def status_description(status: int) -> str:
    """`Summary (codes: a, b).`: the OpenAPI description of an error status."""
    codes = ", ".join(http_codes(status))
    return f"{STATUS_SUMMARIES[status]} (codes: {codes})."


def markdown_table() -> str:
    """docs/api.md's "Status and error codes" table, by status."""
    rows = ["| status | code | when |", "|---|---|---|"]
    for code in sorted(http_codes(), key=lambda code: ERRORS[code].status):
        spec = ERRORS[code]
        rows.append(f"| {spec.status} | `{code}` | {spec.when} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
