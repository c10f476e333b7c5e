"""Which latency the relays take off the WAN delay so that host-to-host RTTs match the
scenario. Pure: no Mininet, unit-tested.

Why: with the userspace OVS datapath every switch traversal costs about 0.1-0.45 ms here
(ovs-vswitchd's main thread polls the veth ports), so a host-to-host path, which crosses the
LAN switch at each end on top of its WAN links, read 0.6-1.5 ms above the configured RTT
while each WAN link alone was within 0.15 ms. The scenario's delays describe the sites'
distance, not this artefact, so LiveNet.calibrate measures each site's LAN round trip
(router <-> first host, `lan_rtt_ms`) and the relays subtract half of it, one way, from frames
that come from that site's subnet (on the first WAN link they cross) or go to it (on the
last). Per-frame, by address, so the correction is exact for every path: a direct region-DC
path, a path through a transit site (whose LAN it never crosses), and router-to-router
traffic (no LAN, no correction). Under load the LAN's queueing delay is real and stays.
"""
from __future__ import annotations

from topologies.plan import site_subnets
from topologies.relay.link import Compensation

# A LAN faster than this needs no correction (the kernel datapath: ~0.02-0.05 ms).
MIN_LAN_RTT_MS = 0.05
# Roles whose first host stands for its site's LAN, in order of preference.
PROBE_ROLES = ("client", "backend", "resolver", "authority")


def lan_probe_host(plan, site: str):
    """The host whose round trip to its router measures `site`'s LAN (None if empty)."""
    hosts = plan.hosts_in(site)
    for role in PROBE_ROLES:
        for h in hosts:
            if h.role == role:
                return h
    return hosts[0] if hosts else None


def one_way_ms(lan_rtt_ms: float | None) -> float:
    """The one-way correction for a LAN with this measured round trip."""
    if lan_rtt_ms is None or lan_rtt_ms < MIN_LAN_RTT_MS:
        return 0.0
    return round(lan_rtt_ms / 2, 4)


def compensations(plan, lan_rtt_ms: dict) -> dict:
    """wan.index -> (comp_ab, comp_ba): the Compensation rules of each WAN link's relay.
    a->b frames from a's subnet lose a's one-way LAN time, frames to b's subnet lose b's; and
    the mirror for b->a. Never more than the link's own delay (the relay clamps at 0 too)."""
    subnets = site_subnets(plan.scenario)
    out = {}
    for wan in plan.wans:
        a, b = wan.link.a, wan.link.b
        ca = min(one_way_ms(lan_rtt_ms.get(a)), wan.link.delay_ms)
        cb = min(one_way_ms(lan_rtt_ms.get(b)), wan.link.delay_ms)
        ab, ba = [], []
        if ca > 0:
            ab.append(Compensation("src", str(subnets[a]), ca))
            ba.append(Compensation("dst", str(subnets[a]), ca))
        if cb > 0:
            ab.append(Compensation("dst", str(subnets[b]), cb))
            ba.append(Compensation("src", str(subnets[b]), cb))
        out[wan.index] = (tuple(ab), tuple(ba))
    return out


def direct_path_hosts(plan, wan):
    """(host in a, host in b) whose traffic crosses exactly this WAN link, or None: the
    end-to-end check of the link after correction."""
    if plan.path_wans(wan.link.a, wan.link.b) != [wan]:
        return None
    ha, hb = lan_probe_host(plan, wan.link.a), lan_probe_host(plan, wan.link.b)
    return (ha, hb) if ha is not None and hb is not None else None
