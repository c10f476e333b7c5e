"""Read Open vSwitch's own counters (flows and ports), live, from the switch.

Numbers come from the switch, not from the controller's idea of it: bytes per flow cookie,
packets and bytes per port, and the bucket table actually installed for a VIP. Port
counters are read with `ovs-ofctl dump-ports`, which asks the datapath now; never from
OVSDB's `Interface statistics`, which ovs-vswitchd refreshes only every 5 s
(other_config:stats-update-interval): a check read there races the refresh and can pass or
fail on numbers older than the traffic it is about.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from topologies.system import LblabError, run

_FIELDS = re.compile(r"(cookie|table|n_bytes|n_packets|priority)=(0x[0-9a-f]+|\d+)")


@dataclass(frozen=True)
class FlowStat:
    cookie: int
    table: int
    priority: int
    n_packets: int
    n_bytes: int
    text: str


def flows(bridge: str, table: int | None = None) -> list[FlowStat]:
    args = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge]
    if table is not None:
        args.append(f"table={table}")
    out = []
    for line in run(args).stdout.splitlines():
        if "cookie=" not in line:
            continue
        f = {k: int(v, 0) for k, v in _FIELDS.findall(line)}
        out.append(FlowStat(f.get("cookie", 0), f.get("table", 0), f.get("priority", 32768),
                            f.get("n_packets", 0), f.get("n_bytes", 0), line.strip()))
    return out


def bytes_where(bridge: str, predicate) -> int:
    """Total n_bytes of the flows for which predicate(FlowStat) holds."""
    return sum(f.n_bytes for f in flows(bridge) if predicate(f))


def settled(read, interval_s: float = 0.5, timeout_s: float = 10.0):
    """Read a counter until two reads `interval_s` apart agree. OpenFlow flow counters of
    the userspace datapath trail the traffic: the revalidator pushes datapath statistics
    to the flows only every so often, while port counters are current."""
    import time
    deadline = time.monotonic() + timeout_s
    last = read()
    while time.monotonic() < deadline:
        time.sleep(interval_s)
        now = read()
        if now == last:
            return now
        last = now
    return last


_PORT = re.compile(r"(rx|tx) pkts=(\d+), bytes=(\d+)")


def port_stats(bridge: str, port: int) -> dict[str, int]:
    """rx_packets, rx_bytes, tx_packets, tx_bytes of one OpenFlow port, as of now."""
    out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", bridge, str(port)]).stdout
    stats = {}
    for way, packets, nbytes in _PORT.findall(out):
        stats[f"{way}_packets"], stats[f"{way}_bytes"] = int(packets), int(nbytes)
    if len(stats) != 4:
        raise LblabError(f"no counters for port {port} of {bridge} in dump-ports: "
                         f"{out.strip()[:200]!r}")
    return stats


def port_rx_bytes(bridge: str, port: int) -> int:
    """Bytes the switch received on `port` (i.e. sent by the host behind it)."""
    return port_stats(bridge, port)["rx_bytes"]


def bucket_table(bridge: str, table: int, vip_index: int) -> dict[int, int]:
    """bucket (reg0) -> backend IPv4 as int (reg1), as installed for one VIP."""
    out = {}
    for f in flows(bridge, table):
        if not re.search(rf"reg2=(0x{vip_index:x}|{vip_index})[,\s]", f.text):
            continue
        b = re.search(r"reg0=(0x[0-9a-f]+|\d+)", f.text)
        r = re.search(r"(?:set_field|load):(0x[0-9a-f]+)->(?:reg1|NXM_NX_REG1\[\])", f.text)
        if b and r:
            out[int(b.group(1), 0)] = int(r.group(1), 16)
    return out


_CONN = re.compile(r"duration=([\d.]+)s.*?nw_src=([\d.]+),nw_dst=([\d.]+),"
                   r"tp_src=(\d+),tp_dst=(\d+)")
_COOKIE = re.compile(r"cookie=(0x[0-9a-f]+)")


@dataclass(frozen=True)
class LearnedConnection:
    src: str
    sport: int
    dst: str
    dport: int
    age_s: float        # since the entry was learned (OpenFlow 1.3 reports no idle age)
    cookie: int = 0     # the learn's cookie (controller/vipflows.py decodes it)


def learned_connections(bridge: str, table: int, cookie: int, mask: int
                        ) -> list[LearnedConnection]:
    """The exact 5-tuple entries a VIP's learn actions made in one switch (cookie/mask)."""
    out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge,
               f"table={table},cookie={cookie:#x}/{mask:#x}"]).stdout
    conns = []
    for line in out.splitlines():
        m = _CONN.search(line)
        if m:
            c = _COOKIE.search(line)
            conns.append(LearnedConnection(m.group(2), int(m.group(4)), m.group(3),
                                           int(m.group(5)), float(m.group(1)),
                                           int(c.group(1), 16) if c else 0))
    return conns
