"""`make bench`: our service vs a bare relay of the same upstream, in one run.

Starts gunicorn (config/gunicorn.conf.py, as production does) over PostgreSQL and Redis with
the offline model pacing replies (K chunks, D ms apart), and the bare relay
(bench.relay_settings) with the same settings; opens N concurrent streams against each;
samples the servers' RSS and PostgreSQL connections in use; prints ratios and writes
bench/results/<time>.json and .png. Every process it starts is stopped by pid.

    python -m bench.run [--n 100 500 1000] [--chunks 50] [--delay-ms 40] [--quick]
                        [--worker-class gthread --threads 520]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import psycopg

from bench.load import run_streams, summarize

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB = os.environ.get("BENCH_DB", "chat_bench")
PASSWORD = "bench-passphrase-42"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(settings_module: str, env: dict, log: Path):
    port = free_port()
    full_env = {
        **os.environ,
        **env,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_ACCESSLOG": "",
    }
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"gunicorn did not start; see {log}")
        time.sleep(0.2)
    try:
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(procs) -> dict[int, float]:
    """CPU seconds used so far, by pid."""
    used = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            used[proc.pid] = times.user + times.system
    return used


def cpu_used_since(before: dict[int, float], procs) -> float:
    """CPU seconds `procs` used since `before` (processes started since count in full)."""
    return sum(now - before.get(pid, 0.0) for pid, now in cpu_seconds(procs).items())


def server_processes(pid: int) -> list:
    master = psutil.Process(pid)
    return [master, *master.children(recursive=True)]


def postgres_processes() -> list:
    return [p for p in psutil.process_iter(["username"]) if p.info["username"] == "postgres"]


class Sampler(threading.Thread):
    """Peak RSS of the server's processes and peak PostgreSQL connections, every 100 ms."""

    def __init__(self, pid: int, database: str | None):
        super().__init__(daemon=True)
        self.pid, self.database = pid, database
        self.peak_rss = 0
        self.peak_pg = 0
        self.stop = threading.Event()

    def run(self):
        conn = psycopg.connect(f"{PG}/postgres", autocommit=True) if self.database else None
        while not self.stop.is_set():
            with contextlib.suppress(psutil.Error):
                procs = server_processes(self.pid)
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in procs))
            if conn:
                (count,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [self.database]
                ).fetchone()
                self.peak_pg = max(self.peak_pg, count)
            self.stop.wait(0.1)
        if conn:
            conn.close()


def prepare_database():
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
        (max_conn,) = conn.execute("SHOW max_connections").fetchone()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "DATABASE_URL": f"{PG}/{DB}"},
    )
    return int(max_conn)


