"""What the reply run and its event log cost: REPLY_ON_DISCONNECT=finish (the run writes its
events to the shared log, Redis Streams here) against cancel (no shared log: the behaviour
before runs), in one run on the same machine; then N concurrent streams with the event log,
and the delay a follower on another node sees, over Redis and over the database log.

    python -m bench.runs [--n 1000] [--messages 1000] [--chunks 50] [--delay-ms 40]

Starts its own gunicorn servers (config/gunicorn.conf.py, 2 gevent workers) over PostgreSQL
(database BENCH_DB, recreated) and Redis (BENCH_CACHE_URL), the offline model pacing replies;
prints the figures and writes bench/results/runs-<time>.json. Every process it starts is
stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from pathlib import Path

from bench.load import percentile
from bench.run import DB, PG, RESULTS, gunicorn, make_jobs, measure, prepare_database, throughput

CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/9")


def server_env(*, mode: str, delay_ms: int, chunks: int, cache_url: str | None, workers: int):
    return {
        "DATABASE_URL": f"{PG}/{DB}",
        "CACHE_URL": cache_url or "locmemcache://",
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + "k" * 60,
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNKS": str(chunks),
        "LOCAL_LLM_CHUNK_DELAY_MS": str(delay_ms),
        "MESSAGE_RATE_LIMIT_MS": "0",
        "MAX_CHATS_PER_USER": "100",
        "DEFAULT_TOKEN_LIMIT": "1000000000",
        "REGISTER_THROTTLE_RATE": "100000/hour",
        "LOGIN_THROTTLE_RATE": "100000/min",
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_LOGLEVEL": "warning",
        "LOG_LEVEL": "WARNING",
        "REPLY_ON_DISCONNECT": mode,
    }


async def follow_once(port_a, port_b, path, headers, body, chunks):
    """POST on node A, follow the same reply from node B: each event's arrival at B minus
    its arrival at A (seconds)."""
    arrivals_a: dict[int, float] = {}
    arrivals_b: dict[int, float] = {}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def read(reader, into):
        event_id = None
        while line := await reader.readline():
            if line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line.startswith(b"data: ") and event_id is not None:
                into[event_id] = time.perf_counter()
                if b'"done"' in line:
                    return
        return

    reader_a, writer_a = await asyncio.open_connection("127.0.0.1", port_a)
    writer_a.write(
        f"POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
        + body
    )
    await writer_a.drain()
    reply_id = None
    while line := await reader_a.readline():
        if line.lower().startswith(b"x-message-id:"):
            reply_id = line.split(b":", 1)[1].strip().decode()
        if line == b"\r\n":
            break
    stream_path = path.replace("/message", f"/messages/{reply_id}/stream")
    reader_b, writer_b = await asyncio.open_connection("127.0.0.1", port_b)
    writer_b.write(f"GET {stream_path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
    await writer_b.drain()
    await asyncio.gather(read(reader_a, arrivals_a), read(reader_b, arrivals_b))
    writer_a.close()
    writer_b.close()
    # Events B replayed (it joined after them) say nothing about delay: keep the live ones.
    joined = min(arrivals_b.values(), default=0)
    return [
        arrivals_b[i] - arrivals_a[i]
        for i in arrivals_a
        if i in arrivals_b and arrivals_a[i] > joined
    ]


def follower_delay(*, cache_url, args, label) -> dict:
    env = server_env(
        mode="finish", delay_ms=args.delay_ms, chunks=args.chunks, cache_url=cache_url, workers=1
    )
    logs = RESULTS / "runs-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (
        gunicorn("config.settings", env, logs / f"follow-a-{label}.log") as (port_a, _),
        gunicorn("config.settings", env, logs / f"follow-b-{label}.log") as (port_b, _),
    ):
        jobs = make_jobs(port_a, args.followers)
        body = json.dumps({"message": "follow me"}).encode()

        async def go():
            return await asyncio.gather(
                *(follow_once(port_a, port_b, p, h, body, args.chunks) for p, h in jobs)
            )

        delays = [d for stream in asyncio.run(go()) for d in stream]
    return {
        "streams": args.followers,
        "events": len(delays),
        "delay_ms_p50": round(1000 * percentile(delays, 50), 1),
        "delay_ms_p95": round(1000 * percentile(delays, 95), 1),
        "delay_ms_p99": round(1000 * percentile(delays, 99), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000, help="concurrent streams, event log on")
    parser.add_argument("--ttfb-n", type=int, default=100, help="streams for the TTFB comparison")
    parser.add_argument("--messages", type=int, default=1000, help="messages, instant upstream")
    parser.add_argument("--followers", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--delay-ms", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--parts",
        default="throughput,ttfb,burst,follower",
        help="comma-separated: which of the four measurements to run",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    max_connections = prepare_database()
    gap = args.delay_ms / 1000
    upstream = {
        "upstream_first_s": 0.0,
        "upstream_gap_s": gap,
        "upstream_total_s": gap * (args.chunks - 1),
    }
    report: dict = {
        "when": stamp,
        "load_average": os.getloadavg(),
        "chunks": args.chunks,
        "delay_ms": args.delay_ms,
        "workers": args.workers,
        "pg_max_connections": max_connections,
    }
    logs = RESULTS / "runs-logs"
    logs.mkdir(parents=True, exist_ok=True)

    # 1. Messages per second (instant upstream) and CPU per message, both modes.
    report["throughput"] = {}
    for mode in ("finish", "cancel") if "throughput" in parts else ():
        env = server_env(
            mode=mode, delay_ms=0, chunks=args.chunks, cache_url=CACHE_URL, workers=args.workers
        )
        with gunicorn("config.settings", env, logs / f"instant-{mode}.log") as (port, proc):
            jobs = make_jobs(port, 64)
            result = throughput(port, proc, jobs, DB, total=args.messages, concurrency=32)
        report["throughput"][mode] = result
        print(
            f"instant upstream, {mode:6}: {result['per_second']} msg/s "
            f"({result['ok']}/{result['messages']} ok), CPU per message "
            f"{result['server_cpu_ms_per_message']} ms gunicorn + "
            f"{result['postgres_cpu_ms_per_message']} ms PostgreSQL"
        )

    # 2. Time to first byte and stream length, paced upstream, steady arrivals; both modes.
    report["ttfb"] = {}
    for mode in ("finish", "cancel") if "ttfb" in parts else ():
        env = server_env(
            mode=mode,
            delay_ms=args.delay_ms,
            chunks=args.chunks,
            cache_url=CACHE_URL,
            workers=args.workers,
        )
        with gunicorn("config.settings", env, logs / f"paced-{mode}.log") as (port, proc):
            jobs = make_jobs(port, args.ttfb_n)
            result = measure(port, proc, jobs, DB, upstream, upstream["upstream_total_s"])
        report["ttfb"][mode] = result
        print(
            f"{args.ttfb_n} streams (steady), {mode:6}: {result['completed']}/{result['streams']} "
            f"ok, TTFB p50 {result['ttfb_ms_p50']:.1f} p95 {result['ttfb_ms_p95']:.1f} "
            f"p99 {result['ttfb_ms_p99']:.1f} ms, stream/upstream p99 "
            f"{result['stream_ratio_p99']:.3f}"
        )

    if "burst" in parts:
        report["burst"] = burst_with_the_event_log(args, upstream, max_connections, logs)
    # 4. The delay of a follower on another node, per event: Redis against the database log.
    if "follower" in parts:
        report["follower"] = {
            "redis": follower_delay(cache_url=CACHE_URL, args=args, label="redis"),
            "database": follower_delay(cache_url=None, args=args, label="database"),
        }
    for backend, figures in report.get("follower", {}).items():
        print(
            f"follower on another node, {backend:8}: delay per event p50 "
            f"{figures['delay_ms_p50']} p95 {figures['delay_ms_p95']} p99 "
            f"{figures['delay_ms_p99']} ms ({figures['events']} events)"
        )
    out = Path(RESULTS) / f"runs-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


def burst_with_the_event_log(args, upstream, max_connections, logs) -> dict:
    """N concurrent streams with the event log: all complete, PostgreSQL connections."""
    env = server_env(
        mode="finish",
        delay_ms=args.delay_ms,
        chunks=args.chunks,
        cache_url=CACHE_URL,
        workers=args.workers,
    )
    with gunicorn("config.settings", env, logs / "burst.log") as (port, proc):
        jobs = make_jobs(port, args.n)
        burst = measure(port, proc, jobs, DB, upstream)
    print(
        f"{args.n} concurrent streams, event log on: {burst['completed']}/{burst['streams']} "
        f"complete, peak PostgreSQL connections {burst['peak_pg_connections']} "
        f"(max_connections {max_connections}), TTFB p99 {burst['ttfb_ms_p99']:.0f} ms, "
        f"peak RSS {burst['peak_rss_mb']} MB"
    )
    if burst["errors"]:
        print(f"  errors: {burst['errors']}")
    return burst


if __name__ == "__main__":
    main()
