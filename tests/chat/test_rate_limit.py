"""The message rate limit is atomic: of many parallel attempts exactly one passes per window,
on the local-memory cache (threads in one process) and on Redis shared by two live nodes."""

import concurrent.futures
import contextlib
import itertools
import os
import threading
import time
import uuid

import httpx
import pytest
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from model_bakery import baker

from chat.exceptions import RateLimited
from chat.models import Message
from chat.ratelimit import check_rate_limit
from tests.live import live_gunicorn, wait_until

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL")
# Wide enough that 50 threads reach the check within one window on a loaded machine (at
# 300 ms, with a load average of 10 on 2 cores, two Redis attempts a window apart passed).
WINDOW_MS = 1000


def attempts_that_pass(user, count: int) -> int:
    """`count` threads call check_rate_limit at the same instant; how many were let through."""
    barrier = threading.Barrier(count)

    def attempt():
        barrier.wait()
        try:
            check_rate_limit(user=user, window_ms=WINDOW_MS)
        except RateLimited:
            return False
        return True

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        return sum(pool.map(lambda _: attempt(), range(count)))


@pytest.fixture(
    params=[
        "locmem",
        pytest.param(
            "redis",
            marks=pytest.mark.skipif(not REDIS_TEST_URL, reason="set REDIS_TEST_URL to run"),
        ),
    ]
)
def cache_backend(request, settings):
    prefix = f"test-ratelimit-{uuid.uuid4().hex}"
    if request.param == "redis":
        backend = {
            "BACKEND": "config.cache.SharedRedisCache",
            "LOCATION": REDIS_TEST_URL,
        }
    else:
        backend = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": prefix}
    settings.CACHES = {DEFAULT_CACHE_ALIAS: {**backend, "KEY_PREFIX": prefix}}
    yield request.param
    if request.param == "redis":
        client = caches[DEFAULT_CACHE_ALIAS]._cache.get_client(write=True)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


@pytest.mark.django_db
def test_fifty_threads_exactly_one_passes_per_window(cache_backend):
    user = baker.make("accounts.User")
    for _ in range(5):
        assert attempts_that_pass(user, 50) == 1
        # The next round once this window is over (it began before the attempts returned).
        ends = time.monotonic() + WINDOW_MS / 1000
        wait_until(lambda ends=ends: time.monotonic() > ends, timeout=5)


@pytest.mark.django_db
def test_retry_after_is_what_is_left_of_the_window_in_whole_seconds(cache_backend):
    user = baker.make("accounts.User")
    check_rate_limit(user=user, window_ms=2500)
    with pytest.raises(RateLimited) as refused:
        check_rate_limit(user=user, window_ms=2500)
    assert refused.value.headers["Retry-After"] == "3"
    other = baker.make("accounts.User")
    check_rate_limit(user=other, window_ms=2500)  # per user


@pytest.mark.django_db
def test_a_window_of_zero_is_no_limit(cache_backend):
    user = baker.make("accounts.User")
    for _ in range(3):
        check_rate_limit(user=user, window_ms=0)


