"""LLM providers behind one interface (base.py): `get_provider()` is the only entry point.

LLM_PROVIDER: "gemini", "local" (offline), or "auto". In development (DEBUG=true) "auto" is
gemini when GEMINI_API_KEY is set and the offline model otherwise, so a fresh checkout runs
with no key. In production (DEBUG=false) "auto" is always gemini: without a key the message
endpoint answers 503 `llm_unavailable` and /health says why, instead of quietly billing users
for the offline model's canned text. The offline model is served in production only when
LLM_PROVIDER=local names it (and `check --deploy` warns, chat.checks).
One provider instance per process, shared by every thread.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.core.signals import setting_changed

from chat.llm.base import LLMProvider
from chat.llm.errors import LLMUnavailable

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_provider: LLMProvider | None = None


def chosen_provider_name() -> str:
    choice = (settings.LLM_PROVIDER or "auto").lower()
    if choice == "auto":
        return "gemini" if settings.GEMINI_API_KEY or not settings.DEBUG else "local"
    return choice


def _unavailable_detail() -> str:
    if (settings.LLM_PROVIDER or "auto").lower() == "auto":
        return (
            "GEMINI_API_KEY is not set. With DEBUG=false, LLM_PROVIDER=auto means gemini; "
            "set the key (or LLM_PROVIDER=local to serve the offline model on purpose)."
        )
    return "GEMINI_API_KEY is not set."


def get_provider() -> LLMProvider:
    global _provider
    if _provider is None:
        with _lock:
            if _provider is None:
                _provider = _build(chosen_provider_name())
    return _provider


def _build(name: str) -> LLMProvider:
    if name == "local":
        from chat.llm.local import LocalProvider

        return LocalProvider()
    if name == "gemini":
        from chat.llm.gemini import GeminiProvider

        provider = GeminiProvider()
        if unavailable_reason(provider) is not None:
            logger.error(
                "The model is gemini (LLM_PROVIDER=%s) but GEMINI_API_KEY is not set: "
                "messages get 503 llm_unavailable",
                settings.LLM_PROVIDER,
            )
        return provider
    raise ValueError(f"Unknown LLM_PROVIDER {settings.LLM_PROVIDER!r}: use auto, gemini or local")


def reset_provider(**_kwargs) -> None:
    global _provider
    with _lock:
        _provider = None


def _on_setting_changed(*, setting, **kwargs):
    if setting.startswith(("LLM_", "GEMINI_", "LOCAL_LLM_")):
        reset_provider()


setting_changed.connect(_on_setting_changed)


def unavailable_reason(provider: LLMProvider) -> str | None:
    """Why `provider` cannot take a call now, None when it can: the one place provider
    availability is decided (from the provider's own `status()`). The set-up of a message and
    a /v1 completion refuse with require_available, /health and the deploy check report the
    reason, and the Gemini client is never built without it."""
    if provider.status() == "ok":
        return None
    return _unavailable_detail()


def require_available(provider: LLMProvider) -> None:
    """Raises LLMUnavailable (503 `llm_unavailable`) unless `provider` can take a call."""
    if unavailable_reason(provider) is not None:
        raise LLMUnavailable()


def provider_state() -> dict:
    try:
        provider = get_provider()
    except ValueError as exc:
        return {
            "provider": settings.LLM_PROVIDER,
            "model": None,
            "state": "misconfigured",
            "detail": str(exc),
        }
    state = {"provider": provider.name, "model": provider.model, "state": "ok"}
    reason = unavailable_reason(provider)
    if reason is not None:
        state.update(state="unavailable", detail=reason)
    return state


def count_tokens(text: str) -> int:
    """The current provider's count (billing's TOKEN_COUNTER). May raise LLMError."""
    return get_provider().count_tokens(text)
