"""Hold many established connections open through a path: `--count` TCP connections to
host:port, opened at `--rate` per second, each proven alive by one keep-alive HTTP request
(GET /health, answered), then left idle until stdin closes.

Prints one JSON line once every connection was tried (`--retries`: a failed attempt connects
again, as a client would): opened, failed, errors_by, retried, seconds, then waits;
on stdin EOF closes them all and prints a second line: still_open (connections whose server
had not closed them meanwhile). For `make bench` (vip_concurrent_connections).

Run: python -m experiments.workloads.holdconns --host VIP --count 50000 --rate 5000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from experiments.workloads.search import raise_fd_limit, run_loop


async def one(host: str, port: int, timeout_s: float):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    writer.write(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        raise ConnectionError("not 200")
    await asyncio.wait_for(reader.readexactly(3), timeout_s)   # "ok\n"
    return reader, writer


async def run(host: str, port: int, count: int, rate: float, timeout_s: float,
              retries: int = 0) -> None:
    held, failed, why, retried = [], 0, {}, 0
    t0 = time.monotonic()
    pending = set()

    async def attempt():
        nonlocal failed, retried
        for tries_left in range(retries, -1, -1):
            try:
                held.append(await one(host, port, timeout_s))
                return
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ConnectionError) as exc:
                kind = type(exc).__name__
                why[kind] = why.get(kind, 0) + 1
                if tries_left:
                    retried += 1       # as a client would: connect again
                else:
                    failed += 1
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(attempt())
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    print(json.dumps({"opened": len(held), "failed": failed, "errors_by": why,
                      "retried": retried,
                      "seconds": round(time.monotonic() - t0, 3)}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    still = sum(1 for r, _ in held if not r.at_eof())
    for _, w in held:
        w.close()
    print(json.dumps({"still_open": still}), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000.0, help="new connections per s")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--retries", type=int, default=0,
                        help="connect again this many times after a failed attempt")
    args = parser.parse_args(argv)
    if args.count <= 0 or args.rate <= 0:
        parser.error("--count and --rate must be positive")
    if args.retries < 0:
        parser.error("--retries must be >= 0")
    raise_fd_limit(args.count + 1024)
    run_loop(run(args.host, args.port, args.count, args.rate, args.timeout, args.retries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
