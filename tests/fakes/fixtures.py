import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fakes.gemini import FakeGemini

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def fake_gemini(settings):
    """The fake Gemini server, with the real SDK pointed at it (LLM_PROVIDER=gemini)."""
    fake = FakeGemini().start()
    settings.LLM_PROVIDER = "gemini"
    settings.GEMINI_API_KEY = "test-key-not-secret"
    settings.GEMINI_BASE_URL = fake.url
    settings.GEMINI_TIMEOUT_MS = 5000
    settings.GEMINI_RETRY_ATTEMPTS = 3
    settings.GEMINI_RETRY_INITIAL_DELAY_S = 0.01
    settings.GEMINI_RETRY_MAX_DELAY_S = 0.05
    try:
        yield fake
    finally:
        fake.stop()


@dataclass
class FakeGeminiProcess:
    """The fake Gemini server in a process of its own (for live servers: its pacing does not
    depend on the test process), controlled over HTTP."""

    url: str
    process: subprocess.Popen

    def script(self, *scripts: dict) -> None:
        httpx.post(f"{self.url}/_fake/script", json=list(scripts)).raise_for_status()

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_fake/requests").json()

    def closed(self) -> list[dict]:
        """The streams whose client (our server) closed the connection before their end."""
        return httpx.get(f"{self.url}/_fake/closed").json()

    def server_env(self) -> dict[str, str]:
        return {
            "LLM_PROVIDER": "gemini",
            "GEMINI_API_KEY": "test-key-not-secret",
            "GEMINI_BASE_URL": self.url,
            "GEMINI_RETRY_ATTEMPTS": "1",
            "GEMINI_TIMEOUT_MS": "5000",
        }


@pytest.fixture
def fake_gemini_process():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.gemini", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(process.stdout.readline().split()[1])
        yield FakeGeminiProcess(url=f"http://127.0.0.1:{port}", process=process)
    finally:
        process.terminate()
        process.wait(timeout=10)
