"""Where a message's CPU goes on the production path, under load: gunicorn (the production
conf: gevent) with the Gemini provider against bench/upstream.py, the throughput load of
`bench.run` (distinct users, 32 at once), and py-spy sampling every worker. Prints the
functions with the most CPU per message, cumulative (the function and what it calls) and
self, in milliseconds per message.

    python -m bench.profile_live [--seconds 20] [--chunks 20] [--rate 250] [--top 40]

py-spy must be able to attach (root, or ptrace allowed); `make bench` installs it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import time
from pathlib import Path

from bench.run import (
    RESULTS,
    gunicorn,
    make_jobs,
    paced_messages,
    prepare_database,
    process_tree,
    server_env,
    upstream,
    warm_up,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--gil",
        action="store_true",
        help="only samples holding the GIL: Python's own CPU, without the time a worker "
        "spends in a system call (a send that wakes PostgreSQL on the same core)",
    )
    args = parser.parse_args()
    prepare_database()
    out = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    jobs = make_jobs(server_env(provider="gemini", workers=args.workers), 1500)
    with upstream(args.chunks, 0, 1, out / "upstream.log") as (uport, _):
        env = server_env(provider="gemini", upstream_port=uport, workers=args.workers)
        with gunicorn("config.settings", env, out / "gunicorn.log") as (port, proc):
            warm_up(port, jobs[-100:])
            workers = [p.pid for p in process_tree(proc.pid)[1:]]
            spies = [
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        str(args.rate),
                        "--duration",
                        str(args.seconds),
                        "--format",
                        "raw",
                        "--nonblocking",
                        *(["--gil"] if args.gil else []),
                        "--output",
                        str(out / f"worker-{pid}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for pid in workers
            ]
            time.sleep(1)  # py-spy attaches
            started = time.perf_counter()
            results, _ = asyncio.run(
                paced_messages(
                    port,
                    jobs[:-100],
                    total=100_000,
                    concurrency=32,
                    min_gap_s=1.05,
                    deadline=started + args.seconds - 1,
                )
            )
            for spy in spies:
                spy.wait()
    ok = sum(r.ok for r in results)
    report(out, ok, args.rate, args.top)


def report(out: Path, messages: int, rate: int, top: int) -> None:
    cumulative: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for path in out.glob("worker-*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [_short(frame) for frame in stack.split(";")]
            samples = int(count)
            total += samples
            for frame in set(frames):
                cumulative[frame] += samples
            own[frames[-1]] += samples
    per = 1000 / rate / max(messages, 1)
    print(
        f"{messages} messages; {total} samples at {rate}/s = {total / rate:.1f} s of worker CPU "
        f"= {total * per:.2f} ms per message\n\ncumulative ms/message:"
    )
    for frame, samples in cumulative.most_common(top):
        print(f"  {samples * per:7.2f}  {frame}")
    print("\nself ms/message:")
    for frame, samples in own.most_common(top):
        print(f"  {samples * per:7.2f}  {frame}")
    print(f"\nraw stacks: {out}")


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module path)` without the line."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/wt/perf/", str(Path.cwd()) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


if __name__ == "__main__":
    main()
