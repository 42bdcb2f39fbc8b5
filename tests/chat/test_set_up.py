"""The message set-up's rules on both paths (PostgreSQL: one statement; SQLite: the ORM
transaction): the hold is made from the history's estimate, and a refusal that comes before
the rate limit neither uses its window nor loses to it."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from model_bakery import baker

from billing.models import TokenReservation
from billing.tokens import count_system_prompt_tokens, estimate_input_tokens
from chat.llm import get_provider
from chat.models import Chat, Message
from chat.reply.setup import set_up_reply
from chat.selectors import recent_turns

pytestmark = pytest.mark.django_db

# Texts whose estimate depends on what counts as a word character in every script.
TEXTS = [
    "Hello, world!",
    "Ein Künstler… «Ölgemälde» — ça coûte 3½ €?",
    "日本語のテキスト。絵画、写真！",  # noqa: RUF001 - full-width punctuation on purpose
    "🎨🖼️ emoji art ✨✨✨ (combining: é) ²³ Ⅻ",
    "!" * 30 + "a" * 3000,
    "plain words " * 400 + "?!" * 40,
    "",  # left out of the history
    "\x1c\x1f\x7f tabs\tand\nnewlines",
]


@pytest.fixture(autouse=True)
def _offline_model(settings):
    settings.LLM_PROVIDER = "local"
    settings.MESSAGE_RATE_LIMIT_MS = 0
    settings.CONTEXT_MESSAGES = 6


def test_the_hold_is_made_from_the_history_the_reply_is_given(user, settings):
    chat = baker.make(Chat, owner=user)
    start = timezone.now() - timedelta(hours=1)
    for i, text in enumerate(TEXTS * 2):
        message = Message.objects.create(
            chat=chat, role="user" if i % 2 == 0 else "model", content=text, status="complete"
        )
        Message.objects.filter(pk=message.pk).update(created_at=start + timedelta(seconds=i))
    history = recent_turns(chat=chat, limit=settings.CONTEXT_MESSAGES)
    message = "Und jetzt? ¿Qué más? 🙂"
    expected = estimate_input_tokens(
        system_tokens=count_system_prompt_tokens(),
        history_texts=[turn.text for turn in history],
        message=message,
    )

    exchange = set_up_reply(user=user, chat_id=str(chat.pk), text=message, provider=get_provider())

    assert exchange.history == history
    assert exchange.input_estimate == expected
    hold = TokenReservation.objects.get(pk=exchange.reservation_id)
    assert hold.amount == expected + hold.output_cap
    assert hold.output_cap == exchange.output_cap == settings.GEMINI_MAX_OUTPUT_TOKENS
    question, reply = Message.objects.filter(chat=chat).order_by("-created_at")[:2][::-1]
    assert (question.pk, question.content, question.status) == (
        exchange.user_message_id,
        message,
        "complete",
    )
    assert (reply.pk, reply.status, reply.reply_to_id, reply.reservation_id) == (
        exchange.reply_id,
        "streaming",
        question.pk,
        hold.pk,
    )
    assert reply.heartbeat_at is not None and reply.created_at > question.created_at


@pytest.mark.postgres
def test_a_long_chats_set_up_reads_only_the_messages_it_gives_the_model(user, settings):
    """The history was once joined to the checks' row: PostgreSQL then read and sorted the
    whole chat at every message (4.2 ms of the statement's execution for a chat of 1,800
    messages, against 1.6 ms reading the last ones by the (chat, created_at) index)."""
    chat = baker.make(Chat, owner=user)
    Message.objects.bulk_create(
        Message(chat=chat, role="user", content=f"turn {n}", status="complete") for n in range(300)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE chat_message")
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        set_up_reply(user=user, chat_id=str(chat.pk), text="hello", provider=get_provider())
    sql, params = [(sql, params) for sql, params in statements if "history AS" in sql][-1]
    Message.objects.filter(chat=chat, status="streaming").update(status="complete")

    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}",
            {**params, "question": uuid.uuid4(), "reply": uuid.uuid4()},
        )
        [plan] = cursor.fetchone()[0]
    read = [
        node["Actual Rows"]
        for node in _plan_nodes(plan["Plan"])
        if node.get("Relation Name") == "chat_message" and "Scan" in node["Node Type"]
    ]
    assert read and max(read) == settings.CONTEXT_MESSAGES


def _plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def test_the_output_cap_is_what_the_budget_has_left(user, settings):
    chat = baker.make(Chat, owner=user)
    history = []
    expected = estimate_input_tokens(
        system_tokens=count_system_prompt_tokens(),
        history_texts=[turn.text for turn in history],
        message="hi",
    )
    settings.DEFAULT_TOKEN_LIMIT = expected + 7

    exchange = set_up_reply(user=user, chat_id=str(chat.pk), text="hi", provider=get_provider())

    assert exchange.output_cap == 7 and exchange.budget_capped


@pytest.mark.django_db(transaction=True)
def test_refusals_before_the_rate_limit_neither_use_its_window_nor_lose_to_it(
    auth_client, user, settings
):
    settings.MESSAGE_RATE_LIMIT_MS = 60_000
    chat = baker.make(Chat, owner=user)
    deleted = baker.make(Chat, owner=user, is_active=False, deleted_at=timezone.now())

    def send(chat_id):
        return auth_client.post(f"/api/chat/{chat_id}/message", {"message": "hello"}, format="json")

    assert send(deleted.pk).status_code == 404  # the window is not used by it
    first = send(chat.pk)
    assert first.status_code == 200
    b"".join(first.streaming_content)
    assert send(deleted.pk).status_code == 404  # not 429: the chat's check comes first
    assert send(chat.pk).status_code == 429


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_set_ups_hold_one_reply_per_chat_and_never_overspend(settings):
    from billing.exceptions import BudgetExceeded
    from billing.models import TokenBudget
    from billing.services import get_budget
    from chat.exceptions import ReplyInProgress
    from tests.concurrency import together

    user = baker.make("accounts.User")
    one_hold = (
        estimate_input_tokens(
            system_tokens=count_system_prompt_tokens(), history_texts=(), message="hi"
        )
        + settings.GEMINI_MAX_OUTPUT_TOKENS
    )
    settings.DEFAULT_TOKEN_LIMIT = 3 * one_hold
    get_budget(user=user)
    chats = [baker.make(Chat, owner=user) for _ in range(6)]
    provider = get_provider()

    def set_up(chat):
        return lambda: set_up_reply(user=user, chat_id=str(chat.pk), text="hi", provider=provider)

    # two set-ups on each of 6 chats at once: one reply per chat at most, 3 holds in all
    results = together(*[set_up(chat) for chat in chats for _ in range(2)])

    made = [r for r in results if not isinstance(r, Exception)]
    assert len(made) == 3
    assert all(isinstance(r, ReplyInProgress | BudgetExceeded) for r in results if r not in made)
    assert len({exchange.chat_id for exchange in made}) == 3
    assert TokenBudget.objects.get(user=user).reserved == 3 * one_hold
    assert Message.objects.filter(status="streaming").count() == 3
    assert Message.objects.filter(role="user").count() == 3
