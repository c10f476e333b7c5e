"""One LB switch and its VIP as the unit tests of the VIP app use them: a /24 DC segment
with eight backends on ports 10-17, the router on port 1, a GRE port; helpers to install a
VIP's flows in the fake table and send client packets through them."""
from __future__ import annotations

import dataclasses

from controller import flows
from controller import vipflows as vf
from controller.hashing import FlowKey, synthetic_keys
from controller.vipmodel import Backend, LbSwitch, Vip
from support.fakeoftable import FakeOFTable

UPLINK = 1
GRE_PORT = 99
SUBNET = "10.101.0.0/24"
VIP_IP = "10.101.0.100"
VIP_MAC = "02:1b:1a:b0:00:01"
ROUTER_MAC = "00:00:00:00:00:fe"
CHECKER_IP = "10.101.0.2"
SWITCH = LbSwitch(uplink_port=UPLINK, dc_subnet=SUBNET, gre_port=GRE_PORT)


def backends(n: int = 8) -> tuple[Backend, ...]:
    return tuple(Backend(f"b{i}", f"10.101.0.{10 + i}", f"00:00:00:00:01:{10 + i:02x}",
                         10 + i) for i in range(n))


BY_PORT = {b.switch_port: b for b in backends()}
BY_IP = {b.ip: b for b in backends()}


def vip(**kw) -> Vip:
    base = dict(name="web", address=VIP_IP, mac=VIP_MAC, backends=backends())
    base.update(kw)
    return Vip(**base)


def installed(*vips: Vip, loads=None) -> FakeOFTable:
    t = FakeOFTable()
    t.apply_vips(SWITCH, list(vips), loads)
    return t


def client_packet(key: FlowKey) -> dict:
    return {"in_port": UPLINK, "eth_src": ROUTER_MAC, "eth_dst": VIP_MAC, **key.fields()}


def send(t: FakeOFTable, key: FlowKey, now: float = 0.0):
    """The one backend a client packet reaches (None when dropped)."""
    outs = t.lookup(client_packet(key), now)
    assert len(outs) <= 1, outs
    return outs[0] if outs else None


def backend_of(out) -> str | None:
    return BY_PORT[out.port].name if out is not None else None


def replace_backend(v: Vip, name: str, **changes) -> Vip:
    return dataclasses.replace(v, backends=tuple(
        dataclasses.replace(b, **changes) if b.name == name else b for b in v.backends))


def without(v: Vip, name: str) -> Vip:
    return dataclasses.replace(v, backends=tuple(b for b in v.backends if b.name != name))


def resync(t: FakeOFTable, *vips: Vip) -> flows.FlowDiff:
    t.add_vip_groups(SWITCH, vips)
    d = vf.vip_diff(t.flows(), vf.desired_flows(SWITCH, list(vips)))
    t.apply_diff(d)
    return d


KEYS = synthetic_keys(400, VIP_IP)
