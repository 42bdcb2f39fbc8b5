"""The client's address, the same way for every throttle and lock-out.

TRUSTED_PROXY_COUNT = 0 (the default): the socket peer (REMOTE_ADDR); X-Forwarded-For is
ignored, since any client can send it. N > 0: N proxies the operator runs stand in front,
each appending the address it saw, so the client is the N-th address from the right of
X-Forwarded-For (what DRF's NUM_PROXIES does); addresses further left were sent by the
client and are never trusted.
"""

from __future__ import annotations

from django.conf import settings


def client_ip(request) -> str | None:
    remote_addr = request.META.get("REMOTE_ADDR")
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return remote_addr
    addresses = [part.strip() for part in forwarded.split(",")]
    return addresses[-min(proxies, len(addresses))] or remote_addr
