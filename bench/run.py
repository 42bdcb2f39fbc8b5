"""`make bench`: our service against a bare relay of the same upstream, in one run.

The production path: gunicorn (config/gunicorn.conf.py, as production runs it) over
PostgreSQL and Redis with the Gemini provider, the google-genai SDK streaming over HTTP from
a fast local fake upstream (bench/upstream.py: chunked SSE, the Gemini REST protocol). The
baseline: a bare Django view (bench.relay_settings) relaying the same upstream with a raw
HTTP client, under the same gunicorn settings. In order:

1. the upstream alone: the rate it serves the load generator directly (so it is seen not to
   be the bottleneck);
2. messages per second with an instant upstream (every chunk at once), spread over distinct
   users each sending at most one message a second (the service's rate limit stays on), and
   the CPU one message costs: the service's workers, PostgreSQL's backends serving the
   service's own connections (found by application_name, their CPU read from /proc), the
   upstream, and the load generator itself;
3. N streams at once (a burst) and N streams with arrivals spread over one stream's length,
   against a paced upstream (K chunks, D ms apart): time to first byte, inter-chunk gaps,
   stream length against the upstream's, peak RSS and peak PostgreSQL connections;
4. the second line: (2) again with the offline model instead of the upstream, ours against
   the relay of the same model.

Every server is warmed up before it is measured. Ratios are ours / relay, measured in the
same run. Results: bench/results/<time>.json and .png. Every process it starts is stopped
by pid.

    python -m bench.run [--n 100 500 1000] [--chunks 50] [--delay-ms 40] [--quick]
                        [--throughput 2000] [--instant-chunks 20] [--concurrency 32]
                        [--worker-class gthread --threads 520] [--no-offline]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import psycopg

from bench.load import run_streams, stream_once, summarize
from tests.launcher import ServerDidNotStart, gunicorn_server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB = os.environ.get("BENCH_DB", "chat_bench")
# libpq's PGAPPNAME: the service's PostgreSQL connections carry this application_name, so
# their backends (and only theirs) are counted.
APP_NAME = f"bench-service-{os.getpid()}"
MIN_GAP_S = 1.05  # between two messages of one user (the rate limit is one a second)
MESSAGE = "benchmark message"
LAST_SENT: dict[str, float] = {}  # message path -> when the last message to it was sent


@contextlib.contextmanager
def gunicorn(settings_module: str, env: dict, log: Path):
    """The server under test, started by the launcher the tests use (tests/launcher.py);
    yields (port, process)."""
    try:
        with gunicorn_server(
            env={**env, "PGAPPNAME": APP_NAME},
            log_path=log,
            settings_module=settings_module,
            start_timeout=60,
            stop_timeout=30,
        ) as server:
            yield server.port, server.process
    except ServerDidNotStart as exc:
        raise SystemExit(f"gunicorn did not start; see {log}") from exc


@contextlib.contextmanager
def upstream(chunks: int, delay_ms: int, processes: int, log: Path):
    """bench/upstream.py on a free port; yields (port, its processes)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.upstream",
                "--chunks",
                str(chunks),
                "--delay-ms",
                str(delay_ms),
                "--processes",
                str(processes),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"the upstream did not start; see {log}")
    try:
        yield int(line.split()[1]), proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
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


def process_tree(pid: int) -> list:
    master = psutil.Process(pid)
    return [master, *master.children(recursive=True)]


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sampler_connection():
    return psycopg.connect(f"{PG}/postgres", autocommit=True, application_name="bench-sampler")


