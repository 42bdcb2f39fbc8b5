"""Users for the benchmark, made directly in its database (registering a thousand users over
HTTP would spend minutes hashing passwords): one chat per user, the month's budget row opened
(as after a user's first message), and an access token per user signed with the service's key.

    python -m bench.fixtures <count>    (with the service's environment) -> JSON on stdout:
    [[chat_path, {"Authorization": "Bearer ..."}], ...]
"""

from __future__ import annotations

import json
import sys
import time

import django


def main() -> None:
    count = int(sys.argv[1])
    django.setup()
    from django.conf import settings
    from django.contrib.auth.hashers import make_password
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User
    from billing.models import TokenBudget
    from billing.periods import current_period
    from chat.models import Chat

    stamp = int(time.time() * 1000) % 10**9
    password = make_password("bench-passphrase-42")
    users = User.objects.bulk_create(
        [User(username=f"bench{i}_{stamp}", password=password) for i in range(count)]
    )
    chats = Chat.objects.bulk_create([Chat(owner=user, title="bench") for user in users])
    TokenBudget.objects.bulk_create(
        [
            TokenBudget(user=user, period=current_period(), limit=settings.DEFAULT_TOKEN_LIMIT)
            for user in users
        ]
    )
    jobs = [
        [f"/api/chat/{chat.pk}/message", {"Authorization": f"Bearer {AccessToken.for_user(user)}"}]
        for user, chat in zip(users, chats, strict=True)
    ]
    json.dump(jobs, sys.stdout)


if __name__ == "__main__":
    main()
