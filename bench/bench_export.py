"""The usage export streams in constant memory: peak RSS exporting 100,000 vs 1,000,000
ledger entries through GET /api/user/token-usage/export.

DATABASE_URL=postgres://chatci@127.0.0.1:5432/money python -m bench.bench_export

It creates a database beside DATABASE_URL's (`bench_export_<name>`, migrated), writes N entries for
one user inside PostgreSQL (generate_series, 10,000 a day), then runs each export in a fresh
process and reads that process's peak RSS (ru_maxrss) before and after the request. A
streamed export holds a few chunks whatever its size: the ratio of the two peaks stays near
1 while the CSV grows 10x. `--keep` keeps the database for another run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date, timedelta

import django

PER_DAY = 10_000
URL = "/api/user/token-usage/export"


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LLM_PROVIDER", "local")
    django.setup()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def child(days: int) -> None:
    """One export of `days` days (PER_DAY entries each); prints a JSON line."""
    _setup()
    from rest_framework.test import APIClient

    from accounts.models import User

    user = User.objects.get(username="bench-export")
    client = APIClient()
    client.force_authenticate(user=user)
    # Warm up (imports, first queries) on one day, so the baseline is the idle process.
    warm = client.get(URL, {"from": "2026-01-01", "to": "2026-01-01"})
    for _ in warm.streaming_content:
        pass
    baseline = _rss_mb()
    started = time.perf_counter()
    rows = size = 0
    last = (date(2026, 1, 1) + timedelta(days=days - 1)).isoformat()
    response = client.get(URL, {"from": "2026-01-01", "to": last})
    for chunk in response.streaming_content:
        rows += chunk.count(b"\n")
        size += len(chunk)
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": rows - 1,
                "mb": size / 1e6,
                "seconds": elapsed,
                "baseline_rss_mb": baseline,
                "peak_rss_mb": _rss_mb(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child-days", type=int)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the test database")
    args = parser.parse_args()
    if args.child_days:
        child(args.child_days)
        return

    _setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to PostgreSQL: the benchmark measures the production path.")
    main_db = connection.settings_dict["NAME"]
    # A database of its own: never pytest's test_<name>, which tests may be using.
    connection.settings_dict["TEST"]["NAME"] = f"bench_export_{main_db}"
    test_db = connection.creation.create_test_db(verbosity=0, keepdb=True)
    from accounts.models import User
    from billing.models import LedgerEntry

    user, _ = User.objects.get_or_create(username="bench-export")
    existing = LedgerEntry.objects.filter(user=user).count()
    if existing != args.entries:
        LedgerEntry.objects.filter(user=user).delete()
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO billing_ledgerentry (user_id, period, kind, chat_id, message_id,
                    input_tokens, output_tokens, total, source, model, cost, currency, note,
                    created_at)
                SELECT %s, date_trunc('month', at)::date, 'exchange', gen_random_uuid(),
                    gen_random_uuid(), 900 + i %% 200, 150, 1050 + i %% 200, 'provider',
                    'gemini-2.5-flash', (900 + i %% 200) * 0.0000003 + 150 * 0.0000025, 'USD',
                    '', at
                FROM (SELECT i, timestamptz '2026-01-01 00:00:00+00'
                                + (i / %s) * interval '1 day' + (i %% %s) * interval '8 ms' AS at
                      FROM generate_series(0, %s - 1) AS i) AS rows
                """,
                [user.pk, PER_DAY, PER_DAY, args.entries],
            )
            cursor.execute("ANALYZE billing_ledgerentry")
        print(f"wrote {args.entries:,} entries in {time.perf_counter() - started:.1f} s")
    database_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + test_db
    results = {}
    try:
        for entries in (100_000, args.entries):
            out = subprocess.run(
                [sys.executable, "-m", "bench.bench_export", f"--child-days={entries // PER_DAY}"],
                env={**os.environ, "DATABASE_URL": database_url},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[entries] = json.loads(out.strip().splitlines()[-1])
            r = results[entries]
            print(
                f"{r['rows']:>9,} rows  {r['mb']:7.1f} MB of CSV  {r['seconds']:6.1f} s  "
                f"peak RSS {r['peak_rss_mb']:6.1f} MB (idle {r['baseline_rss_mb']:.1f} MB, "
                f"+{r['peak_rss_mb'] - r['baseline_rss_mb']:.1f} MB exporting)"
            )
    finally:
        if not args.keep:
            connection.creation.destroy_test_db(main_db, verbosity=0)
    small, large = results[100_000], results[args.entries]
    growth_small = small["peak_rss_mb"] - small["baseline_rss_mb"]
    growth_large = large["peak_rss_mb"] - large["baseline_rss_mb"]
    print(
        f"CSV size ratio {large['mb'] / small['mb']:.1f}x; peak RSS ratio "
        f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x; growth over the idle process "
        f"{growth_large:.1f} MB vs {growth_small:.1f} MB"
    )


if __name__ == "__main__":
    main()