class PostgresCpu(threading.Thread):
    """CPU of the PostgreSQL backends serving the service's connections (application_name
    APP_NAME), read from /proc every 200 ms so a backend that exits mid-run is still counted
    up to its last sample; backends that started during the run count in full. Also the peak
    number of those connections."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.baseline: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.peak_connections = 0
        self.conn = sampler_connection()
        self._sample(first=True)

    def _sample(self, first: bool = False):
        pids = [
            pid
            for (pid,) in self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [APP_NAME]
            ).fetchall()
        ]
        self.peak_connections = max(self.peak_connections, len(pids))
        for pid, seconds in cpu_seconds(psutil.Process(pid) for pid in pids if _alive(pid)).items():
            if pid not in self.last:
                self.baseline[pid] = seconds if first else 0.0
            self.last[pid] = seconds

    def run(self):
        while not self.stop.wait(0.2):
            self._sample()

    def finish(self) -> float:
        """Stop; the CPU seconds used since the start."""
        self.stop.set()
        self.join()
        self._sample()
        self.conn.close()
        return sum(self.last[pid] - self.baseline[pid] for pid in self.last)


def _alive(pid: int) -> bool:
    return psutil.pid_exists(pid)


class Sampler(threading.Thread):
    """Peak RSS of the server's processes, every 100 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            with contextlib.suppress(psutil.Error):
                procs = process_tree(self.pid)
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in procs))
            self.stop.wait(0.1)


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


def make_jobs(env: dict, users: int) -> list[tuple[str, dict]]:
    """`users` distinct users, one chat each: [(message path, auth headers)]."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.fixtures", str(users)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "config.settings"},
    )
    return [(path, headers) for path, headers in json.loads(out.stdout)]


async def paced_messages(
    port: int,
    jobs,
    *,
    total: int,
    concurrency: int,
    min_gap_s: float,
    done_marker=b'"done"',
    deadline: float | None = None,
):
    """`total` messages, `concurrency` at a time, each to the job least recently used, never
    two to one job within `min_gap_s` (across calls too). Returns (results, seconds)."""
    order = sorted(jobs, key=lambda job: LAST_SENT.get(job[0], -1e9))
    ready = collections.deque((LAST_SENT.get(job[0], -1e9), job) for job in order)
    remaining = total
    results = []
    body = json.dumps({"message": MESSAGE}).encode()

    async def worker():
        nonlocal remaining
        while remaining > 0 and (deadline is None or time.perf_counter() < deadline):
            remaining -= 1
            last, (path, headers) = ready.popleft()
            wait = last + min_gap_s - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            sent = LAST_SENT[path] = time.perf_counter()
            results.append(await stream_once("127.0.0.1", port, path, headers, body, done_marker))
            ready.append((sent, (path, headers)))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - started


def warm_up(port: int, jobs, messages: int = 60, done_marker=b'"done"') -> None:
    """Every worker imports, connects and fills its caches before anything is measured."""
    results, _ = asyncio.run(
        paced_messages(
            port,
            jobs,
            total=messages,
            concurrency=8,
            min_gap_s=MIN_GAP_S,
            done_marker=done_marker,
        )
    )
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"warm-up failed on port {port}: {sorted(set(failed))[:3]}")


def throughput_against_relay(
    environment: dict,
    logs: Path,
    name: str,
    jobs,
    relay_jobs,
    *,
    total: int,
    concurrency: int,
    upstream_proc=None,
) -> tuple[dict, dict]:
    """throughput() of ours and of the relay under the same environment, each warmed up."""
    with (
        gunicorn("config.settings", environment, logs / f"ours-{name}.log") as (port, proc),
        gunicorn("bench.relay_settings", environment, logs / f"relay-{name}.log") as (rport, rproc),
    ):
        warm_up(port, jobs[-100:])
        warm_up(rport, relay_jobs[:8])
        ours = throughput(
            port,
            proc,
            jobs,
            total=total,
            concurrency=concurrency,
            database=True,
            upstream_proc=upstream_proc,
        )
        relay = throughput(
            rport,
            rproc,
            relay_jobs[:concurrency],
            total=total,
            concurrency=concurrency,
            database=False,
            upstream_proc=upstream_proc,
            min_gap_s=0,
        )
    return ours, relay


def throughput(
    port,
    proc,
    jobs,
    *,
    total: int,
    concurrency: int,
    database: bool,
    upstream_proc=None,
    min_gap_s: float = MIN_GAP_S,
    done_marker=b'"done"',
) -> dict:
    """Messages per second with an instant upstream, and the CPU one message costs."""
    server_cpu = cpu_seconds(process_tree(proc.pid))
    upstream_cpu = cpu_seconds(process_tree(upstream_proc.pid)) if upstream_proc else {}
    postgres = PostgresCpu() if database else None
    if postgres:
        postgres.start()
    own = own_cpu_seconds()
    results, elapsed = asyncio.run(
        paced_messages(
            port,
            jobs,
            total=total,
            concurrency=concurrency,
            min_gap_s=min_gap_s,
            done_marker=done_marker,
        )
    )
    own = own_cpu_seconds() - own
    postgres_s = postgres.finish() if postgres else 0.0
    ok = sum(r.ok for r in results)
    per = 1000 / total
    return {
        "messages": total,
        "ok": ok,
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "seconds": round(elapsed, 3),
        "per_second": round(ok / elapsed, 1),
        "server_cpu_ms_per_message": round(
            per * cpu_used_since(server_cpu, process_tree(proc.pid)), 2
        ),
        "postgres_cpu_ms_per_message": round(per * postgres_s, 2),
        "upstream_cpu_ms_per_message": round(
            per * cpu_used_since(upstream_cpu, process_tree(upstream_proc.pid)), 2
        )
        if upstream_proc
        else 0.0,
        "load_generator_cpu_ms_per_message": round(per * own, 2),
        "peak_pg_connections": postgres.peak_connections if postgres else 0,
    }


def measure(port, proc, jobs, upstream_timing, *, database: bool, spread_s=0.0):
    sampler = Sampler(proc.pid)
    sampler.start()
    postgres = PostgresCpu() if database else None
    if postgres:
        postgres.start()
    started = time.perf_counter()
    LAST_SENT.update(dict.fromkeys((path for path, _ in jobs), started))
    results = asyncio.run(run_streams("127.0.0.1", port, jobs, MESSAGE, spread_s=spread_s))
    elapsed = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    if postgres:
        postgres.finish()
    summary = summarize(results, **upstream_timing)
    summary.update(
        wall_s=round(elapsed, 3),
        peak_rss_mb=round(sampler.peak_rss / 2**20, 1),
        peak_pg_connections=postgres.peak_connections if postgres else 0,
    )
    return summary


# The service's default MESSAGE_RATE_LIMIT_MS: a user's next message within it is a 429.
RATE_LIMIT_S = 1.0


def rest_for_the_rate_limit(timing: dict) -> None:
    """Each phase sends from the same users again: when a stream is shorter than the rate
    limit's window, wait out the rest of it, or the next phase measures 429s."""
    rest = RATE_LIMIT_S - timing["upstream_total_s"]
    if rest > 0:
        time.sleep(rest + 0.05)


