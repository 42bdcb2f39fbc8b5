"""Found by the attack of issue 12: a deleted user's refresh token, and case variants of one
username registered in parallel."""

import pytest
from django.contrib.auth import get_user_model
from model_bakery import baker
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from tests.reliability.test_races import together

PASSWORD = "a-long-passphrase-42"


def register(username):
    return APIClient().post(
        "/api/auth/register",
        {"username": username, "email": "", "password": PASSWORD},
        format="json",
    )


@pytest.mark.django_db
def test_a_deleted_users_refresh_token_is_401_not_500():
    user = baker.make("accounts.User")
    refresh = str(RefreshToken.for_user(user))
    access = str(RefreshToken(refresh).access_token)
    user.delete()

    refreshed = APIClient().post("/api/auth/token/refresh", {"refresh": refresh}, format="json")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    me = client.get("/api/user/me")

    assert refreshed.status_code == 401
    assert refreshed.json()["error"]["code"] == "token_not_valid"
    assert me.status_code == 401  # the access token says the same


@pytest.mark.django_db
def test_a_case_variant_of_a_taken_username_is_400_username_taken():
    assert register("Carol").status_code == 201
    for variant in ("carol", "CAROL", "cArOl"):
        response = register(variant)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "username_taken"
    assert get_user_model().objects.filter(username__iexact="carol").count() == 1


@pytest.mark.django_db
def test_the_database_refuses_a_case_variant_even_past_the_check():
    from django.db import IntegrityError, transaction

    baker.make("accounts.User", username="Dave")
    with pytest.raises(IntegrityError), transaction.atomic():
        baker.make("accounts.User", username="dAVE")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_registrations_of_case_variants_create_one_account():
    from django.core.cache import cache

    for round_ in range(5):
        cache.clear()  # the register throttle (20/hour per address) is not under test
        name = f"racer{round_}"
        # six spellings of one name, differing only in letter case
        variants = [
            "".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(name))
            for mask in (0, 1, 2, 4, 8, 31)
        ]
        responses = together(*[lambda v=v: register(v) for v in variants])
        statuses = [r.status_code for r in responses]
        codes = {r.json()["error"]["code"] for r in responses if r.status_code != 201}

        assert sorted(statuses) == [201] + [400] * (len(variants) - 1)
        assert codes == {"username_taken"}
        assert get_user_model().objects.filter(username__iexact=name).count() == 1
