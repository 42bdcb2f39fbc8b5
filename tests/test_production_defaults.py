"""With DEBUG=false the service never serves the offline model unless it is named: `auto`
means Gemini, a missing key is a 503 that /health explains, and `check --deploy` warns when
LLM_PROVIDER=local is named in production."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from model_bakery import baker

from chat.llm import get_provider
from chat.models import Chat, Message

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.LLM_PROVIDER = "auto"
    settings.GEMINI_API_KEY = ""
    settings.MESSAGE_RATE_LIMIT_MS = 0
    return settings


def deploy_check_ids() -> set[str]:
    return {message.id for message in run_checks(include_deployment_checks=True)}


def test_auto_in_production_is_gemini_even_without_a_key(production):
    provider = get_provider()
    assert provider.name == "gemini"
    assert provider.status() == "unavailable"


def test_a_message_in_production_without_a_key_is_503_not_the_offline_model(
    production, auth_client, user
):
    chat = baker.make(Chat, owner=user)
    response = auth_client.post(f"/api/chat/{chat.pk}/message", {"message": "hello"}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "llm_unavailable"
    # Refused before anything was saved or reserved: nothing to bill.
    assert not Message.objects.filter(chat=chat).exists()


def test_health_in_production_without_a_key_says_the_model_is_unavailable_and_why(
    production, client, db
):
    model = client.get("/health").json()["data"]["model"]
    assert model["provider"] == "gemini"
    assert model["state"] == "unavailable"
    assert "GEMINI_API_KEY" in model["detail"]


def test_local_is_served_in_production_only_when_named(production):
    production.LLM_PROVIDER = "local"
    assert get_provider().name == "local"


def test_deploy_check_warns_when_local_is_named_in_production(production):
    production.LLM_PROVIDER = "local"
    assert "chat.W001" in deploy_check_ids()
    production.DEBUG = True
    assert "chat.W001" not in deploy_check_ids()


def test_deploy_check_warns_when_gemini_has_no_key(production):
    assert "chat.W002" in deploy_check_ids()
    production.GEMINI_API_KEY = "a-key"
    assert not {"chat.W001", "chat.W002"} & deploy_check_ids()


@pytest.mark.slow
def test_check_deploy_command_fails_on_local_in_production(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DEBUG": "false",
        "SECRET_KEY": "x7!kq2@pz9#lm4$vn8%rt6^yw3&bc5*hd1(gf0)js-_=+ab2cd3ef4gh5",
        "ALLOWED_HOSTS": "example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy-check.sqlite3'}",
        "LLM_PROVIDER": "local",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "chat.W001" in result.stdout + result.stderr
