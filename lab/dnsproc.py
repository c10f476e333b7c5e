"""What runs inside hosts for the DNS services of a live network (started by lab/dns.py):

  python -m lab.dnsproc authority --launch FILE.json
      the GSLB authority: serves the zone on the host's own address, keeps the control
      channel on the host's loopback, probes each DC's service address over TCP and feeds
      the global view with each DC's load, read from the load files;
  python -m lab.dnsproc loadfeed --dc us1 --backend 10.101.0.11 ... --out FILE
      a DC's request rate (its backends' /stats counters, summed) written to FILE, with the
      rates served (answered 200) and shed (refused by the capacity limit) and the demand
      per path (/search, /upload: each traffic class's load) beside it;
  python -m lab.dnsproc ready --timeout 10 IP ...
      exit 0 once every resolver at IP answers an SOA query for the zone with NOERROR
      (all asked at once, each again until it does); else print those that never did, exit 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from gslb.config import GslbConfig
from topologies.plan import SERVICE_PORT
from topologies.state import write_atomic

LOAD_POLL_S = 0.5      # how often the feeder reads the backends' request counters
LOAD_WINDOW_S = 1.0    # load = requests over (at least) this window, per second


def request_rate(history: list[tuple[float, int]], window_s: float,
                 own_polls: bool = True) -> float | None:
    """Requests/s over the newest span of at least window_s of (time, counter) samples
    (None until there are two). With `own_polls`, each sample is itself one request to
    /stats counted by the counter: not load."""
    if len(history) < 2:
        return None
    now, count = history[-1]
    for i in range(len(history) - 2, -1, -1):
        then, before = history[i]
        if now - then >= window_s or i == 0:
            polls = len(history) - 1 - i if own_polls else 0
            return max(0.0, (count - before - polls) / max(now - then, 1e-3))
    return None


COUNTERS = ("requests", "served", "shed", "search", "upload")
PATHS = ("search", "upload")     # per-class demand: ServiceInfo.key of search and upload


async def _backend_counters(ip: str, port: int = SERVICE_PORT) -> tuple[int, ...] | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 0.4)
        writer.write(f"GET /stats HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
                     .encode())
        data = await asyncio.wait_for(reader.read(), 0.4)
        writer.close()
        stats = json.loads(data.split(b"\r\n\r\n", 1)[1])
        stats.update(stats.get("by_path", {}))
        return tuple(int(stats.get(key, 0)) for key in COUNTERS)
    except (OSError, asyncio.TimeoutError, ValueError, KeyError, IndexError):
        return None


def loadfeed_main(dc: str, backends: list[str], out: str) -> int:
    """Every LOAD_POLL_S: the DC's request rate (sum over its reachable backends; what the
    global view takes as its load) -> `out`, with served_rps, shed_rps and by_service (the
    demand on /search and on /upload: each traffic class's load)."""
    history: dict[str, list[tuple[float, tuple[int, ...]]]] = {ip: [] for ip in backends}

    async def loop() -> None:
        while True:
            started = time.monotonic()
            counts = await asyncio.gather(*(_backend_counters(ip) for ip in backends))
            now = time.monotonic()
            totals, known = [0.0] * len(COUNTERS), False
            for ip, count in zip(backends, counts):
                hist = history[ip]
                if count is None or (hist and count[0] < hist[-1][1][0]):
                    hist.clear()  # unreachable or restarted: start over
                    continue
                hist.append((now, count))
                del hist[:-20]
                for k in range(len(COUNTERS)):
                    rate = request_rate([(t, c[k]) for t, c in hist], LOAD_WINDOW_S,
                                        own_polls=k == 0)
                    if rate is not None:
                        totals[k] += rate
                        known = True
            if known:
                write_atomic(Path(out), json.dumps({
                    "dc": dc, "rps": round(totals[0], 1), "served_rps": round(totals[1], 1),
                    "shed_rps": round(totals[2], 1),
                    "by_service": {k: round(totals[3 + i], 1) for i, k in enumerate(PATHS)},
                    "time": time.time()}))
            await asyncio.sleep(max(0.0, LOAD_POLL_S - (time.monotonic() - started)))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(loop())
    except KeyboardInterrupt:
        pass
    return 0


async def read_load_files(view, files: dict[str, str], interval_s: float = 0.25,
                          stale_s: float = 3.0) -> None:
    """The authority's side of the load feed: fresh files -> GlobalView.set_load."""
    seen: dict[str, float] = {}
    while True:
        for dc, path in files.items():
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                continue
            if data.get("time", 0) != seen.get(dc) and time.time() - data["time"] < stale_s:
                seen[dc] = data["time"]
                by_service = data.get("by_service")
                view.set_load(dc, float(data["rps"]),
                              by_service={k: float(v) for k, v in by_service.items()}
                              if isinstance(by_service, dict) else None)
        await asyncio.sleep(interval_s)


def authority_main(launch_file: str) -> int:
    from gslb.lifecycle import run_until_signal
    from gslb.server import start_server
    spec = json.loads(Path(launch_file).read_text())
    config = GslbConfig.from_dict(spec["config"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    async def main() -> None:
        probe = {dc: (ip, int(port)) for dc, (ip, port) in spec["probe"].items()}
        server = await start_server(config, [tuple(spec["listen"])], tuple(spec["control"]),
                                    probe_targets=probe or None, seed=spec.get("seed"))
        background = [read_load_files(server.view, spec["load_files"])] \
            if spec.get("load_files") else []
        await run_until_signal(server, background)

    asyncio.run(main())
    return 0


def ready_main(ips: list[str], timeout_s: float, zone: str = "lblab.test") -> int:
    import dns.asyncquery
    import dns.exception
    import dns.message
    import dns.rcode

    async def one(ip: str) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                reply = await dns.asyncquery.udp(dns.message.make_query(zone, "SOA"), ip,
                                                 timeout=1.0)
                if reply.rcode() == dns.rcode.NOERROR:
                    return True
            except (OSError, dns.exception.DNSException):
                pass
            await asyncio.sleep(0.1)
        return False

    async def every() -> list[bool]:
        return await asyncio.gather(*(one(ip) for ip in ips))

    missing = [ip for ip, ok in zip(ips, asyncio.run(every())) if not ok]
    if missing:
        print(f"{len(missing)} of {len(ips)} never answered: {' '.join(missing[:10])}")
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="lblab's DNS services (run inside a host)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("authority", help="the GSLB authority with prober and load feed")
    p.add_argument("--launch", required=True, help="JSON written by lab.dns.start_authority")
    p = sub.add_parser("loadfeed", help="a DC's request rate from its backends -> a file")
    p.add_argument("--dc", required=True)
    p.add_argument("--backend", action="append", required=True, help="backend address")
    p.add_argument("--out", required=True)
    p = sub.add_parser("ready", help="wait until resolvers answer the zone's SOA")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("ip", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "ready":
        return ready_main(args.ip, args.timeout)
    if args.command == "loadfeed":
        return loadfeed_main(args.dc, args.backend, args.out)
    return authority_main(args.launch)


if __name__ == "__main__":
    sys.exit(main())
