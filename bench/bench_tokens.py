"""Cost of a cached token count and of an estimate, on a 5000-character text.

python -m bench.bench_tokens        (target: each under 0.1 ms)
CACHE_URL=redis://127.0.0.1:6379/9 python -m bench.bench_tokens    (the production cache)

"cached count" is the normal case: the count is in the process's local layer. "shared-cache
hit" is a count the local layer misses (TOKEN_CACHE_LOCAL_ENTRIES=0 here) and the shared
cache has: one cache round trip, as on a node that has not seen the text yet.
"""

import os
import random
import string
import timeit

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LLM_PROVIDER", "local")
    django.setup()
    from django.conf import settings
    from django.test import override_settings

    from billing.tokens import count_text_tokens_with_source, estimate_tokens

    rng = random.Random(5000)
    text = "".join(
        rng.choice(string.ascii_letters + string.punctuation + "  ") for _ in range(5000)
    )
    print(
        f"cache={settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]}"
        f"  TOKEN_CACHE_LOCAL_ENTRIES={settings.TOKEN_CACHE_LOCAL_ENTRIES}"
    )
    count_text_tokens_with_source(text)  # fill both layers

    def measure(name: str, call, runs: int) -> None:
        best = min(timeit.repeat(call, number=runs, repeat=5)) / runs
        print(f"{name:17} {best * 1e6:8.1f} µs per call  ({best / 1e-4:.2f} x the 0.1 ms target)")

    measure("estimate", lambda: estimate_tokens(text), 20000)
    measure("cached count", lambda: count_text_tokens_with_source(text), 20000)
    with override_settings(TOKEN_CACHE_LOCAL_ENTRIES=0):
        measure("shared-cache hit", lambda: count_text_tokens_with_source(text), 2000)


if __name__ == "__main__":
    main()
