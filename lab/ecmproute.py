"""A DC router's VIP route as the LB tier needs it watched, and (variant `resilient`) mapped.

Runs inside the router's namespace (a Mininet node or `ip netns exec`), event-driven on
`ip -ts -o monitor route nexthop`: nothing polls.

`watch`: one JSON line per change of the main table's next hops for the VIP
(`{"t": wall-clock s, "nexthops": [gateway, ...]}`, sorted; the first line is the state
at start), so an experiment learns when the router stopped or started using an LB, with
the kernel's own timestamp of the netlink event.

`map`: the resilient-hashing variant. BIRD's multipath routes are plain RTA_MULTIPATH
routes (hash-threshold: when the set of next hops changes, the hash space is re-cut and
flows of surviving LBs move too). Linux's resilient nexthop groups (`ip nexthop ... type
resilient`, since 5.13) keep a bucket table instead, and a changed member set moves only
the buckets of a member that left (and, for a member that joined, only buckets idle for
`idle_timer`). No routing daemon Debian 12 ships programs one: BIRD 2.0.12 has no nexthop
objects; FRR 8.4 installs BGP ECMP as hash-threshold groups and replaces the group id when
the set changes. So here BIRD exports the BGP routes into a shadow kernel table (no lookup
uses it; lab/bird.py) and this agent keeps ONE resilient group in place from it:
`ip nexthop replace id GROUP group a/b/c type resilient ...` (the kernel keeps the bucket
table across a replace), and the main table's route `VIP/32 nhid GROUP`. Which LBs serve
the VIP is still decided by BGP and BFD alone; the agent only maps a set of next hops into
a group, and removes the route, group and its nexthops when it stops (SIGTERM).

Run: python -m lab.ecmproute watch --prefix 10.101.0.100/32 --out F.jsonl
     python -m lab.ecmproute map --prefix 10.101.0.100/32 --table 100 --dev lbr-us1-eth0
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

GROUP_ID = 27099               # the resilient group; its members are NH_BASE + last octet
NH_BASE = 27100
BUCKETS = 128
IDLE_TIMER_S = 1


def parse_nexthops(routes: list[dict]) -> list[str]:
    """Gateways of `ip -j route show PREFIX` output (one path or several), sorted."""
    out = set()
    for route in routes:
        if "gateway" in route:
            out.add(route["gateway"])
        for nh in route.get("nexthops", ()):
            if "gateway" in nh:
                out.add(nh["gateway"])
    return sorted(out, key=lambda ip: ipaddress.IPv4Address(ip))


def monitor_time(line: str) -> float | None:
    """Wall-clock seconds of an `ip -ts` line (`[2026-12-01T18:03:14.123648] ...`)."""
    if not line.startswith("["):
        return None
    try:
        return datetime.fromisoformat(line[1:line.index("]")]).timestamp()
    except ValueError:
        return None


def mentions(line: str, prefix: ipaddress.IPv4Network) -> bool:
    """Is this monitor line about the prefix's route (or a nexthop object: groups change
    without a route message of their own only when no route uses them)?"""
    body = line.split("] ", 1)[-1]
    words = body.split()
    if words[:1] == ["Deleted"]:
        words = words[1:]
    if not words:
        return False
    return words[0] in (str(prefix.network_address), str(prefix)) or words[0] == "id"


def table_of(line: str) -> str:
    words = line.split()
    return words[words.index("table") + 1] if "table" in words else "main"


def nexthops(prefix: ipaddress.IPv4Network, table: str = "main") -> list[str]:
    out = subprocess.run(["ip", "-j", "route", "show", "table", table, str(prefix)],
                         capture_output=True, text=True, check=False)
    try:
        return parse_nexthops(json.loads(out.stdout or "[]"))
    except ValueError:
        return []


def _monitor() -> subprocess.Popen:
    return subprocess.Popen(["ip", "-ts", "-o", "monitor", "route", "nexthop"],
                            stdout=subprocess.PIPE, text=True, bufsize=1)


def watch(prefix: ipaddress.IPv4Network, out_path: str) -> int:
    mon = _monitor()
    with open(out_path, "a", buffering=1) as out:
        last = nexthops(prefix)
        out.write(json.dumps({"t": round(time.time(), 6), "nexthops": last,
                              "initial": True}) + "\n")
        for line in mon.stdout:
            if not mentions(line, prefix) or table_of(line) != "main":
                continue
            now = nexthops(prefix)
            if now != last:
                last = now
                t = monitor_time(line) or time.time()
                out.write(json.dumps({"t": round(t, 6), "nexthops": now}) + "\n")
    return 0


class ResilientMapper:
    """Keeps GROUP_ID (type resilient) and the main route `prefix nhid GROUP_ID` equal to the
    next hops BIRD put in the shadow table."""

    def __init__(self, prefix, dev: str, buckets: int = BUCKETS,
                 idle_timer_s: int = IDLE_TIMER_S, run=subprocess.run):
        self.prefix, self.dev = prefix, dev
        self.buckets, self.idle = buckets, idle_timer_s
        self.run = run
        self.members: list[str] = []

    @staticmethod
    def nh_id(gateway: str) -> int:
        return NH_BASE + int(ipaddress.IPv4Address(gateway)) % 256

    def _ip(self, *args: str) -> None:
        self.run(["ip", *args], capture_output=True, text=True, check=False)

    def commands(self, gateways: list[str]) -> list[list[str]]:
        """The `ip` commands that take the group from self.members to `gateways`."""
        cmds = []
        for gw in gateways:
            if gw not in self.members:
                cmds.append(["nexthop", "replace", "id", str(self.nh_id(gw)), "via", gw,
                             "dev", self.dev])
        if gateways:
            group = "/".join(str(self.nh_id(gw)) for gw in gateways)
            cmds.append(["nexthop", "replace", "id", str(GROUP_ID), "group", group, "type",
                         "resilient", "buckets", str(self.buckets), "idle_timer",
                         str(self.idle)])
            if not self.members:
                cmds.append(["route", "replace", str(self.prefix), "nhid", str(GROUP_ID),
                             "proto", "static"])
        else:
            cmds += [["route", "del", str(self.prefix)],
                     ["nexthop", "del", "id", str(GROUP_ID)]]
        for gw in self.members:
            if gw not in gateways:
                cmds.append(["nexthop", "del", "id", str(self.nh_id(gw))])
        return cmds

    def apply(self, gateways: list[str]) -> None:
        if gateways == self.members:
            return
        for cmd in self.commands(gateways):
            self._ip(*cmd)
        self.members = list(gateways)

    def remove(self) -> None:
        self.apply([])


def map_routes(prefix, table: str, dev: str, buckets: int, idle_timer_s: int) -> int:
    mapper = ResilientMapper(prefix, dev, buckets, idle_timer_s)
    mon = _monitor()

    def stop(*_):
        mon.terminate()
        mapper.remove()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    mapper.apply(nexthops(prefix, table))
    print("mapping", flush=True)
    for line in mon.stdout:
        if mentions(line, prefix) and table_of(line) == table:
            mapper.apply(nexthops(prefix, table))
    stop()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("watch", help="log changes of the VIP route's next hops")
    w.add_argument("--prefix", required=True)
    w.add_argument("--out", required=True)
    m = sub.add_parser("map", help="keep a resilient group equal to a shadow table's route")
    m.add_argument("--prefix", required=True)
    m.add_argument("--table", required=True)
    m.add_argument("--dev", required=True)
    m.add_argument("--buckets", type=int, default=BUCKETS)
    m.add_argument("--idle-timer", type=int, default=IDLE_TIMER_S)
    args = parser.parse_args(argv)
    try:
        prefix = ipaddress.IPv4Network(args.prefix)
    except ValueError as exc:
        parser.error(f"--prefix: {exc}")
    if args.command == "watch":
        return watch(prefix, args.out)
    return map_routes(prefix, args.table, args.dev, args.buckets, args.idle_timer)


if __name__ == "__main__":
    sys.exit(main())
