import math

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.exceptions import InvalidRefreshToken, LoginLocked, UsernameTaken
from config.api import ValidationFailed


def register_user(*, username: str, email: str, password: str):
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
        raise UsernameTaken(details={"username": ["That username is already taken."]})
    candidate = User(username=username, email=email)
    try:
        password_validation.validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise ValidationFailed(details={"password": list(exc.messages)}) from None
    candidate.set_password(password)
    try:
        with transaction.atomic():
            candidate.save()
    except IntegrityError:  # a parallel registration won the race
        raise UsernameTaken(details={"username": ["That username is already taken."]}) from None
    return candidate


def obtain_token_pair(*, request) -> dict:
    """A JWT pair for a username and password; 401 when they are wrong.

    authenticate() sees the request, so django-axes counts a failure per account and per
    address and refuses a locked-out one before checking the password: that is 429
    `login_locked` with Retry-After (the cool-off), the same lock-out as the admin's login.
    """
    serializer = TokenObtainPairSerializer(data=request.data, context={"request": request})
    try:
        serializer.is_valid(raise_exception=True)
    except AuthenticationFailed:
        if getattr(request, "axes_locked_out", False):
            minutes = math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
            raise LoginLocked(
                "Too many failed login attempts for this account or from this address. "
                f"Try again in {minutes} minutes.",
                headers={"Retry-After": str(int(settings.AXES_COOLOFF_TIME.total_seconds()))},
            ) from None
        raise
    except TokenError as exc:
        raise InvalidToken(exc.args[0]) from exc
    return serializer.validated_data


def logout(*, user, refresh: str) -> None:
    """Blacklist the caller's refresh token, so it can no longer mint access tokens."""
    try:
        token = RefreshToken(refresh)
    except TokenError:
        raise InvalidRefreshToken() from None
    if str(token.get("user_id")) != str(user.pk):
        raise InvalidRefreshToken("That refresh token belongs to someone else.")
    token.blacklist()


def rotate_refresh_token(*, refresh: str) -> dict:
    """A new token pair for a refresh token, which is blacklisted: usable exactly once.

    simplejwt checks the blacklist and then blacklists without a lock, so two parallel
    refreshes of one token could both win; the token's outstanding row is locked here.
    """
    with transaction.atomic():
        try:
            jti = RefreshToken(refresh)["jti"]  # signature, expiry, type and blacklist
        except (TokenError, KeyError):
            raise InvalidRefreshToken() from None
        list(OutstandingToken.objects.select_for_update().filter(jti=jti).values_list("pk"))
        serializer = TokenRefreshSerializer(data={"refresh": refresh})
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError:
            raise InvalidRefreshToken() from None
        return serializer.validated_data
