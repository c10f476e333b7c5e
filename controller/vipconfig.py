"""The VIP app's configuration: what each DC's LB switch serves, derived from the network plan.

Pure: `from_plan()` turns a NetworkPlan into a JSON-able dict written before the controller
starts (the controller never sees Mininet); `load()` turns that dict into vipflows state.
Every backend's MAC and switch port is known in advance because the plan fixes them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from controller.vipflows import Backend, LbSwitch, Vip
from topologies.plan import NetworkPlan, mac_for


def vip_mac(vip_ip) -> str:
    return mac_for(vip_ip, kind=0x1C)


def from_plan(plan: NetworkPlan, health_dir: Path | None = None,
              overrides: dict | None = None, gre: bool = False) -> dict:
    """`overrides` may set mode/algorithm/conntrack/reactive/table_size for every VIP.
    `gre`: the LB switches have GRE ports and underlays (topologies/gre.py): each switch
    config names its `gre_port` and `gre_mark`, other DCs' backends are known by name
    (addable over REST in gre mode), and `remote_backends` of the scenario join the pool."""
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
            from topologies import gre as gre_mod
            gre_extra = {"gre_port": gre_mod.GRE_OFPORT, "gre_mark": gre_mod.mark_for(index)}
            for other in plan.scenario.dcs:
                if other.name != dc.name:
                    hosts.update({str(h.ip): {"name": h.name, "mac": None, "port": None}
                                  for h in plan.hosts_in(other.name, "backend")})
            for other in getattr(dc, "remote_backends", ()):
                backends += [{"name": h.name, "ip": str(h.ip), "mac": None, "port": None,
                              "weight": 1.0} for h in plan.hosts_in(other, "backend")]
        vip = {"name": dc.name, "index": index, "address": str(dc.vip),
               "mac": vip_mac(dc.vip), "mode": dc.mode, "algorithm": dc.algorithm,
               "conntrack": dc.conntrack, "ports": [80], "backends": backends}
        vip.update({k: v for k, v in overrides.items()
                    if k in ("mode", "algorithm", "conntrack", "reactive", "table_size")})
        switches[str(sw.dpid)] = {
            "dc": dc.name, "uplink_port": plan.router(dc.name).switch_port,
            "subnet": str(dc.subnet), "hosts": hosts, "vips": [vip], **gre_extra}
    return {"switches": switches, "health_dir": str(health_dir) if health_dir else None}


def write(config: dict, path: Path) -> None:
    from topologies.state import write_atomic
    write_atomic(Path(path), json.dumps(config, indent=1))


@dataclass
class SwitchConfig:
    dpid: int
    dc: str
    lb: LbSwitch
    vips: dict[str, Vip]
    hosts: dict[str, dict] = field(default_factory=dict)   # ip -> name, mac, port


def vip_from_dict(d: dict) -> Vip:
    backends = tuple(Backend(name=b["name"], ip=b["ip"], mac=b.get("mac"),
                             switch_port=b.get("port"), weight=float(b.get("weight", 1.0)),
                             state=b.get("state", "up")) for b in d["backends"])
    return Vip(name=d["name"], address=d["address"], mac=d["mac"],
               ports=tuple(d.get("ports", (80,))), mode=d["mode"], algorithm=d["algorithm"],
               conntrack=bool(d["conntrack"]), table_size=d.get("table_size"),
               backends=backends, index=int(d["index"]), reactive=bool(d.get("reactive")))


def load(config: dict) -> dict[int, SwitchConfig]:
    out = {}
    for dpid_text, sw in config["switches"].items():
        dpid = int(dpid_text)
        lb = LbSwitch(uplink_port=int(sw["uplink_port"]), dc_subnet=sw["subnet"],
                      gre_port=sw.get("gre_port"), gre_mark=int(sw.get("gre_mark") or 0))
        vips = {v["name"]: vip_from_dict(v) for v in sw["vips"]}
        out[dpid] = SwitchConfig(dpid, sw["dc"], lb, vips, sw.get("hosts", {}))
    return out
