"""Network plan -> the VIP app's configuration file (controller/vipconfig.py's shape).

The controller never sees Mininet: this file, written before it starts, tells it every LB
switch, the hosts on its segment (MACs and switch ports fixed by the plan) and the VIPs it
serves with their backends.
"""
from __future__ import annotations

import json
from pathlib import Path

from controller.vipmodel import SETTINGS
from topologies import gre as gre_plan
from topologies.plan import LB_UPLINK_PORT, SERVICE_PORT, NetworkPlan, mac_for
from topologies.state import write_atomic



def vip_mac(vip_ip) -> str:
    return mac_for(vip_ip, kind=0x1C)


def from_plan(plan: NetworkPlan, health_dir: Path | None = None,
              overrides: dict | None = None, gre: bool = False) -> dict:
    """`overrides` may set mode/algorithm/conntrack/reactive/table_size for every VIP.
    `gre`: the LB switches have GRE ports and underlays (lab/gre.py): each switch config
    names its `gre_port` and `gre_mark`, other DCs' backends are known by name (addable over
    REST in gre mode), and `remote_backends` of the scenario join the pool.
    A DC with an LB tier (plan.lbs_of) gets one entry per LB switch, with its number `lb`
    and own MAC `lb_mac` (one-armed: controller/vipflows.py); its fabric gets none."""
    overrides = overrides or {}
    switches = {}
    for index, dc in enumerate(plan.scenario.dcs, start=1):
        sw = plan.switch(dc.name)
        hosts = {str(h.ip): {"name": h.name, "mac": h.mac, "port": h.switch_port}
                 for h in plan.hosts_in(dc.name)}
        backends = [{"name": h.name, "ip": str(h.ip), "mac": h.mac, "port": h.switch_port,
                     "weight": 1.0} for h in plan.hosts_in(dc.name, "backend")]
        gre_extra = {}
        if gre:
            gre_extra = {"gre_port": gre_plan.GRE_OFPORT, "gre_mark": gre_plan.mark_for(index)}
            for other in plan.scenario.dcs:
                if other.name != dc.name:
                    hosts.update({str(h.ip): {"name": h.name, "mac": None, "port": None}
                                  for h in plan.hosts_in(other.name, "backend")})
            for other in dc.remote_backends:
                backends += [{"name": h.name, "ip": str(h.ip), "mac": None, "port": None,
                              "weight": 1.0} for h in plan.hosts_in(other, "backend")]
        vip = {"name": dc.name, "index": index, "address": str(dc.vip),
               "mac": vip_mac(dc.vip), "mode": dc.mode, "algorithm": dc.algorithm,
               "conntrack": dc.conntrack, "conntrack_impl": dc.conntrack_impl,
               "hash_impl": dc.hash_impl,
               "ports": [SERVICE_PORT], "backends": backends}
        vip.update({k: v for k, v in overrides.items() if k in SETTINGS})
        tier = plan.lbs_of(dc.name)
        if not tier:
            switches[str(sw.dpid)] = {
                "dc": dc.name, "uplink_port": plan.router(dc.name).switch_port,
                "subnet": str(dc.subnet), "hosts": hosts, "vips": [vip], "ct_zone": index,
                **gre_extra}
            continue
        # An LB tier: the fabric is plain L2; every LB switch serves the same VIP from the
        # same config, reaching every host (backends included) back out of its uplink.
        for lb in tier:
            lb_vip = dict(vip, backends=[_on_uplink(b) for b in vip["backends"]])
            lb_gre = {}
            if gre:   # each LB its own GRE port's endpoint: mark (topologies/gre.py)
                lb_gre = {"gre_port": gre_plan.GRE_OFPORT,
                          "gre_mark": gre_plan.mark_for(gre_plan.lb_index(index, lb.k))}
            switches[str(lb.switch.dpid)] = {
                "dc": dc.name, "lb": lb.k, "lb_mac": lb.mac, "uplink_port": LB_UPLINK_PORT,
                "subnet": str(dc.subnet),
                "hosts": {ip: _on_uplink(h) for ip, h in hosts.items()},
                "vips": [lb_vip], "ct_zone": index * 16 + lb.k, **lb_gre}
    return {"switches": switches, "health_dir": str(health_dir) if health_dir else None}


def _on_uplink(host: dict) -> dict:
    """A host as an LB of a tier reaches it: back out of its uplink (a GRE-only remote
    backend, with no port, stays without one)."""
    return dict(host, port=LB_UPLINK_PORT if host["port"] is not None else None)


def write(config: dict, path: Path) -> None:
    write_atomic(Path(path), json.dumps(config, indent=1))