def make_jobs(port: int, streams: int) -> list[tuple[str, dict]]:
    """Users and chats for `streams` concurrent streams (50 chats per user)."""
    jobs = []
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        for u in range((streams + 49) // 50):
            name = f"bench{u}_{int(time.time() * 1000) % 10**9}"
            client.post("/api/auth/register", json={"username": name, "password": PASSWORD})
            token = client.post(
                "/api/auth/token", json={"username": name, "password": PASSWORD}
            ).json()["data"]["access"]
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(min(50, streams - len(jobs))):
                chat = client.post("/api/chat", json={}, headers=headers).json()["data"]["id"]
                jobs.append((f"/api/chat/{chat}/message", headers))
    return jobs


def measure(port, proc, jobs, database, upstream, spread_s=0.0):
    sampler = Sampler(proc.pid, database)
    sampler.start()
    started = time.perf_counter()
    results = asyncio.run(
        run_streams("127.0.0.1", port, jobs, "benchmark message", spread_s=spread_s)
    )
    elapsed = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    summary = summarize(results, **upstream)
    summary.update(
        wall_s=round(elapsed, 3),
        peak_rss_mb=round(sampler.peak_rss / 2**20, 1),
        peak_pg_connections=sampler.peak_pg,
    )
    return summary


def throughput(port, proc, jobs, database, *, total: int, concurrency: int) -> dict:
    """Messages per second with an instant upstream: `total` messages, `concurrency` at once,
    and the CPU one message costs the server's processes (and PostgreSQL's)."""

    async def go():
        from bench.load import stream_once

        body = json.dumps({"message": "x"}).encode()
        queue = list(range(total))
        done = []

        async def worker(i):
            path, headers = jobs[i % len(jobs)]
            while queue:
                queue.pop()
                done.append(await stream_once("127.0.0.1", port, path, headers, body))

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return done, time.perf_counter() - started

    server_cpu = cpu_seconds(server_processes(proc.pid))
    postgres_cpu = cpu_seconds(postgres_processes())
    results, elapsed = asyncio.run(go())
    server_ms = 1000 * cpu_used_since(server_cpu, server_processes(proc.pid)) / total
    postgres_ms = 1000 * cpu_used_since(postgres_cpu, postgres_processes()) / total
    ok = sum(r.ok for r in results)
    return {
        "messages": total,
        "ok": ok,
        "seconds": round(elapsed, 3),
        "per_second": round(ok / elapsed, 1),
        "server_cpu_ms_per_message": round(server_ms, 2),
        "postgres_cpu_ms_per_message": round(postgres_ms, 2) if database else 0.0,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--delay-ms", type=int, default=40)
    parser.add_argument(
        "--worker-class", default=None, help="gunicorn worker class (default: the conf's, gevent)"
    )
    parser.add_argument("--threads", type=int, default=520, help="gthread: threads per worker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--throughput", type=int, default=2000, help="messages, instant upstream")
    parser.add_argument("--quick", action="store_true", help="N = 50 100, fewer messages")
    args = parser.parse_args()
    if args.quick:
        args.n, args.throughput = [50, 100], 500
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    max_connections = prepare_database()

    def env(delay_ms):
        return {
            "DATABASE_URL": f"{PG}/{DB}",
            "CACHE_URL": os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/9"),
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + "k" * 60,
            "SECURE_SSL_REDIRECT": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LLM_PROVIDER": "local",
            "LOCAL_LLM_CHUNKS": str(args.chunks),
            "LOCAL_LLM_CHUNK_DELAY_MS": str(delay_ms),
            "MESSAGE_RATE_LIMIT_MS": "0",
            "MAX_CHATS_PER_USER": "100",
            "DEFAULT_TOKEN_LIMIT": "1000000000",
            "REGISTER_THROTTLE_RATE": "100000/hour",
            "LOGIN_THROTTLE_RATE": "100000/min",
            "GUNICORN_WORKERS": str(args.workers),
            "GUNICORN_THREADS": str(args.threads),
            **({"GUNICORN_WORKER_CLASS": args.worker_class} if args.worker_class else {}),
            "GUNICORN_LOGLEVEL": "warning",
            "LOG_LEVEL": "WARNING",
        }

    gap = args.delay_ms / 1000
    upstream = {
        "upstream_first_s": 0.0,
        "upstream_gap_s": gap,
        "upstream_total_s": gap * (args.chunks - 1),
    }
    report = {
        "when": stamp,
        "load_average": os.getloadavg(),
        "chunks": args.chunks,
        "delay_ms": args.delay_ms,
        "workers": args.workers,
        "worker_class": args.worker_class or "gevent (conf default)",
        "threads": args.threads,
        "pg_max_connections": max_connections,
        "runs": {},
    }
    logs = RESULTS / stamp
    logs.mkdir(exist_ok=True)
    with (
        gunicorn("config.settings", env(args.delay_ms), logs / "ours.log") as (port, proc),
        gunicorn("bench.relay_settings", env(args.delay_ms), logs / "relay.log") as (rport, rproc),
    ):
        jobs = make_jobs(port, max(args.n))
        relay_jobs = [(f"/api/chat/{i}/message", {}) for i in range(max(args.n))]
        for n in args.n:
            ours = measure(port, proc, jobs[:n], DB, upstream)
            relay = measure(rport, rproc, relay_jobs[:n], None, upstream)
            report["runs"][n] = {"ours": ours, "relay": relay}
            print_run(f"N={n}, all at once", ours, relay)
        # Steady state: arrivals spread evenly over one stream's length, so N streams are
        # open at once without all their set-ups landing in the same instant.
        spread = upstream["upstream_total_s"]
        for n in args.n:
            ours = measure(port, proc, jobs[:n], DB, upstream, spread)
            relay = measure(rport, rproc, relay_jobs[:n], None, upstream, spread)
            report["runs"][n].update(ours_steady=ours, relay_steady=relay)
            print_run(f"N={n}, arrivals spread over {spread:.2f} s", ours, relay)
    with (
        gunicorn("config.settings", env(0), logs / "ours-instant.log") as (port, proc),
        gunicorn("bench.relay_settings", env(0), logs / "relay-instant.log") as (rport, rproc),
    ):
        jobs = make_jobs(port, 64)
        ours = throughput(port, proc, jobs, DB, total=args.throughput, concurrency=32)
        relay = throughput(
            rport,
            rproc,
            [(f"/api/chat/{i}/message", {}) for i in range(64)],
            None,
            total=args.throughput,
            concurrency=32,
        )
        report["throughput"] = {
            "ours": ours,
            "relay": relay,
            "ratio": round(ours["per_second"] / relay["per_second"], 3),
        }
        print(
            f"\ninstant upstream: ours {ours['per_second']} msg/s, relay "
            f"{relay['per_second']} msg/s, ratio {report['throughput']['ratio']}\n"
            f"  CPU per message: ours {ours['server_cpu_ms_per_message']} ms in gunicorn + "
            f"{ours['postgres_cpu_ms_per_message']} ms in PostgreSQL, relay "
            f"{relay['server_cpu_ms_per_message']} ms"
        )
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    plot(report, RESULTS / f"{stamp}.png")
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


def print_run(title, ours, relay):
    def ratio(key):
        return ours[key] / relay[key] if relay[key] else float("nan")

    print(
        f"\n{title}: ours {ours['completed']}/{ours['streams']} ok, relay "
        f"{relay['completed']}/{relay['streams']} ok; peak PG connections "
        f"{ours['peak_pg_connections']}; peak RSS ours {ours['peak_rss_mb']} MB, relay "
        f"{relay['peak_rss_mb']} MB"
    )
    for key in (
        "ttfb_ms_p50",
        "ttfb_ms_p95",
        "ttfb_ms_p99",
        "gap_ms_p50",
        "gap_ms_p99",
        "gap_ratio_p50",
        "gap_ratio_p99",
        "stream_ratio_p50",
        "stream_ratio_p99",
    ):
        print(f"  {key:18} ours {ours[key]:9.3f}  relay {relay[key]:9.3f}  ratio {ratio(key):6.3f}")
    if ours["errors"]:
        print(f"  errors: {ours['errors']}")


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(int(n) for n in report["runs"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for who, label, style in (
        ("ours", "ours, burst", "o-"),
        ("relay", "relay, burst", "s-"),
        ("ours_steady", "ours, steady", "o--"),
        ("relay_steady", "relay, steady", "s--"),
    ):
        runs = [report["runs"][n][who] for n in ns]
        axes[0].plot(ns, [r["ttfb_ms_p99"] for r in runs], style, label=label)
        axes[1].plot(ns, [r["stream_ratio_p99"] for r in runs], style, label=label)
        axes[2].plot(ns, [r["gap_ms_p99"] for r in runs], style, label=label)
    axes[0].set_yscale("log")
    for ax, title in zip(
        axes,
        ("TTFB p99 (ms)", "stream / upstream time p99", "inter-chunk gap p99 (ms)"),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel("concurrent streams")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
