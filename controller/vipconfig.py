"""The VIP app's configuration file: what each DC's LB switch serves, as JSON.

Written before the controller starts by the lab (lab/vip_config.py derives it from the
network plan: the controller never sees Mininet); `load()` turns it into the desired state
of controller/vipmodel.py. Every backend's MAC and switch port is known in advance because
the plan fixes them. Shape:
    {"switches": {"<dpid>": {"dc", "uplink_port", "subnet", "hosts": {ip: {name, mac, port}},
                             "vips": [{name, index, address, mac, mode, algorithm,
                                       conntrack, conntrack_impl?, hash_impl?, ports,
                                       backends: [...]}],
                             "ct_zone"?, "gre_port"?, "gre_mark"?,
                             "lb"?, "lb_mac"?}},
(`lb`, `lb_mac`: one LB instance of a DC's tier, one-armed; all of a DC's share its VIPs.)
     "health_dir": "<folder of the health checkers' files>" | null}
"""
from __future__ import annotations

from dataclasses import dataclass, field

from controller.vipmodel import Backend, LbSwitch, Vip


@dataclass
class SwitchConfig:
    dpid: int
    dc: str
    lb: LbSwitch
    vips: dict[str, Vip]
    hosts: dict[str, dict] = field(default_factory=dict)   # ip -> name, mac, port
    lb_number: int = 0     # k of an LB tier's instance (0: the DC's only LB)


def vip_from_dict(d: dict, lb: int = 0) -> Vip:
    backends = tuple(Backend(name=b["name"], ip=b["ip"], mac=b.get("mac"),
                             switch_port=b.get("port"), weight=float(b.get("weight", 1.0)),
                             state=b.get("state", "up")) for b in d["backends"])
    return Vip(name=d["name"], address=d["address"], mac=d["mac"],
               ports=tuple(d.get("ports", (80,))), mode=d["mode"], algorithm=d["algorithm"],
               conntrack=bool(d["conntrack"]), table_size=d.get("table_size"),
               backends=backends, index=int(d["index"]), reactive=bool(d.get("reactive")),
               conntrack_impl=d.get("conntrack_impl", "ct"),
               hash_impl=d.get("hash_impl", "dp_hash"), lb=lb)


def load(config: dict) -> dict[int, SwitchConfig]:
    out = {}
    for dpid_text, sw in config["switches"].items():
        dpid = int(dpid_text)
        lb = LbSwitch(uplink_port=int(sw["uplink_port"]), dc_subnet=sw["subnet"],
                      gre_port=sw.get("gre_port"), gre_mark=int(sw.get("gre_mark") or 0),
                      ct_zone=int(sw.get("ct_zone") or 1), one_armed_mac=sw.get("lb_mac"))
        lb_number = int(sw.get("lb") or 0)
        vips = {v["name"]: vip_from_dict(v, lb_number) for v in sw["vips"]}
        out[dpid] = SwitchConfig(dpid, sw["dc"], lb, vips, sw.get("hosts", {}),
                                 lb_number=lb_number)
    return out
