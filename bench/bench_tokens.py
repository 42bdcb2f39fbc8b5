"""Cost of a cached token count and of an estimate, on a 5000-character text.

python -m bench.bench_tokens        (target: each under 0.1 ms)
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

    from billing.tokens import count_text_tokens, estimate_tokens

    rng = random.Random(5000)
    text = "".join(
        rng.choice(string.ascii_letters + string.punctuation + "  ") for _ in range(5000)
    )
    count_text_tokens(text)  # fill the cache
    runs = 20000
    for name, call in (
        ("estimate", lambda: estimate_tokens(text)),
        ("cached count", lambda: count_text_tokens(text)),
    ):
        best = min(timeit.repeat(call, number=runs, repeat=5)) / runs
        print(
            f"{name:13} {best * 1e6:8.1f} µs per call  ({best / 1e-4:.2f} x the 0.1 ms target)"
            f"  cache={settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]}"
        )


if __name__ == "__main__":
    main()
