import pytest

from tests.fakes.gemini import FakeGemini


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
