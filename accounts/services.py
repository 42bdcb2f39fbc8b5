import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.exceptions import (
    ApiKeyLimitReached,
    InvalidRefreshToken,
    LoginLocked,
    UsernameTaken,
)
from accounts.models import ApiKey
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
        except (TokenError, get_user_model().DoesNotExist):
            # A deleted user's token is as dead as an expired one (simplejwt lets the
            # user lookup's DoesNotExist escape).
            raise InvalidRefreshToken() from None
        return serializer.validated_data


# --- API keys (the /v1 API) ----------------------------------------------------------

API_KEY_START = "sk-"
# Visible part: "sk-" + 8 hex characters, unique, shown in lists and the admin.
API_KEY_PREFIX_LENGTH = len(API_KEY_START) + 8
# The longest Authorization value worth hashing; anything longer is not one of ours.
API_KEY_MAX_LENGTH = 128
# last_used_at is written at most this often per key, not on every request.
LAST_USED_PRECISION_S = 60
MAX_API_KEYS_PER_USER = 20


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: ApiKey
    secret: str  # the whole key; shown to its owner once, never stored


def create_api_key(*, user, name: str = "") -> NewApiKey:
    """A new key: 256 random bits after a visible prefix; only their SHA-256 is stored."""
    with transaction.atomic():
        # The user's row, locked: two parallel creations cannot both pass the limit.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        if ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= (
            MAX_API_KEYS_PER_USER
        ):
            raise ApiKeyLimitReached(details={"limit": MAX_API_KEYS_PER_USER})
        for _attempt in range(3):  # the 32-bit visible prefix may collide, rarely
            secret = f"{API_KEY_START}{secrets.token_hex(4)}{secrets.token_urlsafe(32)}"
            try:
                with transaction.atomic():
                    key = ApiKey.objects.create(
                        user=user,
                        name=name,
                        prefix=secret[:API_KEY_PREFIX_LENGTH],
                        hashed_key=hash_api_key(secret),
                    )
            except IntegrityError:
                continue
            return NewApiKey(key=key, secret=secret)
    raise RuntimeError("Could not generate a unique API key prefix")  # pragma: no cover


def revoke_api_key(*, key: ApiKey) -> ApiKey:
    """Revoked at once: the next request with it is a 401. Idempotent."""
    if key.revoked_at is None:
        now = timezone.now()
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
        key.refresh_from_db(fields=["revoked_at"])
    return key


def authenticate_api_key(*, raw: str) -> ApiKey | None:
    """The active key with this secret and its active user (one query), or None.

    Records its use at most once per LAST_USED_PRECISION_S (a conditional UPDATE).
    """
    if not raw.startswith(API_KEY_START) or len(raw) > API_KEY_MAX_LENGTH:
        return None
    key = (
        ApiKey.objects.select_related("user")
        .filter(hashed_key=hash_api_key(raw), revoked_at__isnull=True)
        .first()
    )
    if key is None or not key.user.is_active:
        return None
    _record_key_use(key)
    return key


def _record_key_use(key: ApiKey) -> None:
    now = timezone.now()
    stale_before = now - timedelta(seconds=LAST_USED_PRECISION_S)
    if key.last_used_at is not None and key.last_used_at > stale_before:
        return
    # Conditional, so parallel requests (or nodes) write it once between them.
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale_before), pk=key.pk
    ).update(last_used_at=now)
    key.last_used_at = now
