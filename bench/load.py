"""A lean asyncio load generator for SSE streams (raw sockets: at 25,000 events/s an HTTP
client library would be the bottleneck on a 2-core machine, not the server).

Each stream is an HTTP/1.0 POST (the response is close-delimited, no chunk parsing); we
record the time of every `data:` event."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from dataclasses import dataclass, field


@dataclass
class StreamStats:
    ok: bool = False
    status: int = 0
    started: float = 0.0
    events: list[float] = field(default_factory=list)  # arrival times of data events
    error: str = ""

    @property
    def ttfb(self) -> float:
        return self.events[0] - self.started if self.events else math.nan

    @property
    def total(self) -> float:
        return self.events[-1] - self.started if self.events else math.nan

    @property
    def gaps(self) -> list[float]:
        # between text chunks (the final done event follows the settle step)
        chunks = self.events[:-1]
        return [b - a for a, b in itertools.pairwise(chunks)]


async def stream_once(
    host: str, port: int, path: str, headers: dict, body: bytes, done_marker: bytes = b'"done"'
) -> StreamStats:
    """One POST over its own HTTP/1.0 connection; ok when the status is 200 and an event holding
    `done_marker` (and no error) came."""
    stats = StreamStats(started=time.perf_counter())
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        stats.status = int(status_line.split()[1]) if status_line else 0
        done = False
        while line := await reader.readline():
            if line.startswith(b"data: "):
                stats.events.append(time.perf_counter())
                if done_marker in line:
                    done = b'"error"' not in line
        writer.close()
        stats.ok = stats.status == 200 and done
        if not stats.ok:
            stats.error = f"status {stats.status}, done={done}"
    except OSError as exc:
        stats.error = repr(exc)
    return stats


def percentile(values: list[float], q: float) -> float:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return math.nan
    index = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[index]


def summarize(
    results: list[StreamStats],
    *,
    upstream_first_s: float,
    upstream_gap_s: float,
    upstream_total_s: float,
) -> dict:
    ok = [r for r in results if r.ok]
    gaps = [g for r in ok for g in r.gaps]
    ttfb = [r.ttfb - upstream_first_s for r in ok]
    ratio = [r.total / upstream_total_s for r in ok] if upstream_total_s else []
    return {
        "streams": len(results),
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "ttfb_ms_p50": 1000 * percentile(ttfb, 50),
        "ttfb_ms_p95": 1000 * percentile(ttfb, 95),
        "ttfb_ms_p99": 1000 * percentile(ttfb, 99),
        "gap_ms_p50": 1000 * percentile(gaps, 50),
        "gap_ms_p99": 1000 * percentile(gaps, 99),
        "gap_ratio_p50": percentile(gaps, 50) / upstream_gap_s if upstream_gap_s else math.nan,
        "gap_ratio_p99": percentile(gaps, 99) / upstream_gap_s if upstream_gap_s else math.nan,
        "stream_ratio_p50": percentile(ratio, 50),
        "stream_ratio_p99": percentile(ratio, 99),
    }


async def run_streams(
    host, port, jobs: list[tuple[str, dict]], message: str, *, spread_s: float = 0.0
) -> list[StreamStats]:
    """Open every stream; each job is (path, headers).

    spread_s = 0: all at the same instant (a burst). spread_s > 0: stream i opens at
    i * spread_s / len(jobs), evenly; with spread_s = one stream's length, len(jobs) streams
    are open at once in steady state. Each stream's times count from its own start.
    """
    body = json.dumps({"message": message}).encode()
    step = spread_s / len(jobs) if jobs else 0.0

    async def delayed(index, path, headers):
        await asyncio.sleep(index * step)
        return await stream_once(host, port, path, headers, body)

    return await asyncio.gather(*(delayed(i, p, h) for i, (p, h) in enumerate(jobs)))
