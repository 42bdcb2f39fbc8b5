import sys

import pytest
from django.db import connection
from model_bakery import baker
from rest_framework.test import APIClient

pytest_plugins = ["tests.fakes.fixtures"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """On SQLite, the test database is a file (in WAL mode, like development's), not
    Django's shared in-memory one: a reply's run writes from its own thread while the test
    reads, which an in-memory shared-cache database answers with "table is locked"."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        path = tmp_path_factory.mktemp("sqlite") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


def pytest_collection_modifyitems(config, items):
    """Tests marked `postgres` need row locks and real concurrency: skip them on SQLite."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (row locking / concurrency); set DATABASE_URL")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    from billing.tokens import clear_token_cache

    cache.clear()
    clear_token_cache()  # also the per-process memory of the system prompt's count
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    """A reply's run is on its own thread: a test must not end (and its database be flushed)
    while one still works."""
    yield
    registry = sys.modules.get("chat.reply.registry")
    if registry is not None and registry.active():
        left = registry.wait_for_runs(timeout=30)
        assert not left, f"{len(left)} reply run(s) outlived their test"


@pytest.fixture
def user(db):
    return baker.make("accounts.User", username="alice", email="alice@example.com")


@pytest.fixture
def other_user(db):
    return baker.make("accounts.User", username="bob", email="bob@example.com")


@pytest.fixture
def staff_user(db):
    return baker.make("accounts.User", username="staff", is_staff=True, is_superuser=True)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def auth_client(user):
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def offline_model(settings):
    """The offline model, answering at once, and no rate limit between messages (a module
    takes it with `pytest.mark.usefixtures("offline_model")`)."""
    settings.LLM_PROVIDER = "local"
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 0
    settings.MESSAGE_RATE_LIMIT_MS = 0
    return settings


@pytest.fixture
def chat(user):
    return baker.make("chat.Chat", owner=user, title="Ideas")


@pytest.fixture
def staff_client(client, staff_user):
    """Django's test client, logged in as staff (the admin's pages)."""
    client.force_login(staff_user)
    return client
