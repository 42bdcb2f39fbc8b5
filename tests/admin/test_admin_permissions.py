"""The back office under attack (issue 12): view-only staff, limits, deletes, the lists."""

import logging
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from model_bakery import baker

from billing.exceptions import LimitBelowUsed
from billing.models import LedgerEntry, TokenBudget
from billing.services import get_budget, reserve_tokens, set_monthly_limit, settle_reservation
from billing.usage import Usage
from chat.models import Chat, Message
from tests.ledger import spend


def staff_with(client, *codenames):
    """A logged-in staff user (not a superuser) holding exactly these permissions."""
    member = baker.make("accounts.User", username="viewer", is_staff=True)
    for codename in codenames:
        app_label, name = codename.split(".")
        member.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=name)
        )
    client.force_login(member)
    return member


# --- 3. view-only staff cannot run the actions that change data --------------------------


def test_view_only_staff_cannot_change_a_limit_or_reset_a_month(client, user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 100_000
    spend(user, 50)
    budget = TokenBudget.objects.get(user=user)
    staff_with(client, "billing.view_tokenbudget")

    page = client.get("/admin/billing/tokenbudget/")
    assert page.status_code == 200
    assert b"change_limit" not in page.content and b"reset_month" not in page.content
    for action in (
        {"action": "change_limit", "apply": "1", "limit": 999_999_999},
        {"action": "reset_month", "confirm": "1"},
    ):
        client.post("/admin/billing/tokenbudget/", {**action, "_selected_action": [budget.pk]})
    budget.refresh_from_db()
    assert (budget.limit, budget.used) == (100_000, 50)
    assert not LedgerEntry.objects.exclude(kind="exchange").exists()
    assert client.get(f"/admin/billing/tokenbudget/set-limit/{user.pk}/").status_code == 403
    client.post(f"/admin/billing/tokenbudget/set-limit/{user.pk}/", {"limit": 999_999_999})
    budget.refresh_from_db()
    assert budget.limit == 100_000


def test_view_only_staff_cannot_restore_a_chat(client, user):
    chat = baker.make(Chat, owner=user, is_active=False, deleted_at=timezone.now())
    staff_with(client, "chat.view_chat")
    assert b"restore" not in client.get("/admin/chat/chat/").content
    client.post("/admin/chat/chat/", {"action": "restore", "_selected_action": [str(chat.pk)]})
    chat.refresh_from_db()
    assert not chat.is_active


def test_staff_with_the_change_permission_runs_the_actions(client, user):
    spend(user, 50)
    budget = TokenBudget.objects.get(user=user)
    chat = baker.make(Chat, owner=user, is_active=False, deleted_at=timezone.now())
    staff_with(
        client,
        "billing.view_tokenbudget",
        "billing.change_tokenbudget",
        "chat.view_chat",
        "chat.change_chat",
    )
    client.post(
        "/admin/billing/tokenbudget/",
        {"action": "reset_month", "_selected_action": [budget.pk], "confirm": "1"},
    )
    client.post("/admin/chat/chat/", {"action": "restore", "_selected_action": [str(chat.pk)]})
    budget.refresh_from_db()
    chat.refresh_from_db()
    assert budget.used == 0 and chat.is_active


def test_changing_a_limit_asks_for_confirmation_first(staff_client, user):
    spend(user, 50)
    budget = TokenBudget.objects.get(user=user)
    page = staff_client.post(
        "/admin/billing/tokenbudget/",
        {"action": "change_limit", "_selected_action": [budget.pk], "limit": 500},
    )
    assert page.status_code == 200 and b"Change limit" in page.content
    assert b"alice" in page.content
    budget.refresh_from_db()
    assert budget.limit != 500 and not LedgerEntry.objects.filter(kind="adjustment").exists()


# --- 8. one way to change a limit ------------------------------------------------------------


def test_the_user_page_cannot_change_the_limit_by_saving_the_field(staff_client, user):
    get_budget(user=user)
    page = staff_client.get(f"/admin/accounts/user/{user.pk}/change/").content.decode()
    assert 'name="monthly_token_limit"' not in page
    assert f"/admin/billing/tokenbudget/set-limit/{user.pk}/" in page
    staff_client.post(
        f"/admin/accounts/user/{user.pk}/change/",
        {
            "username": user.username,
            "email": user.email,
            "is_active": "on",
            "monthly_token_limit": 5,
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    user.refresh_from_db()
    assert user.monthly_token_limit is None


def test_the_user_page_link_changes_the_limit_now_with_a_ledger_entry(
    staff_client, staff_user, user, api_client
):
    spend(user, 50)
    response = staff_client.post(
        f"/admin/billing/tokenbudget/set-limit/{user.pk}/", {"limit": 1234}
    )
    assert response.status_code == 302
    budget = TokenBudget.objects.get(user=user)
    assert budget.limit == 1234  # this month, at once
    entry = LedgerEntry.objects.get(kind="adjustment")
    assert entry.actor == staff_user and entry.total == 0 and "-> 1234" in entry.note
    api_client.force_authenticate(user)
    usage = api_client.get("/api/user/token-usage").json()["data"]
    assert (usage["limit"], usage["remaining"]) == (1234, 1234 - 50)


def test_the_set_limit_page_works_for_a_user_with_no_budget_yet(staff_client, user):
    page = staff_client.get(f"/admin/billing/tokenbudget/set-limit/{user.pk}/")
    assert page.status_code == 200 and b"used 0" in page.content
    assert not TokenBudget.objects.exists()  # looking opens nothing


def test_a_limit_below_used_is_refused(staff_client, user, staff_user):
    spend(user, 50)
    with pytest.raises(LimitBelowUsed) as refused:
        set_monthly_limit(user=user, limit=49, actor=staff_user)
    assert refused.value.details == {"limit": 49, "used": 50}
    page = staff_client.post(f"/admin/billing/tokenbudget/set-limit/{user.pk}/", {"limit": 10})
    assert page.status_code == 200 and b"already used 50 tokens" in page.content
    budget = TokenBudget.objects.get(user=user)
    staff_client.post(
        "/admin/billing/tokenbudget/",
        {"action": "change_limit", "_selected_action": [budget.pk], "apply": "1", "limit": 10},
    )
    budget.refresh_from_db()
    assert budget.limit != 10 and not LedgerEntry.objects.filter(kind="adjustment").exists()
    # Equal to used is allowed: the user has nothing left this month.
    assert set_monthly_limit(user=user, limit=50, actor=staff_user).remaining == 0


# --- 10. soft delete from the admin, the messages list, the dashboard ----------------------


def test_deleting_a_chat_in_the_admin_is_the_soft_delete(staff_client, user):
    chat = baker.make(Chat, owner=user, title="doomed")
    baker.make(Message, chat=chat, content="keep me")
    confirm = staff_client.get(f"/admin/chat/chat/{chat.pk}/delete/")
    assert confirm.status_code == 200 and b"permission" not in confirm.content
    response = staff_client.post(f"/admin/chat/chat/{chat.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    chat.refresh_from_db()
    assert not chat.is_active and chat.deleted_at is not None
    assert Message.objects.filter(chat=chat, content="keep me").exists()


def test_bulk_deleting_chats_in_the_admin_is_the_soft_delete(staff_client, user):
    chats = [baker.make(Chat, owner=user, title=f"c{i}") for i in range(2)]
    baker.make(Message, chat=chats[0])
    selected = {"action": "delete_selected", "_selected_action": [str(c.pk) for c in chats]}
    confirm = staff_client.post("/admin/chat/chat/", selected)
    assert confirm.status_code == 200 and b"permission" not in confirm.content
    staff_client.post("/admin/chat/chat/", {**selected, "post": "yes"})
    assert Chat.objects.filter(is_active=False, deleted_at__isnull=False).count() == 2
    assert Message.objects.count() == 1


def test_messages_list_shows_content_and_user_newest_first(staff_client, user):
    chat = baker.make(Chat, owner=user)
    old = baker.make(Message, chat=chat, content="the older message")
    new = baker.make(Message, chat=chat, content="the newer message")
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(1))
    page = staff_client.get("/admin/chat/message/").content.decode()
    assert "the older message" in page and "the newer message" in page and "alice" in page
    assert page.index("the newer message") < page.index("the older message")
    assert new.pk


def test_dashboard_numbers_have_thousands_separators(staff_client, user, settings):
    settings.DEFAULT_TOKEN_LIMIT = 2_000_000
    spend(user, 1_234_567)
    page = staff_client.get("/admin/billing/tokenbudget/dashboard/").content.decode()
    assert "1,234,567" in page and "2,000,000" in page


# --- Noted: usage over the limit is logged and shown to staff -------------------------------


def test_clamped_usage_is_logged_and_shown_in_the_ledger_admin(
    staff_client, user, settings, caplog
):
    settings.DEFAULT_TOKEN_LIMIT = 100
    hold = reserve_tokens(user=user, input_tokens=10, max_output_tokens=10)
    with caplog.at_level(logging.WARNING, logger="billing.services"):
        settle_reservation(
            reservation_id=hold.pk,
            chat_id=uuid.uuid4(),
            message_id=uuid.uuid4(),
            usage=Usage(60, 1_500),
        )
    entry = LedgerEntry.objects.get()
    assert entry.total == 100 and entry.note == "clamped to the limit"
    warning = next(r for r in caplog.records if "clamped" in r.getMessage())
    assert str(user.pk) in warning.getMessage() and "1560" in warning.getMessage()
    page = staff_client.get("/admin/billing/ledgerentry/").content.decode()
    assert "+1,460" in page