def server_env(
    *,
    provider: str,
    upstream_port: int = 0,
    chunks: int = 0,
    delay_ms: int = 0,
    workers: int = 2,
    threads: int | None = None,
    worker_class: str | None = None,
) -> dict[str, str]:
    """The environment every benchmarked server runs with: production settings (DEBUG off)
    over the benchmark's database and Redis, a budget that never runs out."""
    return {
        "DATABASE_URL": f"{PG}/{DB}",
        "CACHE_URL": os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/9"),
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + "k" * 60,
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LLM_PROVIDER": provider,
        "GEMINI_API_KEY": "bench-key",
        "GEMINI_BASE_URL": f"http://127.0.0.1:{upstream_port}",
        "LOCAL_LLM_CHUNKS": str(chunks),
        "LOCAL_LLM_CHUNK_DELAY_MS": str(delay_ms),
        "DEFAULT_TOKEN_LIMIT": "1000000000",
        "JWT_ACCESS_MINUTES": "600",
        "GUNICORN_WORKERS": str(workers),
        **({"GUNICORN_THREADS": str(threads)} if threads else {}),
        **({"GUNICORN_WORKER_CLASS": worker_class} if worker_class else {}),
        "GUNICORN_LOGLEVEL": "warning",
        "LOG_LEVEL": "WARNING",
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--chunks", type=int, default=50, help="paced upstream: chunks")
    parser.add_argument("--delay-ms", type=int, default=40, help="paced upstream: gap")
    parser.add_argument("--instant-chunks", type=int, default=20, help="instant upstream")
    parser.add_argument(
        "--worker-class", default=None, help="gunicorn worker class (default: the conf's, gevent)"
    )
    parser.add_argument("--threads", type=int, default=520, help="gthread: threads per worker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--throughput", type=int, default=2000, help="messages, instant upstream")
    parser.add_argument("--concurrency", type=int, default=32, help="throughput: at once")
    parser.add_argument("--upstream-processes", type=int, default=1)
    parser.add_argument("--no-offline", action="store_true", help="skip the offline-model line")
    parser.add_argument("--no-bursts", action="store_true", help="skip the burst section")
    parser.add_argument("--quick", action="store_true", help="N = 100, 500 messages")
    args = parser.parse_args()
    if args.quick:
        args.n, args.throughput = [100], 500
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    max_connections = prepare_database()

    def env(*, provider: str, upstream_port: int = 0, chunks: int = 0, delay_ms: int = 0):
        return server_env(
            provider=provider,
            upstream_port=upstream_port,
            chunks=chunks,
            delay_ms=delay_ms,
            workers=args.workers,
            threads=args.threads,
            worker_class=args.worker_class,
        )

    users = max([*args.n, 0]) + 200
    jobs = make_jobs(env(provider="gemini"), users)
    relay_jobs = [(f"/api/chat/{i}/message", {}) for i in range(users)]
    report = {
        "when": stamp,
        "load_average_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "chunks": args.chunks,
        "delay_ms": args.delay_ms,
        "instant_chunks": args.instant_chunks,
        "workers": args.workers,
        "worker_class": args.worker_class or "gevent (conf default)",
        "threads": args.threads,
        "users": users,
        "pg_max_connections": max_connections,
    }
    logs = RESULTS / stamp
    logs.mkdir(exist_ok=True)
    total, concurrency = args.throughput, args.concurrency

    # 1-2. The production path with an instant upstream.
    with upstream(
        args.instant_chunks, 0, args.upstream_processes, logs / "upstream-instant.log"
    ) as (uport, uproc):
        path = "/v1beta/models/fake:streamGenerateContent?alt=sse"
        alone = throughput(
            uport,
            uproc,
            [(path, {})] * concurrency,
            total=total,
            concurrency=concurrency,
            database=False,
            min_gap_s=0,
            done_marker=b"finishReason",
        )
        report["upstream_alone"] = alone
        print(
            f"upstream alone ({args.instant_chunks} chunks, instant): {alone['per_second']} "
            f"msg/s at {alone['server_cpu_ms_per_message']} ms CPU per message "
            f"({alone['ok']}/{total} ok)"
        )
        ours, relay = throughput_against_relay(
            env(provider="gemini", upstream_port=uport),
            logs,
            "gemini",
            jobs,
            relay_jobs,
            total=total,
            concurrency=concurrency,
            upstream_proc=uproc,
        )
        report["throughput"] = {"ours": ours, "relay": relay, "ratio": _ratio(ours, relay)}
        print_throughput(
            f"production path: Gemini provider (google-genai) against the upstream over HTTP, "
            f"{args.instant_chunks} chunks, instant; {total} messages, {concurrency} at once, "
            f"over {len(jobs)} users",
            ours,
            relay,
        )

    # 3. Bursts and steady arrivals against a paced upstream.
    if not args.no_bursts:
        report["runs"] = {}
        gap = args.delay_ms / 1000
        timing = {
            "upstream_first_s": 0.0,
            "upstream_gap_s": gap,
            "upstream_total_s": gap * (args.chunks - 1),
        }
        with upstream(
            args.chunks, args.delay_ms, args.upstream_processes, logs / "upstream-paced.log"
        ) as (uport, _uproc):
            gemini = env(provider="gemini", upstream_port=uport)
            with (
                gunicorn("config.settings", gemini, logs / "ours.log") as (port, proc),
                gunicorn("bench.relay_settings", gemini, logs / "relay.log") as (rport, rproc),
            ):
                warm_up(port, jobs[-100:], messages=40)
                warm_up(rport, relay_jobs[:8], messages=40)
                for n in args.n:
                    rest_for_the_rate_limit(timing)
                    ours = measure(port, proc, jobs[:n], timing, database=True)
                    relay = measure(rport, rproc, relay_jobs[:n], timing, database=False)
                    report["runs"][n] = {"ours": ours, "relay": relay}
                    print_run(f"N={n}, all at once", ours, relay)
                # Steady state: arrivals spread evenly over one stream's length, so N streams
                # are open at once without all their set-ups landing in the same instant.
                spread = timing["upstream_total_s"]
                for n in args.n:
                    rest_for_the_rate_limit(timing)
                    ours = measure(port, proc, jobs[:n], timing, database=True, spread_s=spread)
                    relay = measure(
                        rport, rproc, relay_jobs[:n], timing, database=False, spread_s=spread
                    )
                    report["runs"][n].update(ours_steady=ours, relay_steady=relay)
                    print_run(f"N={n}, arrivals spread over {spread:.2f} s", ours, relay)

    # 4. The second line: the offline model, no upstream at all.
    if not args.no_offline:
        ours, relay = throughput_against_relay(
            env(provider="local", chunks=args.instant_chunks, delay_ms=0),
            logs,
            "local",
            jobs,
            relay_jobs,
            total=total,
            concurrency=concurrency,
        )
        report["throughput_offline"] = {"ours": ours, "relay": relay, "ratio": _ratio(ours, relay)}
        print_throughput(
            f"second line: the offline model ({args.instant_chunks} chunks, instant)", ours, relay
        )

    report["load_average_after"] = os.getloadavg()
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    if report.get("runs"):
        plot(report, RESULTS / f"{stamp}.png")
    print(f"\nwrote {out}")


def _ratio(ours: dict, relay: dict) -> float:
    return round(ours["per_second"] / relay["per_second"], 3) if relay["per_second"] else 0.0


def print_throughput(title: str, ours: dict, relay: dict) -> None:
    print(
        f"\n{title}\n"
        f"  messages/s        ours {ours['per_second']:8.1f}  relay {relay['per_second']:8.1f}  "
        f"ratio {_ratio(ours, relay):6.3f}   (ok: ours {ours['ok']}/{ours['messages']}, "
        f"relay {relay['ok']}/{relay['messages']})\n"
        f"  CPU ms/message    ours {ours['server_cpu_ms_per_message']:6.2f} workers + "
        f"{ours['postgres_cpu_ms_per_message']:5.2f} PostgreSQL = "
        f"{ours['server_cpu_ms_per_message'] + ours['postgres_cpu_ms_per_message']:6.2f};  "
        f"relay {relay['server_cpu_ms_per_message']:6.2f} workers\n"
        f"  also per message  upstream ours {ours['upstream_cpu_ms_per_message']:.2f} / relay "
        f"{relay['upstream_cpu_ms_per_message']:.2f} ms; load generator ours "
        f"{ours['load_generator_cpu_ms_per_message']:.2f} / relay "
        f"{relay['load_generator_cpu_ms_per_message']:.2f} ms; peak PostgreSQL connections "
        f"{ours['peak_pg_connections']}"
    )
    for who, result in (("ours", ours), ("relay", relay)):
        if result["errors"]:
            print(f"  errors ({who}): {result['errors']}")


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
