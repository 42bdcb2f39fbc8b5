from rest_framework import status as http

from config.api import ServiceError


class UsernameTaken(ServiceError):
    code = "username_taken"
    status = http.HTTP_400_BAD_REQUEST
    default_message = "That username is already taken."


class InvalidRefreshToken(ServiceError):
    code = "token_not_valid"
    status = http.HTTP_401_UNAUTHORIZED
    default_message = "The refresh token is invalid, expired or already used."


class LoginLocked(ServiceError):
    code = "login_locked"
    status = http.HTTP_429_TOO_MANY_REQUESTS
    default_message = (
        "Too many failed login attempts for this account or from this address. Try again later."
    )


class UserNotFound(ServiceError):
    """A valid access token of a user that no longer exists (JWTAuthentication's 401)."""

    code = "authentication_failed"
    status = http.HTTP_401_UNAUTHORIZED
    default_message = "User not found"


class UserInactive(ServiceError):
    code = "authentication_failed"
    status = http.HTTP_401_UNAUTHORIZED
    default_message = "User is inactive"


class ApiKeyNotFound(ServiceError):
    code = "api_key_not_found"
    status = http.HTTP_404_NOT_FOUND
    default_message = "API key not found."


class ApiKeyLimitReached(ServiceError):
    code = "api_key_limit_reached"
    status = http.HTTP_409_CONFLICT
    default_message = "You have reached the maximum number of active API keys."
