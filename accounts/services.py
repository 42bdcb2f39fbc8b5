from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.exceptions import InvalidRefreshToken, UsernameTaken
from config.api import ValidationFailed


def register_user(*, username: str, email: str, password: str):
    """A new user. Usernames are unique ignoring case: checked here for the common case, and
    by the database constraint on Lower("username") for parallel registrations."""
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
    except IntegrityError:  # a parallel registration (any letter case) won the race
        raise UsernameTaken(details={"username": ["That username is already taken."]}) from None
    return candidate


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
        except (TokenError, get_user_model().DoesNotExist):
            # A deleted user's token is as dead as an expired one (simplejwt lets the
            # user lookup's DoesNotExist escape).
            raise InvalidRefreshToken() from None
        return serializer.validated_data
