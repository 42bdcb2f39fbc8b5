from config.api import ServiceError
from config.errors import ErrorCode


class UsernameTaken(ServiceError):
    code = ErrorCode.USERNAME_TAKEN
    default_message = "That username is already taken."


class InvalidRefreshToken(ServiceError):
    code = ErrorCode.TOKEN_NOT_VALID
    default_message = "The refresh token is invalid, expired or already used."


class LoginLocked(ServiceError):
    code = ErrorCode.LOGIN_LOCKED
    default_message = (
        "Too many failed login attempts for this account or from this address. Try again later."
    )


class UserNotFound(ServiceError):
    """A valid access token of a user that no longer exists (JWTAuthentication's 401)."""

    code = ErrorCode.AUTHENTICATION_FAILED
    default_message = "User not found"


class UserInactive(ServiceError):
    code = ErrorCode.AUTHENTICATION_FAILED
    default_message = "User is inactive"


class ApiKeyNotFound(ServiceError):
    code = ErrorCode.API_KEY_NOT_FOUND
    default_message = "API key not found."


class ApiKeyLimitReached(ServiceError):
    code = ErrorCode.API_KEY_LIMIT_REACHED
    default_message = "You have reached the maximum number of active API keys."
