"""Long-lived TCP connections: do established connections survive a change of the pool?

Opens `--count` connections to `GET /stream?seconds=S&interval=I` (the backend trickles a
line every I seconds) and follows each to its end. A connection survived when it received
every line and a clean end; it broke when it was reset or went silent (a connection moved
to a backend that does not know it is answered with a reset). One JSON line per connection:
index, backend, dc, ticks, expected_ticks, ok, error, t_open_s, t_end_s, sport (the
connection's source port: with the client's address, its 5-tuple).

Readiness: the first line is `opening`; once every connection has its response header (or
has failed to get one) a line `open N` follows, N the connections established. A caller
that changes the pool "after the streams are open" waits for that line
(`control.wait_streams_open`), not for a time.

Run: python -m experiments.workloads.streams --host VIP --count 24 --seconds 12
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


async def one(index: int, host: str, port: int, seconds: float, interval: float,
              t0: float, opened) -> dict:
    row = {"index": index, "backend": "", "dc": "", "ticks": 0,
           "expected_ticks": int(seconds / interval + 1e-9), "ok": False, "error": "",
           "sport": 0,
           "t_open_s": round(time.monotonic() - t0, 3)}
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        row["sport"] = writer.get_extra_info("sockname")[1]
        writer.write(f"GET /stream?seconds={seconds}&interval={interval} HTTP/1.1\r\n"
                     f"Host: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("x-backend:"):
                row["backend"] = line.split(":", 1)[1].strip()
            elif line.lower().startswith("x-dc:"):
                row["dc"] = line.split(":", 1)[1].strip()
        await asyncio.wait_for(reader.readline(), 5)  # backend=... dc=... line
        opened(True)
        while True:
            # Silence for several intervals means the path is gone (no reset came back).
            line = await asyncio.wait_for(reader.readline(), max(3.0, 10 * interval))
            if not line:
                break
            if line.startswith(b"tick"):
                row["ticks"] += 1
        row["ok"] = row["ticks"] >= row["expected_ticks"]
        if not row["ok"]:
            row["error"] = "short"
    except (ConnectionResetError, asyncio.IncompleteReadError):
        row["error"] = "reset"
    except (TimeoutError, asyncio.TimeoutError):
        row["error"] = "timeout"
    except OSError as exc:
        row["error"] = exc.strerror or type(exc).__name__
    finally:
        opened(False)
        if writer is not None:
            writer.close()
    row["t_end_s"] = round(time.monotonic() - t0, 3)
    return row


async def run(host, port, count, seconds, interval, spread) -> list[dict]:
    t0 = time.monotonic()
    tasks = []
    state = {"settled": 0, "open": 0}
    all_settled = asyncio.Event()

    def opener():
        done = []

        def opened(ok: bool) -> None:   # once per connection: established, or failed first
            if done:
                return
            done.append(ok)
            state["settled"] += 1
            state["open"] += ok
            if state["settled"] == count:
                all_settled.set()
        return opened

    for i in range(count):
        tasks.append(asyncio.create_task(one(i, host, port, seconds, interval, t0, opener())))
        await asyncio.sleep(spread / max(count, 1))
    if count:
        await all_settled.wait()
    print(f"open {state['open']}", flush=True)
    return await asyncio.gather(*tasks)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--spread", type=float, default=0.5,
                        help="open the connections over this many seconds")
    args = parser.parse_args(argv)
    print("opening", flush=True)
    for row in asyncio.run(run(args.host, args.port, args.count, args.seconds, args.interval,
                               args.spread)):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
