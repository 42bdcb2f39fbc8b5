"""Memory over 20,000 messages: RSS of the gunicorn workers after the first and the last
5,000, and the growth between them. `python -m bench.soak [--messages 20000]`.

Each client sends its messages one after another (a few clients keep the run short)."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import psutil

from bench.load import stream_once
from bench.run import DB, PG, RESULTS, gunicorn, make_jobs, prepare_database


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    prepare_database()
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {
        "DATABASE_URL": f"{PG}/{DB}",
        "CACHE_URL": "redis://127.0.0.1:6379/9",
        "DEBUG": "false",
        "SECRET_KEY": "soak-" + "k" * 60,
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LLM_PROVIDER": "local",
        "LOCAL_LLM_CHUNKS": "20",
        "LOCAL_LLM_CHUNK_DELAY_MS": "0",
        "MESSAGE_RATE_LIMIT_MS": "0",
        "MAX_CHATS_PER_USER": "100",
        "DEFAULT_TOKEN_LIMIT": "2000000000",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "32",
        "GUNICORN_LOGLEVEL": "warning",
        "LOG_LEVEL": "WARNING",
        "REGISTER_THROTTLE_RATE": "100000/hour",
        "LOGIN_THROTTLE_RATE": "100000/min",
    }
    with gunicorn("config.settings", env, RESULTS / "soak.log") as (port, proc):
        jobs = make_jobs(port, args.clients)
        master = psutil.Process(proc.pid)

        def workers_rss():
            return sum(p.memory_info().rss for p in master.children()) / 2**20

        quarter = args.messages // 4
        marks = {}
        sent = 0
        failed = 0
        body = json.dumps({"message": "soak"}).encode()

        async def client(path, headers):
            nonlocal sent, failed
            while sent < args.messages:
                sent += 1
                result = await stream_once("127.0.0.1", port, path, headers, body)
                failed += not result.ok
                if sent in (quarter, 4 * quarter):
                    marks[sent] = workers_rss()

        started = time.perf_counter()
        asyncio.run(asyncio_gather(client(p, h) for p, h in jobs))
        elapsed = time.perf_counter() - started
    first, last = marks.get(quarter), marks.get(4 * quarter)
    growth = 100 * (last - first) / first if first and last else float("nan")
    print(
        f"{args.messages} messages in {elapsed:.0f} s ({failed} failed); worker RSS after the "
        f"first {quarter}: {first:.1f} MB, after all: {last:.1f} MB; growth {growth:.2f}%"
    )


async def asyncio_gather(coros):
    await asyncio.gather(*coros)


if __name__ == "__main__":
    main()
