"""Failed logins lock an account and an address out (django-axes), at the admin's login
form and at the API's token endpoint alike; X-Forwarded-For is not trusted by default."""

import re
from datetime import timedelta

import httpx
import pytest
from django.test import RequestFactory
from django.utils import timezone
from model_bakery import baker
from rest_framework.throttling import ScopedRateThrottle

from config.client_ip import client_ip
from tests.live import live_gunicorn

PASSWORD = "a-long-passphrase-42"
LOCKED = "Too many failed login attempts"


@pytest.fixture
def staff(db):
    member = baker.make("accounts.User", username="boss", is_staff=True, is_superuser=True)
    member.set_password(PASSWORD)
    member.save()
    return member


@pytest.fixture
def no_api_throttle():
    """The login throttle (per address, DRF) off, so what is seen is the lock-out alone."""
    original = ScopedRateThrottle.THROTTLE_RATES
    ScopedRateThrottle.THROTTLE_RATES = {**original, "login": None}
    yield
    ScopedRateThrottle.THROTTLE_RATES = original


def admin_login(client, username, password, **extra):
    return client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}, **extra
    )


def api_login(client, username, password, **extra):
    return client.post(
        "/api/auth/token",
        {"username": username, "password": password},
        content_type="application/json",
        **extra,
    )


def is_logged_in(client) -> bool:
    return client.get("/admin/").status_code == 200


def test_thirty_wrong_admin_passwords_then_the_right_one_is_refused(client, staff, settings):
    settings.AXES_FAILURE_LIMIT = 10
    statuses = [
        admin_login(client, "boss", f"guess-{i}", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code
        for i in range(30)
    ]
    assert statuses[:9] == [200] * 9  # the form again, "enter a correct username and password"
    assert set(statuses[9:]) == {429}
    # The right password, "from" yet another address: still refused, with the message.
    response = admin_login(client, "boss", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert not is_logged_in(client)


def test_the_account_is_locked_from_any_address(client, staff, settings):
    settings.AXES_FAILURE_LIMIT = 5
    for i in range(5):
        admin_login(client, "boss", "wrong", REMOTE_ADDR=f"10.0.0.{i}")
    response = admin_login(client, "BOSS", PASSWORD, REMOTE_ADDR="10.0.1.1")
    assert response.status_code == 429
    assert admin_login(client, "boss", PASSWORD, REMOTE_ADDR="10.0.1.1").status_code == 429
    assert not is_logged_in(client)


def test_an_address_is_locked_for_every_account(client, staff, settings):
    settings.AXES_FAILURE_LIMIT = 5
    for i in range(5):
        admin_login(client, f"someone-{i}", "wrong", REMOTE_ADDR="10.9.9.9")
    assert admin_login(client, "boss", PASSWORD, REMOTE_ADDR="10.9.9.9").status_code == 429
    # The account itself is not locked: its owner logs in from elsewhere.
    assert admin_login(client, "boss", PASSWORD, REMOTE_ADDR="10.1.1.1").status_code == 302
    assert is_logged_in(client)


def test_the_lockout_ends_after_the_cool_off(client, staff, settings):
    from axes.models import AccessAttempt

    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        admin_login(client, "boss", "wrong")
    assert admin_login(client, "boss", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert admin_login(client, "boss", PASSWORD).status_code == 302


def test_the_api_login_is_locked_with_its_envelope_and_retry_after(
    client, staff, settings, no_api_throttle
):
    settings.AXES_FAILURE_LIMIT = 5
    statuses = [api_login(client, "boss", f"guess-{i}").status_code for i in range(4)]
    assert statuses == [401] * 4
    response = api_login(client, "boss", "guess-5")  # the fifth failure locks
    assert response.status_code == 429
    response = api_login(client, "boss", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.7")
    body = response.json()
    assert response.status_code == 429 and body["status"] == "error"
    assert body["error"]["code"] == "login_locked" and LOCKED in body["error"]["message"]
    assert int(response["Retry-After"]) == 15 * 60


def test_one_lockout_for_both_doors(client, staff, settings, no_api_throttle):
    """Guessing through the API cannot sidestep the admin's lock-out, nor the other way."""
    settings.AXES_FAILURE_LIMIT = 5
    for i in range(5):
        api_login(client, "boss", f"guess-{i}", REMOTE_ADDR=f"10.0.0.{i}")
    assert admin_login(client, "boss", PASSWORD, REMOTE_ADDR="10.0.1.1").status_code == 429
    assert api_login(client, "boss", PASSWORD, REMOTE_ADDR="10.0.1.1").status_code == 429


def test_the_api_login_works_with_the_lockout_installed(client, staff, settings, no_api_throttle):
    settings.AXES_FAILURE_LIMIT = 5
    for _ in range(3):
        assert api_login(client, "boss", "wrong").status_code == 401
    response = api_login(client, "boss", PASSWORD)
    assert response.status_code == 200 and set(response.json()["data"]) == {"access", "refresh"}


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.1"),  # default: the peer; the header is the client's
        (0, None, "10.0.0.1"),
        (1, "203.0.113.9", "203.0.113.9"),  # one proxy: the address it appended
        (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the client's own value is ignored
        (2, "6.6.6.6, 203.0.113.9, 192.168.0.2", "203.0.113.9"),
        (3, "203.0.113.9", "203.0.113.9"),  # fewer entries than proxies: the leftmost
    ],
)
def test_client_ip_trusts_only_the_declared_proxies(settings, proxies, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    headers = {"REMOTE_ADDR": "10.0.0.1"}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    assert client_ip(RequestFactory().get("/", **headers)) == expected


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_admin_brute_force_against_a_live_server(tmp_path):
    """The attack as it was made: the admin's form through gunicorn, with its CSRF token."""
    staff = baker.make("accounts.User", username="boss", is_staff=True, is_superuser=True)
    staff.set_password(PASSWORD)
    staff.save()
    with (
        live_gunicorn(env={"LOGIN_FAILURE_LIMIT": "10"}, tmp_path=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=10) as browser,
    ):

        def attempt(password, forwarded):
            page = browser.get("/admin/login/?next=/admin/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            return browser.post(
                "/admin/login/?next=/admin/",
                data={
                    "csrfmiddlewaretoken": token.group(1),
                    "username": "boss",
                    "password": password,
                },
                headers={"X-Forwarded-For": forwarded},
            )

        statuses = [attempt(f"guess-{i}", f"203.0.113.{i}").status_code for i in range(30)]
        assert statuses.count(429) == 21
        response = attempt(PASSWORD, "198.51.100.7")
        assert response.status_code == 429 and LOCKED in response.text
        assert browser.get("/admin/").status_code == 302  # not logged in
