"""A person's path through the product in a real browser: the chat page streams a reply,
the admin shows and restores a soft-deleted chat, the dashboard draws its chart."""

import time
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from billing.models import LedgerEntry, ModelPrice
from billing.prices import format_amount
from chat.models import Chat

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-passphrase-42"


@pytest.fixture
def person(django_user_model):
    return django_user_model.objects.create_user("dana", "dana@example.com", PASSWORD)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("boss", "boss@example.com", PASSWORD)


@pytest.fixture(autouse=True)
def _slow_offline_model(settings):
    settings.LLM_PROVIDER = "local"
    settings.LOCAL_LLM_CHUNKS = 8
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 150
    settings.MESSAGE_RATE_LIMIT_MS = 0


def poll(predicate, timeout=15.0, interval=0.03):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {predicate}")


def test_chat_page_streams_a_reply_and_admin_dashboard(page, live_server, person, staff, tmp_path):
    # A price for the offline model, so the dashboard has money to draw (the table is
    # emptied between browser tests, which commit their data).
    ModelPrice.objects.create(
        model="local-echo-1",
        input_per_million=Decimal("100"),
        output_per_million=Decimal("300"),
        effective_from=timezone.now() - timedelta(days=1),
    )
    page.goto(f"{live_server.url}/")
    page.fill("input[name=username]", "dana")
    page.fill("input[name=password]", PASSWORD)
    assert page.is_visible("#login-panel") and not page.is_visible("#app")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app", state="visible")
    assert not page.is_visible("#login-panel")  # what a person sees, not just attributes
    poll(lambda: "left of" in page.inner_text("#budget"))
    budget_before = page.inner_text("#budget")

    page.fill("#new-title", "Fox collection")
    page.click("#new-chat")
    page.wait_for_selector("#chat-title:has-text('Fox collection')")
    page.wait_for_selector("#chats li.active")

    page.fill("#message", "Ideas for a pixel-art fox collection?")
    page.click("#send")
    reply = page.locator("#messages li.model").last
    seen = []

    def done():
        text = reply.locator(".text").inner_text()
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        return reply.locator(".meta").count() > 0

    poll(done)
    final = reply.locator(".text").inner_text()
    assert len(seen) >= 3, f"the reply appeared in {len(seen)} step(s): {seen}"
    assert all(final.startswith(step) for step in seen)  # it grew, chunk by chunk
    assert "tokens" in reply.locator(".meta").inner_text()
    poll(lambda: page.inner_text("#budget") != budget_before)
    page.screenshot(path=str(tmp_path / "chat-page.png"), full_page=True)

    # The chat is soft-deleted through the API; staff see it marked, then restore it.
    chat = Chat.objects.get(title="Fox collection")
    token = httpx.post(
        f"{live_server.url}/api/auth/token", json={"username": "dana", "password": PASSWORD}
    ).json()["data"]["access"]
    deleted = httpx.delete(
        f"{live_server.url}/api/chat/{chat.pk}", headers={"Authorization": f"Bearer {token}"}
    )
    assert deleted.status_code == 200

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/chat/chat/?q=Fox")
    row = page.locator("#result_list tbody tr", has_text="Fox collection")
    assert "SOFT-DELETED" in row.inner_text()
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "restore")
    page.click("button[name=index]")
    page.wait_for_selector("text=Restored 1 chat(s).")
    chat.refresh_from_db()
    assert chat.is_active
    assert (
        "SOFT-DELETED"
        not in page.locator("#result_list tbody tr", has_text="Fox collection").inner_text()
    )

    page.goto(f"{live_server.url}/admin/")
    page.click("#dashboard-link")
    page.wait_for_selector("#tokens-chart svg.usage-chart rect.bar", state="attached")
    bars = page.locator("#tokens-chart svg.usage-chart rect.bar")
    assert bars.count() == 30
    heights = [float(bars.nth(i).get_attribute("height")) for i in range(30)]
    assert heights[-1] > 0  # today's tokens are drawn
    assert "dana" in page.inner_text("#top-users")
    # Cost beside the tokens: today's bar is drawn, dana leads the top users by cost.
    cost_bars = page.locator("#cost-chart svg.usage-chart rect.bar")
    assert cost_bars.count() == 30
    assert float(cost_bars.nth(29).get_attribute("height")) > 0
    spent = LedgerEntry.objects.get(kind="exchange").cost
    assert spent > 0
    by_cost = page.locator("#top-users-by-cost tbody tr").first
    assert "dana" in by_cost.inner_text()
    assert f"{format_amount(spent)} USD" in by_cost.locator("td.cost").inner_text()
    assert page.locator("#cost-chart").is_visible()
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    print(f"screenshots: {tmp_path / 'chat-page.png'} {tmp_path / 'dashboard.png'}")


def test_chat_page_on_a_phone_shows_clear_errors(browser, live_server, person, settings, tmp_path):
    settings.MESSAGE_RATE_LIMIT_MS = 60_000
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/")
        page.fill("input[name=username]", "dana")
        page.fill("input[name=password]", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#app", state="visible")
        page.click("#new-chat")
        page.wait_for_selector("#send-form", state="visible")
        page.fill("#message", "first")
        page.click("#send")
        page.wait_for_selector("#messages li.model .meta")
        page.fill("#message", "second, too soon")
        page.click("#send")
        page.wait_for_selector("#notice", state="visible")
        assert "too quickly" in page.inner_text("#notice")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing overflows a phone-sized screen
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'phone.png'}")
    finally:
        context.close()


def test_the_page_counts_message_length_in_code_points_like_the_api(
    page, live_server, person, settings
):
    """5,000 is the API's limit in code points; an emoji is one code point, two UTF-16 units
    (what `maxlength` counted, so the page cut a message the API accepts)."""
    from chat.models import Message

    settings.MAX_TOKENS_PER_MESSAGE = 5000
    page.goto(f"{live_server.url}/")
    page.fill("input[name=username]", "dana")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app", state="visible")
    page.fill("#new-title", "Emoji")
    page.click("#new-chat")
    page.wait_for_selector("#chats li.active")

    emoji = "\U0001f642" * 2600  # 2,600 code points, 5,200 UTF-16 units
    page.fill("#message", emoji)
    page.click("#send")
    poll(lambda: Message.objects.filter(role="user").exists())
    assert Message.objects.get(role="user").content == emoji  # sent whole

    poll(lambda: not page.is_disabled("#send"))
    page.fill("#message", "a" * 5001)
    page.click("#send")
    page.wait_for_selector("#notice:has-text('the limit is 5,000')")
    assert Message.objects.filter(role="user").count() == 1  # refused before sending
