"""The login and register throttles key on the TCP peer, not on X-Forwarded-For, unless the
operator declares TRUSTED_PROXY_COUNT proxies in front (then on the address the last of them
reports). Live tests against gunicorn: a client that rotates X-Forwarded-For is throttled
anyway, and cannot lock another address out by claiming to be it. The loopback addresses
127.0.0.2 and 127.0.0.3 stand in for two machines (Linux routes all of 127/8 to lo)."""

import httpx
import pytest
from rest_framework.test import APIClient

from tests.live import live_gunicorn

PASSWORD = "a-long-passphrase-42"
LOGIN_RATE = 10  # LOGIN_THROTTLE_RATE's default, per minute
# The DRF throttle alone: django-axes' lock-out (10 failures by default, keyed through
# config/client_ip.py) would answer 429 one request earlier; tests/accounts/test_login_lockout.py
# covers it, and tests/test_nginx_live.py both together.
NO_LOCKOUT = {"LOGIN_FAILURE_LIMIT": "1000"}
REGISTER_RATE = 20  # REGISTER_THROTTLE_RATE's default, per hour


def client_from(address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (a loopback alias)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def wrong_login(http: httpx.Client, url: str, forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return http.post(
        f"{url}/api/auth/token",
        json={"username": "nobody", "password": "wrong-password"},
        headers=headers,
    ).status_code


def bad_register(http: httpx.Client, url: str, forwarded_for: str) -> int:
    # A 400 payload: the throttle counts the request before the body is even parsed.
    return http.post(
        f"{url}/api/auth/register",
        json={"username": ""},
        headers={"X-Forwarded-For": forwarded_for},
    ).status_code


# --- in-process (also on SQLite) --------------------------------------------------


@pytest.fixture
def low_login_rate():
    from rest_framework.throttling import ScopedRateThrottle

    original = ScopedRateThrottle.THROTTLE_RATES
    ScopedRateThrottle.THROTTLE_RATES = {**original, "login": "3/min"}
    yield
    ScopedRateThrottle.THROTTLE_RATES = original


def login_from(peer: str, forwarded_for: str | None = None) -> int:
    extra = {"REMOTE_ADDR": peer}
    if forwarded_for:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return (
        APIClient()
        .post("/api/auth/token", {"username": "nobody", "password": "x"}, format="json", **extra)
        .status_code
    )


def test_without_trusted_proxies_rotating_forwarded_for_does_not_escape_the_throttle(
    db, low_login_rate
):
    statuses = [login_from("10.0.0.2", f"198.51.100.{i}") for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


def test_with_one_trusted_proxy_the_throttle_keys_on_the_address_it_reports(
    db, low_login_rate, settings
):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    # The proxy (10.0.0.1) appends what it saw; whatever the client wrote before is ignored.
    statuses = [login_from("10.0.0.1", f"203.0.113.{i}, 198.51.100.7") for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert login_from("10.0.0.1", "198.51.100.8") == 401


def test_trusted_proxy_count_is_drfs_num_proxies(settings):
    from config import settings as config_settings

    assert config_settings.REST_FRAMEWORK["NUM_PROXIES"] == config_settings.TRUSTED_PROXY_COUNT


# --- live gunicorn -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rate", "refused_status"),
    [(wrong_login, LOGIN_RATE, 401), (bad_register, REGISTER_RATE, 400)],
    ids=["login", "register"],
)
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_forty_requests_with_forty_forwarded_for_values_get_429_after_the_rate(
    tmp_path, attempt, rate, refused_status
):
    with (
        live_gunicorn(env={"TRUSTED_PROXY_COUNT": "0", **NO_LOCKOUT}, tmp_path=tmp_path) as server,
        client_from("127.0.0.2") as http,
    ):
        statuses = [attempt(http, server.url, f"198.51.100.{i}") for i in range(40)]
    assert statuses[:rate] == [refused_status] * rate
    assert set(statuses[rate:]) == {429}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_client_cannot_lock_another_address_out_by_claiming_to_be_it(tmp_path):
    with live_gunicorn(env={"TRUSTED_PROXY_COUNT": "0", **NO_LOCKOUT}, tmp_path=tmp_path) as server:
        with client_from("127.0.0.3") as victim:
            victim.post(
                f"{server.url}/api/auth/register",
                json={"username": "victim", "email": "", "password": PASSWORD},
            ).raise_for_status()
        with client_from("127.0.0.2") as attacker:
            spoofed = [
                wrong_login(attacker, server.url, "127.0.0.3") for _ in range(LOGIN_RATE + 2)
            ]
        assert spoofed[-1] == 429  # the attacker locked only itself out
        with client_from("127.0.0.3") as victim:
            login = victim.post(
                f"{server.url}/api/auth/token", json={"username": "victim", "password": PASSWORD}
            )
            assert login.status_code == 200
            refresh = victim.post(
                f"{server.url}/api/auth/token/refresh",
                json={"refresh": login.json()["data"]["refresh"]},
            )
            assert refresh.status_code == 200


@pytest.mark.parametrize(
    ("attempt", "rate", "refused_status"),
    [(wrong_login, LOGIN_RATE, 401), (bad_register, REGISTER_RATE, 400)],
    ids=["login", "register"],
)
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_behind_one_trusted_proxy_the_throttle_keys_on_the_address_it_reports(
    tmp_path, attempt, rate, refused_status
):
    # The test client plays the proxy: it appends the client's address to whatever the
    # client sent, as `$proxy_add_x_forwarded_for` would.
    with (
        live_gunicorn(env={"TRUSTED_PROXY_COUNT": "1", **NO_LOCKOUT}, tmp_path=tmp_path) as server,
        client_from("127.0.0.2") as proxy,
    ):
        statuses = [
            attempt(proxy, server.url, f"203.0.113.{i}, 198.51.100.7") for i in range(rate + 5)
        ]
        other_client = attempt(proxy, server.url, "198.51.100.8")
    assert statuses[:rate] == [refused_status] * rate
    assert set(statuses[rate:]) == {429}
    assert other_client == refused_status
