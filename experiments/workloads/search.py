""""Search" client: short GETs at a target open-loop rate, one TCP connection per request.

Open loop (requests start on schedule whether or not earlier ones finished) because users do
not wait for each other: a slow or dead backend must show up as latency and errors, not as a
lower offered rate. The whole schedule is fixed before the first request (seeded), and
latency counts from each request's scheduled time, not from when the client got round to it,
so a client that falls behind cannot hide the delay (no coordinated omission); how late each
request started is kept too (start_lag_ms), and the client's own summary (CPU seconds, lag
percentiles, `behind_schedule`) goes to --stats-out. Runs on uvloop where installed.
Writes one CSV row per request: t_s (scheduled start, from the first request), latency_ms,
start_lag_ms, ok, error, status, bytes, backend, dc, sport (the connection's source port,
0 if it never opened); the summary's `start_wall` is the wall-clock time of t_s = 0.

Run: python -m experiments.workloads.search --host VIP --rate 50 --duration 10 --out F.csv
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import resource
import sys
import time

FIELDS = ("t_s", "dst", "latency_ms", "start_lag_ms", "ok", "error", "status", "bytes",
          "backend", "dc", "sport", "seen_as")
# A client whose requests start this late (99th percentile) is no longer the open-loop
# schedule it claims to be: the run says so.
BEHIND_SCHEDULE_P99_MS = 10.0


def event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
        return "uvloop"
    except ImportError:
        return "asyncio"


def run_loop(coro):
    """asyncio.run on uvloop where it is installed."""
    if event_loop_name() == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


def schedule(rate: float, duration: float, seed: int, poisson: bool) -> list[float]:
    """Every request's start offset (s), fixed before the first one is sent."""
    rng = random.Random(seed)
    out, at, i = [], 0.0, 0
    while at < duration - 1e-9:
        out.append(at)
        i += 1
        # fixed rate: computed from the index, so float error cannot add a request
        at = at + rng.expovariate(rate) if poisson else i / rate
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def client_stats(rows: list[dict], wall_s: float, rate: float) -> dict:
    """The load generator's own account: what it offered, how late, at what CPU cost."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    lags = [r["start_lag_ms"] for r in rows]
    p99 = percentile(lags, 99)
    return {"load_generator": f"lblab search ({event_loop_name()})", "requests": len(rows),
            "rate": rate, "wall_s": round(wall_s, 3),
            "cpu_s": round(use.ru_utime + use.ru_stime, 3),
            "cpu_share": round((use.ru_utime + use.ru_stime) / wall_s, 3) if wall_s else None,
            "start_lag_p50_ms": round(percentile(lags, 50), 3),
            "start_lag_p99_ms": round(p99, 3), "start_lag_max_ms": round(max(lags or [0]), 3),
            "behind_schedule": p99 > BEHIND_SCHEDULE_P99_MS}


_ZEROS = b"\0" * 65536


async def one_request(host: str, port: int, path: str, timeout_s: float,
                      scheduled: float | None = None, source: str | None = None,
                      body: int = 0) -> dict:
    """One GET on a new connection (from address `source` when given), or a POST of `body`
    bytes when body > 0. `scheduled` (time.monotonic() of its planned start): latency counts
    from then, and start_lag_ms says how late it really started."""
    now = time.monotonic()
    start = now if scheduled is None else scheduled
    row = {"dst": host, "ok": False, "error": "", "status": "", "bytes": 0, "backend": "",
           "dc": "", "sport": 0, "seen_as": ""}
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(source, 0) if source else None)
            row["sport"] = writer.get_extra_info("sockname")[1]
            if body:
                writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: "
                             f"{body}\r\nConnection: close\r\n\r\n".encode())
                for at in range(0, body, len(_ZEROS)):
                    writer.write(_ZEROS[:min(len(_ZEROS), body - at)])
                    await writer.drain()
            else:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close"
                             "\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            from experiments.workloads.httpclient import parse_head
            status, headers = parse_head(head[:-4])
            body = await reader.read()
            want = int(headers.get("content-length", len(body)))
            row.update(status=status, bytes=len(body), backend=headers.get("x-backend", ""),
                       dc=headers.get("x-dc", ""), seen_as=headers.get("x-client", ""))
            row["ok"] = status == 200 and len(body) == want
            if not row["ok"]:
                row["error"] = f"http {status}" if status != 200 else "short body"
    except TimeoutError:
        row["error"] = "timeout"
    except ConnectionRefusedError:
        row["error"] = "refused"
    except (ConnectionResetError, asyncio.IncompleteReadError):
        row["error"] = "reset"
    except OSError as exc:
        row["error"] = exc.strerror or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    row["latency_ms"] = round((time.monotonic() - start) * 1000, 3)
    row["start_lag_ms"] = round(max(0.0, now - start) * 1000, 3)
    return row


async def run(host: str, port: int, rate: float, duration: float, size: int,
              timeout_s: float, seed: int, poisson: bool, stats: dict | None = None
              ) -> list[dict]:
    """The whole schedule's rows; `stats` (a dict) gets client_stats()."""
    offsets = schedule(rate, duration, seed, poisson)
    path = f"/search?size={size}"
    tasks = []
    t0 = time.monotonic()
    start_wall = time.time()
    for at in offsets:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_request(host, port, path, timeout_s, t0 + at)))
    rows = await asyncio.gather(*tasks)
    for row, offset in zip(rows, offsets):
        row["t_s"] = round(offset, 4)
    if stats is not None:
        stats.update(client_stats(rows, time.monotonic() - t0, rate),
                     start_wall=round(start_wall, 6))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--size", type=int, default=1024, help="reply bytes")
    parser.add_argument("--timeout", type=float, default=3.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--poisson", action="store_true", help="exponential gaps")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--stats-out", help="JSON file for the client's own summary")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    raise_fd_limit()
    stats: dict = {}
    rows = run_loop(run(args.host, args.port, args.rate, args.duration, args.size,
                        args.timeout, args.seed, args.poisson, stats))
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    if args.stats_out:
        with open(args.stats_out, "w") as fh:
            json.dump(stats, fh)
    return 0


def raise_fd_limit(need: int = 65536) -> None:
    """Thousands of requests in flight need thousands of sockets (root may raise the hard
    limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
