"""LLM providers behind one interface (base.py): `get_provider()` is the only entry point.

LLM_PROVIDER: "gemini", "local" (offline), or "auto" = gemini when GEMINI_API_KEY is set.
One provider instance per process, shared by every thread.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.core.signals import setting_changed

from chat.llm.base import LLMProvider

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_provider: LLMProvider | None = None


def chosen_provider_name() -> str:
    choice = (settings.LLM_PROVIDER or "auto").lower()
    if choice == "auto":
        return "gemini" if settings.GEMINI_API_KEY else "local"
    return choice


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
        if provider.status() != "ok":
            logger.error("LLM_PROVIDER is gemini but GEMINI_API_KEY is not set: model unavailable")
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
    return {"provider": provider.name, "model": provider.model, "state": provider.status()}


def count_tokens(text: str) -> int:
    """The current provider's count (billing's TOKEN_COUNTER). May raise LLMError."""
    return get_provider().count_tokens(text)