@pytest.mark.django_db
@pytest.mark.skipif(not REDIS_TEST_URL, reason="set REDIS_TEST_URL to run")
def test_on_redis_claims_from_many_threads_share_one_connection(settings):
    """Django's cache object is per thread (with gevent, per request): the claim must not
    open a Redis connection for each of them."""
    settings.CACHES = {
        DEFAULT_CACHE_ALIAS: {
            "BACKEND": "config.cache.SharedRedisCache",
            "LOCATION": REDIS_TEST_URL,
            "KEY_PREFIX": f"test-ratelimit-{uuid.uuid4().hex}",
        }
    }
    users = baker.make("accounts.User", _quantity=20)
    one_at_a_time = threading.Lock()
    all_claimed = threading.Barrier(len(users) + 1)

    def claim(user):
        with one_at_a_time:
            check_rate_limit(user=user, window_ms=WINDOW_MS)
        all_claimed.wait()  # every thread, and its cache object, alive until counted

    def sockets() -> set:
        """This process's open sockets (Linux: /proc/self/fd)."""
        found = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if (target := os.readlink(f"/proc/self/fd/{fd}")).startswith("socket:"):
                    found.add(target)
        return found

    before = sockets()
    threads = [threading.Thread(target=claim, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    all_claimed.wait(timeout=30)
    opened = sockets() - before
    for thread in threads:
        thread.join(timeout=30)
    # At most the one connection of a new pool (this process may have one already); 20
    # before, one per thread.
    assert len(opened) <= 1


# --- through two live gunicorn nodes sharing Redis ---------------------------------------

# Wide enough that all 50 attempts of a round reach the check within it on a loaded 2-core
# machine (their answers took 0.1-0.5 s there), so a second pass is a real failure. The
# test takes about 50 s.
LIVE_WINDOW_MS = 1000
PARALLEL = 50
CLAIM_TO_ROW_SLACK_S = 0.3
ROUNDS = 20


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.skipif(not REDIS_TEST_URL, reason="set REDIS_TEST_URL to run")
@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_messages_to_two_nodes_one_passes_per_window(tmp_path):
    from tests.ledger import assert_books_balance
    from tests.live import create_chat, make_user_and_token

    env = {
        "CACHE_URL": REDIS_TEST_URL,
        "MESSAGE_RATE_LIMIT_MS": str(LIVE_WINDOW_MS),
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNK_DELAY_MS": "0",
        "MAX_CHATS_PER_USER": str(PARALLEL),
    }
    with (
        live_gunicorn(env=env, tmp_path=tmp_path) as node_a,
        live_gunicorn(env=env, tmp_path=tmp_path) as node_b,
    ):
        username, headers = make_user_and_token(node_a)
        # A chat each, so the attempts do not queue on one chat's row lock.
        chats = [create_chat(node_a, headers) for _ in range(PARALLEL)]
        nodes = [node_a.url, node_b.url] * (PARALLEL // 2)
        clients = [httpx.Client(base_url=url, headers=headers, timeout=30) for url in nodes]
        passed_per_round = []
        barrier = threading.Barrier(PARALLEL)

        def attempt(index):
            barrier.wait()
            response = clients[index].post(
                f"/api/chat/{chats[index]}/message", json={"message": "me first"}
            )
            return response.status_code, time.monotonic(), response

        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL) as pool:
                # Open every keep-alive connection first, so a round's attempts arrive
                # together rather than behind 50 TCP handshakes.
                for warm in pool.map(lambda client: client.get("/api/chat"), clients):
                    assert warm.status_code == 200
                # ...and let each node send one message first, one window apart: the first
                # message in a process does one-time work (provider, system prompt count,
                # Redis connections) that would spread the first round over more than a window.
                for client, chat_id in zip(clients[:2], chats[:2], strict=True):
                    sent = client.post(f"/api/chat/{chat_id}/message", json={"message": "hi"})
                    assert sent.status_code == 200
                    ends = time.monotonic() + LIVE_WINDOW_MS / 1000
                    wait_until(lambda ends=ends: time.monotonic() > ends, timeout=10)
                for _ in range(ROUNDS):
                    results = list(pool.map(attempt, range(PARALLEL)))
                    statuses = [status for status, _, _ in results]
                    assert set(statuses) <= {200, 429}, statuses
                    refused = [r for status, _, r in results if status == 429]
                    assert all(r.json()["error"]["code"] == "rate_limited" for r in refused)
                    passed_per_round.append(statuses.count(200))
                    # The window began before the accepted reply's answer arrived: wait
                    # until it is over before the next round.
                    ends = max(at for _, at, _ in results) + LIVE_WINDOW_MS / 1000
                    wait_until(lambda ends=ends: time.monotonic() > ends, timeout=10)
        finally:
            for client in clients:
                client.close()

    # Exactly one per window: every round let one through, and no two messages were ever
    # accepted within one window of each other. (Under heavy load a round's 50 attempts can
    # spread over more than a window; a second pass is then in the next window. Each pass's
    # message row is written a few ms after its claim: CLAIM_TO_ROW_SLACK_S allows for that.)
    assert min(passed_per_round) == 1, passed_per_round
    accepted = list(
        Message.objects.filter(chat__owner__username=username, role="user")
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    assert len(accepted) == sum(passed_per_round) + 2  # and the two warm-up messages
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(accepted)]
    assert min(gaps) > LIVE_WINDOW_MS / 1000 - CLAIM_TO_ROW_SLACK_S, sorted(gaps)[:3]
    assert_books_balance(username)
