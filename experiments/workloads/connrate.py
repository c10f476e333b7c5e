"""New-connection rate: how many short HTTP exchanges per second a path sustains.

`--workers` concurrent loops each connect, GET a small reply, close, and repeat, for
`--duration` seconds (closed loop: measures capacity, not latency under a fixed offer).
Prints one JSON line: completed, failed, seconds, conn_per_s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


async def worker(host: str, port: int, deadline: float, counts: dict) -> None:
    request = f"GET /search?size=64 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
            writer.write(request.encode())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 3)
            counts["completed" if data.startswith(b"HTTP/1.1 200") else "failed"] += 1
        except (OSError, asyncio.TimeoutError, TimeoutError):
            counts["failed"] += 1
        finally:
            if writer is not None:
                writer.close()


async def run(host, port, workers, duration) -> dict:
    counts = {"completed": 0, "failed": 0}
    t0 = time.monotonic()
    await asyncio.gather(*(worker(host, port, t0 + duration, counts) for _ in range(workers)))
    seconds = time.monotonic() - t0
    return {**counts, "seconds": round(seconds, 3),
            "conn_per_s": round(counts["completed"] / seconds, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.host, args.port, args.workers, args.duration))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
