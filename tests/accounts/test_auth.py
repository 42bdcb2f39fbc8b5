"""Registration, JWT login, refresh rotation with blacklist, logout, /api/user/me."""

import base64
import json

import pytest
from rest_framework.test import APIClient

PASSWORD = "a-long-passphrase-42"


def register(client, username="carol", password=PASSWORD, email="carol@example.com"):
    return client.post(
        "/api/auth/register",
        {"username": username, "email": email, "password": password},
        format="json",
    )


def login(client, username="carol", password=PASSWORD):
    return client.post(
        "/api/auth/token", {"username": username, "password": password}, format="json"
    )


@pytest.fixture
def tokens(db, api_client):
    register(api_client)
    return login(api_client).json()["data"]


def bearer(access):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def test_register_then_login_round_trip(api_client, db):
    created = register(api_client)
    assert created.status_code == 201
    assert created.json()["status"] == "success"
    assert created.json()["data"]["username"] == "carol"
    assert "password" not in created.json()["data"]

    pair = login(api_client).json()["data"]
    me = bearer(pair["access"]).get("/api/user/me")
    assert me.status_code == 200
    assert me.json()["data"]["username"] == "carol"


def test_duplicate_username_is_400_username_taken(api_client, db):
    register(api_client)
    response = register(api_client, email="other@example.com")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "username_taken"


@pytest.mark.parametrize(
    ("password", "reason"), [("short", "too short"), ("password123", "too common")]
)
def test_weak_password_is_refused_by_djangos_validators(api_client, db, password, reason):
    response = register(api_client, password=password)
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    assert body["details"]["password"]


@pytest.mark.parametrize(
    "payload",
    [{}, {"username": "x"}, {"username": 5, "password": PASSWORD}, {"username": ["a"]}],
)
def test_register_bad_payloads_are_400(api_client, db, payload):
    response = api_client.post("/api/auth/register", payload, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_wrong_password_is_401(api_client, db):
    register(api_client)
    response = login(api_client, password="not-the-password")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_refresh_rotates_and_the_old_refresh_token_is_blacklisted(api_client, tokens):
    first = api_client.post(
        "/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json"
    )
    assert first.status_code == 200
    rotated = first.json()["data"]
    assert rotated["refresh"] != tokens["refresh"]
    assert bearer(rotated["access"]).get("/api/user/me").status_code == 200

    again = api_client.post(
        "/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json"
    )
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "token_not_valid"


def test_logout_blacklists_the_refresh_token(tokens):
    client = bearer(tokens["access"])
    response = client.post("/api/auth/logout", {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 200
    refused = client.post("/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert refused.status_code == 401


def test_after_logout_the_access_token_lives_only_until_its_short_expiry(tokens, settings):
    """Decided (docs/reliability.md): access tokens are stateless, so logout cannot recall
    one; its lifetime, JWT_ACCESS_MINUTES (15), bounds how long it keeps working."""
    from datetime import timedelta

    from rest_framework_simplejwt.tokens import AccessToken

    client = bearer(tokens["access"])
    logout = client.post("/api/auth/logout", {"refresh": tokens["refresh"]}, format="json")
    assert logout.status_code == 200
    assert client.get("/api/user/me").status_code == 200  # until it expires
    token = AccessToken(tokens["access"])
    assert token["exp"] - token["iat"] == 15 * 60
    token.set_exp(from_time=token.current_time, lifetime=-timedelta(seconds=1))
    assert bearer(str(token)).get("/api/user/me").status_code == 401


def test_the_schema_documents_logouts_answer_as_it_is(client, tokens):
    answer = bearer(tokens["access"]).post(
        "/api/auth/logout", {"refresh": tokens["refresh"]}, format="json"
    )
    schema = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    ref = schema["paths"]["/api/auth/logout"]["post"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    envelope = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]

    assert answer.json() == {"status": "success", "message": "Logged out", "data": None}
    assert set(envelope["properties"]) == {"status", "message", "data"}
    data = envelope["properties"]["data"]
    assert "$ref" not in data and "properties" not in data  # no refresh token documented
    assert data.get("nullable") is True and data.get("maxProperties") == 0


def test_an_access_token_is_not_a_refresh_token(api_client, tokens):
    response = api_client.post(
        "/api/auth/token/refresh", {"refresh": tokens["access"]}, format="json"
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


def _tampered(token: str, **claims) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "==="))
    data.update(claims)
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def _alg_none(token: str) -> str:
    _, payload, _ = token.split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{header}.{payload}."


@pytest.mark.parametrize(
    "make_token",
    [
        lambda t: "garbage",
        lambda t: _tampered(t, user_id="999999"),
        _alg_none,
        lambda t: t[:-4] + "AAAA",
    ],
    ids=["garbage", "tampered-claims", "alg-none", "bad-signature"],
)
def test_bad_access_tokens_are_401_in_the_envelope(tokens, make_token):
    response = bearer(make_token(tokens["access"])).get("/api/user/me")
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "token_not_valid"


def test_expired_access_token_is_401(tokens, settings):
    from datetime import timedelta

    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken(tokens["access"])
    token.set_exp(lifetime=-timedelta(seconds=1))
    response = bearer(str(token)).get("/api/user/me")
    assert response.status_code == 401


def test_login_is_throttled_with_retry_after(api_client, db, settings):
    from rest_framework.throttling import ScopedRateThrottle

    rates = {**ScopedRateThrottle.THROTTLE_RATES, "login": "3/min"}
    original = ScopedRateThrottle.THROTTLE_RATES
    ScopedRateThrottle.THROTTLE_RATES = rates
    try:
        statuses = [login(api_client, "nobody", "x").status_code for _ in range(4)]
    finally:
        ScopedRateThrottle.THROTTLE_RATES = original
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3] == 429
