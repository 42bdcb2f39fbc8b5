import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import OperationalError, connections

ROOT = Path(__file__).resolve().parent.parent


def test_health_reports_database_and_model(client, db, settings):
    settings.LLM_PROVIDER = "local"
    response = client.get("/health")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["database"] == "ok"
    assert data["model"] == {"provider": "local", "model": "local-echo-1", "state": "ok"}


def test_health_says_the_model_is_unavailable_without_a_key(client, db, settings):
    settings.LLM_PROVIDER = "gemini"
    settings.GEMINI_API_KEY = ""
    data = client.get("/health").json()["data"]
    assert data["model"]["state"] == "unavailable"


def test_health_is_503_when_the_database_is_unreachable(client, db, monkeypatch):
    # Django's own connection refuses to connect, as it would with the server down.
    wrapper = connections["default"]

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(wrapper, "cursor", refuse)
        response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["code"] == "unhealthy"
    assert body["error"]["details"]["database"] == "unavailable"
    assert body["error"]["details"]["model"]["state"]


def test_openapi_schema_generates_without_warnings(tmp_path):
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )
    text = (tmp_path / "schema.yaml").read_text()
    for operation in ("auth_register", "chat_message_send", "user_token_usage", "chat_delete"):
        assert f"operationId: {operation}" in text
    # The API keys and the OpenAI-compatible /v1 API are listed too.
    for operation in (
        "api_keys_create",
        "api_keys_revoke",
        "v1_models_list",
        "v1_models_retrieve",
        "v1_chat_completions_create",
    ):
        assert f"operationId: {operation}" in text
    assert "  /v1/chat/completions:" in text and "  /v1/models:" in text


def test_schema_and_docs_pages_are_served(client, db):
    assert client.get("/api/schema").status_code == 200
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    # Swagger UI comes from our own static files: no absolute URL at all. (Not a search for
    # "cdn": the page embeds a random CSRF token, which now and then spells it.)
    assets = re.findall(rb'(?:src|href)="([^"]+)"', docs.content)
    assert any(b"swagger-ui-bundle" in url for url in assets)
    assert all(url.startswith(b"/static/") for url in assets), assets
    assert not re.search(rb"https?://", docs.content)


def test_makemigrations_check_is_clean(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.slow
def test_check_deploy_is_clean_with_production_settings():
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DEBUG": "false",
        "SECRET_KEY": "x7!kq2@pz9#lm4$vn8%rt6^yw3&bc5*hd1(gf0)js-_=+ab2cd3ef4gh5",
        "ALLOWED_HOSTS": "example.com",
        "DATABASE_URL": "sqlite:////tmp/deploy-check.sqlite3",
        "GEMINI_API_KEY": "a-production-key",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
