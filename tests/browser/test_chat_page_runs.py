"""The issue's browser test: through a live gunicorn, the chat page is reloaded mid-reply,
picks the reply up again and sees it finish; then Stop ends another reply. Needs the
server-side runs (a reply outlives its connection) and PostgreSQL (a second process on the
test database)."""

import re
import uuid

import httpx
import pytest

from billing.models import LedgerEntry
from chat.models import Message
from tests.browser.steps import PASSWORD, log_in, new_chat, send
from tests.fakes.gemini import Script
from tests.live import live_gunicorn, wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

LONG = [f"w{i:02d} " for i in range(40)]  # 40 chunks, 100 ms apart: 4 s
ENDLESS = [f"s{i:03d} " for i in range(300)]  # 30 s: it is stopped long before


def words(text: str) -> str:
    return " ".join(text.split())


def test_a_reply_survives_a_reload_and_another_is_stopped(page, tmp_path, fake_gemini):
    fake_gemini.script(
        Script(chunks=LONG, delay_ms=100, usage=(20, 40)),
        Script(chunks=ENDLESS, delay_ms=100, usage=(20, 300)),
    )
    env = {
        "LLM_PROVIDER": "gemini",
        "GEMINI_API_KEY": "test-key-not-secret",
        "GEMINI_BASE_URL": fake_gemini.url,
        "GEMINI_TIMEOUT_MS": "5000",
    }
    violations = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    with live_gunicorn(env=env, tmp_path=tmp_path, workers=2) as server:
        username = f"u{uuid.uuid4().hex[:10]}"
        httpx.post(
            f"{server.url}/api/auth/register",
            json={"username": username, "password": PASSWORD},
        ).raise_for_status()
        log_in(page, server.url, username)
        new_chat(page, "Resume me")

        # 1. Reload mid-reply: the page comes back logged in, in this chat, and follows the
        # reply (Stop shown, no `done` yet) until it finishes, with every word in order.
        reply = send(page, "tell me a long story")
        wait_until(lambda: "w05" in reply.inner_text(), timeout=10, message="a few chunks")
        page.reload()
        page.wait_for_selector("#chat-title:has-text('Resume me')")
        reply = page.locator("#messages li.model").last
        page.wait_for_selector("#stop", state="visible", timeout=5000)
        assert reply.locator(".meta").count() == 0  # still being written
        resumed_at = words(reply.locator(".text").inner_text())
        reply.locator(".meta").wait_for(timeout=15_000)
        shown = words(reply.locator(".text").inner_text())
        assert shown == words("".join(LONG))
        assert len(resumed_at.split()) < len(LONG)  # it was picked up mid-reply
        assert page.is_hidden("#stop") and page.is_enabled("#send")
        stored = Message.objects.get(chat__title="Resume me", role="model")
        assert (stored.status, stored.finish_reason) == ("complete", "stop")
        assert words(stored.content) == shown
        billed = LedgerEntry.objects.filter(message_id=stored.pk, kind="exchange")
        assert [(e.source, e.output_tokens) for e in billed] == [("provider", 40)]

        # 2. Stop another reply: the page shows it stopped, with the text the server kept.
        reply = send(page, "and another one, please")
        wait_until(lambda: "s003" in reply.inner_text(), timeout=10, message="a few chunks")
        page.click("#stop")
        meta = reply.locator(".meta")
        meta.wait_for(timeout=10_000)
        assert "stopped" in meta.inner_text()
        assert re.search(r"\d+ tokens", meta.inner_text())
        assert page.is_hidden("#stop") and page.is_enabled("#send")
        stopped = Message.objects.filter(chat__title="Resume me", role="model").latest("created_at")
        assert stopped.finish_reason == "stopped"
        shown = words(reply.locator(".text").inner_text())
        assert shown == words(stopped.content)
        assert 3 < len(shown.split()) < len(ENDLESS)
        assert LedgerEntry.objects.filter(message_id=stopped.pk, kind="exchange").count() == 1

        # 3. After a reload, the stopped reply is shown as it was kept.
        page.reload()
        page.wait_for_selector("#chat-title:has-text('Resume me')")
        last = page.locator("#messages li.model").last
        last.locator(".meta").wait_for()
        assert words(last.locator(".text").inner_text()) == words(stopped.content)
        assert "stopped" in last.locator(".meta").inner_text()
    assert violations == []
