"""The staff back office through Django's test client."""

from django.utils import timezone
from model_bakery import baker

from billing.models import LedgerEntry, TokenBudget
from chat.models import Chat, Message
from tests.ledger import spend


def test_admin_is_refused_to_non_staff(client, user):
    client.force_login(user)
    response = client.get("/admin/chat/chat/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_chats_list_marks_soft_deleted_and_escapes_titles(staff_client, user):
    baker.make(Chat, owner=user, title="<script>alert(1)</script>")
    baker.make(Chat, owner=user, title="gone", is_active=False, deleted_at=timezone.now())
    page = staff_client.get("/admin/chat/chat/").content.decode()
    assert "SOFT-DELETED" in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    deleted_only = staff_client.get("/admin/chat/chat/?state=deleted").content.decode()
    assert "gone" in deleted_only and "alert(1)" not in deleted_only


def test_restore_action_undoes_a_soft_delete(staff_client, user):
    chat = baker.make(Chat, owner=user, is_active=False, deleted_at=timezone.now())
    response = staff_client.post(
        "/admin/chat/chat/", {"action": "restore", "_selected_action": [str(chat.pk)]}
    )
    assert response.status_code == 302
    chat.refresh_from_db()
    assert chat.is_active and chat.deleted_at is None


def test_chat_page_shows_messages_and_tokens(staff_client, user):
    chat = baker.make(Chat, owner=user)
    baker.make(Message, chat=chat, role="model", status="partial", content="half", tokens_used=42)
    page = staff_client.get(f"/admin/chat/chat/{chat.pk}/change/").content.decode()
    assert "half" in page and "Partial" in page and "42" in page


def test_messages_are_read_only(staff_client, user):
    chat = baker.make(Chat, owner=user)
    message = baker.make(Message, chat=chat, content="hello")
    assert staff_client.get("/admin/chat/message/?q=hello").status_code == 200
    assert staff_client.get("/admin/chat/message/add/").status_code == 403
    assert staff_client.post(f"/admin/chat/message/{message.pk}/delete/").status_code == 403


def test_ledger_cannot_be_added_changed_or_deleted(staff_client, user):
    spend(user, 10)
    entry = LedgerEntry.objects.get()
    assert staff_client.get("/admin/billing/ledgerentry/").status_code == 200
    assert staff_client.get("/admin/billing/ledgerentry/add/").status_code == 403
    assert staff_client.post(f"/admin/billing/ledgerentry/{entry.pk}/delete/").status_code == 403
    staff_client.post(f"/admin/billing/ledgerentry/{entry.pk}/change/", {"total": 0})
    entry.refresh_from_db()
    assert entry.total == 10


def test_usage_filters_and_actions_write_ledger_entries(
    staff_client, staff_user, user, other_user, settings
):
    settings.DEFAULT_TOKEN_LIMIT = 100
    spend(user, 90)
    spend(other_user, 10)
    above = staff_client.get("/admin/billing/tokenbudget/?usage=80").content.decode()
    assert "alice" in above and "bob" not in above

    budget = TokenBudget.objects.get(user=user)
    form = staff_client.post(
        "/admin/billing/tokenbudget/",
        {"action": "change_limit", "_selected_action": [budget.pk]},
    )
    assert form.status_code == 200 and b"New monthly token limit" in form.content
    staff_client.post(
        "/admin/billing/tokenbudget/",
        {"action": "change_limit", "_selected_action": [budget.pk], "apply": "1", "limit": 500},
    )
    budget.refresh_from_db()
    assert budget.limit == 500
    assert LedgerEntry.objects.get(kind="adjustment").actor == staff_user

    confirm = staff_client.post(
        "/admin/billing/tokenbudget/", {"action": "reset_month", "_selected_action": [budget.pk]}
    )
    assert confirm.status_code == 200 and b"Yes, reset" in confirm.content
    budget.refresh_from_db()
    assert budget.used == 90  # nothing happens before the confirming POST
    staff_client.post(
        "/admin/billing/tokenbudget/",
        {"action": "reset_month", "_selected_action": [budget.pk], "confirm": "1"},
    )
    budget.refresh_from_db()
    assert budget.used == 0
    assert LedgerEntry.objects.get(kind="reset").actor == staff_user


def test_dashboard_draws_the_chart_top_users_and_cache_stats(staff_client, user):
    spend(user, 40)
    page = staff_client.get("/admin/billing/tokenbudget/dashboard/").content.decode()
    assert "<svg" in page and 'class="bar"' in page
    assert "alice" in page and "hit rate" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
