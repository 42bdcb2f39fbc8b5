"""Where one message's time goes: N messages in-process (Django's test client, real JWT,
PostgreSQL, the production provider: google-genai against bench/upstream.py over HTTP with an
instant reply of --chunks chunks; --local for the offline model), CPU and wall time per
message, then pyinstrument's call tree.

    python -m bench.profile_message [--messages 300] [--chunks 20] [--local]

Uses the benchmark's database (bench.run.prepare_database recreates it). The reply's run
works on a thread of its own (chat/reply/run.py): the CPU figure covers every thread of this
process, pyinstrument's tree only the request's (set-up and relay, not the run's settle).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import django

from bench.run import DB, PG, prepare_database


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--local", action="store_true", help="the offline model instead")
    args = parser.parse_args()
    prepare_database()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--chunks", str(args.chunks)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(upstream.stdout.readline().split()[1])
    try:
        run(args, port)
    finally:
        upstream.terminate()
        upstream.wait()


def run(args, port: int) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": f"{PG}/{DB}",
            "CACHE_URL": os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/9"),
            "DEBUG": "false",
            "SECRET_KEY": "profile-" + "k" * 60,
            "SECURE_SSL_REDIRECT": "false",
            "ALLOWED_HOSTS": "testserver",
            "LLM_PROVIDER": "local" if args.local else "gemini",
            "GEMINI_API_KEY": "profile-key",
            "GEMINI_BASE_URL": f"http://127.0.0.1:{port}",
            "LOCAL_LLM_CHUNKS": str(args.chunks),
            "LOCAL_LLM_CHUNK_DELAY_MS": "0",
            "MESSAGE_RATE_LIMIT_MS": "0",
            "DEFAULT_TOKEN_LIMIT": "1000000000",
            "LOG_LEVEL": "WARNING",
        }
    )
    django.setup()
    from django.test import Client
    from pyinstrument import Profiler
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User
    from chat.models import Chat

    user = User.objects.create_user(username="profiler", password="a-long-passphrase-42")
    chat = Chat.objects.create(owner=user, title="profile")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    body = json.dumps({"message": "Describe a generative art collection"})

    def one():
        response = client.post(
            f"/api/chat/{chat.pk}/message", data=body, content_type="application/json"
        )
        streamed = b"".join(response.streaming_content)
        response.close()
        if b'"done"' not in streamed or b'"error"' in streamed:
            raise SystemExit(f"the message failed: {streamed[-300:]!r}")

    for _ in range(20):  # warm up: budget row, pool, caches
        one()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(args.messages):
        one()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{args.messages} messages: {1000 * cpu / args.messages:.2f} ms CPU and "
        f"{1000 * wall / args.messages:.2f} ms wall per message (this process; PostgreSQL's "
        "own CPU is not included)"
    )
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(args.messages):
        one()
    profiler.stop()
    print(profiler.output_text(color=False, unicode=False))


if __name__ == "__main__":
    main()
