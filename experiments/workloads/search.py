""""Search" client: short GETs at a target open-loop rate, one TCP connection per request.

Open loop (requests start on schedule whether or not earlier ones finished) because users do
not wait for each other: a slow or dead backend must show up as latency and errors, not as a
lower offered rate. Writes one CSV row per request: t_s (scheduled start, from the first
request), latency_ms, ok, error, status, bytes, backend, dc.

Run: python -m experiments.workloads.search --host VIP --rate 50 --duration 10 --out F.csv
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import random
import sys
import time

FIELDS = ("t_s", "dst", "latency_ms", "ok", "error", "status", "bytes", "backend", "dc")


async def one_request(host: str, port: int, path: str, timeout_s: float) -> dict:
    start = time.monotonic()
    row = {"dst": host, "ok": False, "error": "", "status": "", "bytes": 0, "backend": "",
           "dc": ""}
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            from experiments.workloads.httpclient import parse_head
            status, headers = parse_head(head[:-4])
            body = await reader.read()
            want = int(headers.get("content-length", len(body)))
            row.update(status=status, bytes=len(body), backend=headers.get("x-backend", ""),
                       dc=headers.get("x-dc", ""))
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
    return row


async def run(host: str, port: int, rate: float, duration: float, size: int,
              timeout_s: float, seed: int, poisson: bool) -> list[dict]:
    rng = random.Random(seed)
    t0 = time.monotonic()
    tasks, offsets, at, i = [], [], 0.0, 0
    path = f"/search?size={size}"
    while at < duration - 1e-9:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        offsets.append(at)
        tasks.append(asyncio.create_task(one_request(host, port, path, timeout_s)))
        i += 1
        # fixed rate: computed from the index, so float error cannot add a request
        at = at + rng.expovariate(rate) if poisson else i / rate
    rows = await asyncio.gather(*tasks)
    for row, offset in zip(rows, offsets):
        row["t_s"] = round(offset, 4)
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
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    rows = asyncio.run(run(args.host, args.port, args.rate, args.duration, args.size,
                           args.timeout, args.seed, args.poisson))
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
