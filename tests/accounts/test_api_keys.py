"""API keys: create (secret shown once, stored as a hash), list, revoke; they open /v1 only,
JWTs never do; last use is recorded at most once a minute; staff see and revoke them."""

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import ApiKey
from accounts.services import LAST_USED_PRECISION_S, MAX_API_KEYS_PER_USER, create_api_key


@pytest.fixture(autouse=True)
def _offline_model(settings):
    settings.LLM_PROVIDER = "local"


def key_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_create_shows_the_secret_once_and_stores_only_its_hash(auth_client, user):
    response = auth_client.post("/api/keys", {"name": "laptop"}, format="json")

    assert response.status_code == 201
    data = response.json()["data"]
    secret = data["key"]
    assert secret.startswith("sk-") and len(secret) >= 50
    assert data["prefix"] == secret[:11] and data["name"] == "laptop"
    assert data["last_used_at"] is None
    row = ApiKey.objects.get(pk=data["id"])
    assert row.user == user
    assert row.hashed_key == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(value) for value in ApiKey.objects.filter(pk=row.pk).values().first().values()]
    assert secret not in stored
    # Never again: the list shows the prefix, not the key.
    listed = auth_client.get("/api/keys").json()["data"]["results"]
    assert [k["id"] for k in listed] == [row.pk]
    assert "key" not in listed[0] and listed[0]["prefix"] == row.prefix
    assert secret not in auth_client.get("/api/keys").content.decode()


def test_two_keys_differ_and_list_newest_first(auth_client, user):
    first = auth_client.post("/api/keys", {}, format="json").json()["data"]
    second = auth_client.post("/api/keys", {"name": ""}, format="json").json()["data"]
    assert first["key"] != second["key"] and first["prefix"] != second["prefix"]
    listed = auth_client.get("/api/keys").json()["data"]["results"]
    assert [k["id"] for k in listed] == [second["id"], first["id"]]


def test_bad_names_are_400(auth_client):
    assert auth_client.post("/api/keys", {"name": 5}, format="json").status_code == 400
    assert auth_client.post("/api/keys", {"name": "x" * 101}, format="json").status_code == 400


def test_keys_need_a_jwt_and_a_key_does_not_open_api(api_client, user):
    assert api_client.get("/api/keys").status_code == 401
    secret = create_api_key(user=user).secret
    assert key_client(secret).get("/api/keys").status_code == 401
    assert key_client(secret).get("/api/user/me").status_code == 401


def test_revoke_makes_the_key_401_at_once_and_hides_it(auth_client, user):
    created = auth_client.post("/api/keys", {}, format="json").json()["data"]
    client = key_client(created["key"])
    assert client.get("/v1/models").status_code == 200

    response = auth_client.delete(f"/api/keys/{created['id']}")

    assert response.status_code == 200
    assert response.json()["data"]["revoked_at"] is not None
    assert ApiKey.objects.get(pk=created["id"]).revoked_at is not None
    refused = client.get("/v1/models")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert auth_client.get("/api/keys").json()["data"]["results"] == []
    # Revoking again, or a key that never existed, is a 404.
    assert auth_client.delete(f"/api/keys/{created['id']}").status_code == 404
    assert auth_client.delete("/api/keys/999999").status_code == 404
    assert auth_client.delete("/api/keys/not-a-number").status_code == 404


def test_someone_elses_key_cannot_be_seen_or_revoked(auth_client, other_user):
    theirs = create_api_key(user=other_user).key
    assert auth_client.get("/api/keys").json()["data"]["results"] == []
    response = auth_client.delete(f"/api/keys/{theirs.pk}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "api_key_not_found"
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_active_keys_are_limited(auth_client, user):
    for _ in range(MAX_API_KEYS_PER_USER):
        create_api_key(user=user)
    response = auth_client.post("/api/keys", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "api_key_limit_reached"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer sk-not-a-real-key",
        "Bearer sk-a b",
        "Bearer " + "sk-" + "x" * 500,
        "Basic dXNlcjpwYXNz",
        "Bearer garbage-without-prefix",
    ],
)
def test_v1_refuses_missing_and_bad_keys_with_401_in_openai_shape(db, api_client, header):
    if header:
        api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.get("/v1/models")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_jwt_does_not_open_v1(api_client, user):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    assert api_client.get("/v1/models").status_code == 401


def test_an_inactive_users_key_is_refused(user):
    secret = create_api_key(user=user).secret
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert key_client(secret).get("/v1/models").status_code == 401


def test_last_use_is_recorded_at_most_once_a_minute(user, django_assert_num_queries):
    created = create_api_key(user=user)
    client = key_client(created.secret)
    assert client.get("/v1/models").status_code == 200
    first = ApiKey.objects.get(pk=created.key.pk).last_used_at
    assert first is not None

    # Within the minute: the key's lookup only, no write.
    with django_assert_num_queries(1):
        assert client.get("/v1/models").status_code == 200
    assert ApiKey.objects.get(pk=created.key.pk).last_used_at == first

    stale = timezone.now() - timedelta(seconds=LAST_USED_PRECISION_S + 1)
    ApiKey.objects.filter(pk=created.key.pk).update(last_used_at=stale)
    with django_assert_num_queries(2):  # lookup + one conditional UPDATE
        assert client.get("/v1/models").status_code == 200
    assert ApiKey.objects.get(pk=created.key.pk).last_used_at > stale


def test_staff_see_keys_without_secrets_and_revoke_them_in_the_admin(client, staff_user, user):
    created = create_api_key(user=user, name="ci runner")
    client.force_login(staff_user)

    page = client.get("/admin/accounts/apikey/").content.decode()
    assert created.key.prefix in page and "ci runner" in page and "alice" in page
    assert created.secret not in page and created.key.hashed_key not in page
    detail = client.get(f"/admin/accounts/apikey/{created.key.pk}/change/").content.decode()
    assert created.key.hashed_key not in detail

    response = client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [created.key.pk]}
    )
    assert response.status_code == 302
    created.key.refresh_from_db()
    assert created.key.revoked_at is not None
    assert key_client(created.secret).get("/v1/models").status_code == 401
    assert client.get("/admin/accounts/apikey/add/").status_code == 403


def test_the_admin_refuses_non_staff(client, user):
    client.force_login(user)
    response = client.get("/admin/accounts/apikey/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_view_only_staff_see_keys_but_cannot_revoke_them(client, user):
    from django.contrib.auth.models import Permission
    from model_bakery import baker

    created = create_api_key(user=user)
    viewer = baker.make("accounts.User", username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client.force_login(viewer)

    page = client.get("/admin/accounts/apikey/")
    assert page.status_code == 200 and created.key.prefix in page.content.decode()
    assert b'value="revoke"' not in page.content
    client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [created.key.pk]}
    )
    created.key.refresh_from_db()
    assert created.key.revoked_at is None
