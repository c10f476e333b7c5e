"""What runs inside hosts for the DNS services of a live network (started by lab/dns.py):

  python -m lab.dnsproc authority --launch FILE.json
      the GSLB authority: serves the zone on the host's own address, keeps the control
      channel on the host's loopback, probes each DC's service address over TCP and feeds
      the global view with each DC's load, read from the load files;
  python -m lab.dnsproc loadfeed --dc us1 --backend 10.101.0.11 ... [--wan na=IP:MBPS]
                              --out FILE
      a DC's request rate (its backends' /stats counters, summed) written to FILE, with the
      rates served (answered 200) and shed (refused by the capacity limit) and the demand
      per path (/search, /upload: each traffic class's load) beside it, and how full each
      WAN link into the DC is (the DC router's interface with that address: the busier
      direction's bytes over the link's bandwidth; for the spare policy's WAN headroom);
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


def parse_wan(text: str) -> tuple[str, str, float]:
    """'na=10.200.0.2:100' -> (region, the DC router's address on the link, Mbit/s)."""
    region, _, rest = text.partition("=")
    ip, _, bw = rest.rpartition(":")
    try:
        mbps = float(bw)
    except ValueError:
        mbps = 0.0
    if not region or not ip or not mbps > 0:
        raise ValueError(f"--wan {text!r}: expected REGION=IP:MBPS with MBPS > 0")
    return region, ip, mbps


def interface_of(ip: str, ip_addr_text: str) -> str | None:
    """The interface holding `ip`, from `ip -o -4 addr show` output."""
    for line in ip_addr_text.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[2] == "inet" and parts[3].split("/")[0] == ip:
            return parts[1].split("@")[0]
    return None


def interface_bytes(proc_net_dev: str) -> dict[str, tuple[int, int]]:
    """/proc/net/dev text -> interface -> (rx bytes, tx bytes)."""
    out = {}
    for line in proc_net_dev.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 9:
            out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


class WanMeter:
    """How full each WAN link into this DC is: the router's interface counters, read in
    its own network namespace (/proc/net/dev), over LOAD_WINDOW_S."""

    def __init__(self, links: list[tuple[str, str, float]]) -> None:
        self.links = links
        self.ifaces: dict[str, str] = {}
        self.retry_at = 0.0
        self.history: dict[str, list[tuple[float, tuple[int, int]]]] = {}

    def sample(self, now: float) -> dict[str, dict]:
        import subprocess
        if len(self.ifaces) < len(self.links) and now >= self.retry_at:
            self.retry_at = now + 5.0      # an address not (yet) found: look again in 5 s
            try:
                text = subprocess.run(["ip", "-o", "-4", "addr", "show"],
                                      capture_output=True, text=True, timeout=2).stdout
            except (OSError, subprocess.SubprocessError):
                text = ""
            for region, ip, _ in self.links:
                name = interface_of(ip, text)
                if name:
                    self.ifaces[region] = name
        try:
            counters = interface_bytes(Path("/proc/net/dev").read_text())
        except OSError:
            return {}
        out = {}
        for region, _, mbps in self.links:
            got = counters.get(self.ifaces.get(region, ""))
            if got is None:
                continue
            hist = self.history.setdefault(region, [])
            hist.append((now, got))
            del hist[:-20]
            rates = [request_rate([(t, c[k]) for t, c in hist], LOAD_WINDOW_S,
                                  own_polls=False) for k in (0, 1)]
            if None in rates:
                continue
            rx, tx = (8 * r / 1e6 for r in rates)
            out[region] = {"rx_mbps": round(rx, 3), "tx_mbps": round(tx, 3),
                           "bw_mbps": mbps, "used": round(max(rx, tx) / mbps, 4)}
        return out


def loadfeed_main(dc: str, backends: list[str], out: str,
                  wan: list[tuple[str, str, float]] | None = None) -> int:
    """Every LOAD_POLL_S: the DC's request rate (sum over its reachable backends; what the
    global view takes as its load) -> `out`, with served_rps, shed_rps and by_service (the
    demand on /search and on /upload: each traffic class's load)."""
    history: dict[str, list[tuple[float, tuple[int, ...]]]] = {ip: [] for ip in backends}
    meter = WanMeter(wan or [])

    async def loop() -> None:
        while True:
            started = time.monotonic()
            counts = await asyncio.gather(*(_backend_counters(ip) for ip in backends))
            now = time.monotonic()
            links = meter.sample(now)
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
                    "wan": links, "time": time.time()}))
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
                by_service, wan = data.get("by_service"), data.get("wan")
                view.set_load(dc, float(data["rps"]),
                              by_service={k: float(v) for k, v in by_service.items()}
                              if isinstance(by_service, dict) else None,
                              wan={k: float(v["used"]) for k, v in wan.items()}
                              if isinstance(wan, dict) else None)
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
    p.add_argument("--wan", action="append", default=[],
                   help="REGION=IP:MBPS: the WAN link from REGION ends at this router's IP")
    p.add_argument("--out", required=True)
    p = sub.add_parser("ready", help="wait until resolvers answer the zone's SOA")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("ip", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "ready":
        return ready_main(args.ip, args.timeout)
    if args.command == "loadfeed":
        try:
            links = [parse_wan(text) for text in args.wan]
        except ValueError as exc:
            parser.error(str(exc))
        return loadfeed_main(args.dc, args.backend, args.out, links)
    return authority_main(args.launch)


if __name__ == "__main__":
    sys.exit(main())
