"""The contract between the base L2 app and the VIP app, checked by behaviour: both apps'
flows in one fake table, as on a DC's switch (controller/vipflows.py states the contract)."""
from __future__ import annotations

import dataclasses

import pytest

from controller import l2logic
from controller import vipflows as vf
from controller.flows import FLOOD, ReadBack
from controller.hashing import FlowKey
from controller.l2logic import BASE_COOKIE, Learn, MacTables
from controller.vipmodel import TableLayout
from support.fakeoftable import CONTROLLER, FakeOFTable
from support.vipcase import (BY_PORT, CHECKER_IP, KEYS, ROUTER_MAC, SWITCH, UPLINK, VIP_IP,
                             VIP_MAC, backends, client_packet, vip, without)

CHECKER_MAC = "02:1b:0a:65:00:02"
CHECKER_PORT = 7
STATIONS = [(ROUTER_MAC, UPLINK), (CHECKER_MAC, CHECKER_PORT)] + \
    [(b.mac, b.switch_port) for b in backends()]


def dc_switch(*vips) -> FakeOFTable:
    """A DC switch after both apps connected and the L2 app learnt every station."""
    t = FakeOFTable()
    t.apply(l2logic.table_miss_flows())
    macs = MacTables()
    for mac, port in STATIONS:
        delete, add = l2logic.learn_flows(macs.packet_in(1, port, mac))
        assert not delete
        t.apply(add)
    t.apply_vips(SWITCH, list(vips or [vip()]))
    return t


def l2_flows(t: FakeOFTable) -> list:
    return t.flows(cookie=BASE_COOKIE)


def only_l2(trace) -> bool:
    return all(h.cookie == BASE_COOKIE for h in trace.hits)


@pytest.mark.parametrize("mode", ["nat", "dsr"])
def test_client_packets_take_the_vip_path_and_never_reach_l2(mode):
    t = dc_switch(vip(mode=mode))
    for key in KEYS[:50]:
        tr = t.trace(client_packet(key))
        (out,) = tr.outputs   # one copy, to a backend: no controller copy, no flood
        assert out.port in BY_PORT
        assert not any(h.cookie == BASE_COOKIE for h in tr.hits)


@pytest.mark.parametrize("mode", ["nat", "dsr"])
def test_traffic_inside_the_dc_is_switched_by_l2_unchanged(mode):
    """Health checks from the DC router's namespace to a backend, and the answers."""
    t = dc_switch(vip(mode=mode))
    b = backends()[2]
    probe = {"in_port": CHECKER_PORT, "eth_src": CHECKER_MAC, "eth_dst": b.mac,
             **FlowKey(CHECKER_IP, b.ip, 6, 50000, 80).fields()}
    answer = {"in_port": b.switch_port, "eth_src": b.mac, "eth_dst": CHECKER_MAC,
              **FlowKey(b.ip, CHECKER_IP, 6, 80, 50000).fields()}
    for pkt, port in ((probe, b.switch_port), (answer, CHECKER_PORT)):
        tr = t.trace(pkt)
        assert only_l2(tr) and [o.port for o in tr.outputs] == [port]
        assert tr.outputs[0].fields == pkt   # headers unchanged


def test_dsr_replies_leave_through_l2_and_nat_replies_through_the_vip_flows():
    reply_from = backends()[0]

    def reply(src_ip):
        return {"in_port": reply_from.switch_port, "eth_src": reply_from.mac,
                "eth_dst": ROUTER_MAC, **FlowKey(src_ip, "192.0.2.7", 6, 80, 40000).fields()}
    dsr = dc_switch(vip(mode="dsr")).trace(reply(VIP_IP))
    assert only_l2(dsr) and [o.port for o in dsr.outputs] == [UPLINK]
    assert dsr.outputs[0]["ipv4_src"] == VIP_IP
    nat = dc_switch(vip(mode="nat")).trace(reply(reply_from.ip))
    assert not only_l2(nat) and [o.port for o in nat.outputs] == [UPLINK]
    assert (nat.outputs[0]["ipv4_src"], nat.outputs[0]["eth_src"]) == (VIP_IP, VIP_MAC)


def test_unknown_stations_are_flooded_and_learnt_beside_the_vip_flows():
    t = dc_switch()
    pkt = {"in_port": 30, "eth_src": "02:1b:0a:65:00:99", "eth_dst": "02:1b:0a:65:00:98",
           **FlowKey("10.101.0.99", "10.101.0.98", 6, 1000, 2000).fields()}
    ports = [o.port for o in t.trace(pkt).outputs]
    assert ports == [CONTROLLER, FLOOD]   # headers to the L2 app, the packet flooded


def test_arp_for_the_vip_is_answered_in_the_switch_other_arp_is_flooded():
    t = dc_switch()
    req = {"in_port": UPLINK, "eth_type": 0x0806, "eth_src": ROUTER_MAC,
           "eth_dst": "ff:ff:ff:ff:ff:ff", "arp_op": 1, "arp_sha": ROUTER_MAC,
           "arp_spa": "10.101.0.1", "arp_tha": "00:00:00:00:00:00", "arp_tpa": VIP_IP}
    (out,) = t.lookup(req)
    assert (out.port, out["arp_op"], out["arp_sha"]) == (UPLINK, 2, VIP_MAC)
    other = t.trace(dict(req, arp_tpa=backends()[0].ip))
    assert only_l2(other) and [o.port for o in other.outputs] == [FLOOD]


def test_each_app_changes_only_its_own_flows():
    v = vip(mode="nat")
    t = dc_switch(v)
    l2_before = l2_flows(t)
    # The VIP app resynchronises from everything a flow stats reply would show.
    change = vf.vip_diff(t.read_back(), vf.desired_flows(SWITCH, [without(v, "b3")]))
    assert change.delete and not any(f.cookie == BASE_COOKIE for f in change.delete)
    t.apply_diff(change)
    assert l2_flows(t) == l2_before
    # The L2 app: a station that moved loses its old source flow, and nothing else.
    vip_before = t.flows(cookie=vf.COOKIE_VIP, mask=vf.COOKIE_PREFIX_MASK)
    delete, add = l2logic.learn_flows(Learn(CHECKER_MAC, 8, moved_from=CHECKER_PORT))
    for f in delete:
        t.delete_strict(ReadBack(f.table, f.priority, f.match, f.cookie))
    t.apply(add)
    assert t.flows(cookie=vf.COOKIE_VIP, mask=vf.COOKIE_PREFIX_MASK) == vip_before
    assert len(l2_flows(t)) == len(l2_before)   # one source flow moved, dst flow replaced
    b = backends()[1]
    to_checker = {"in_port": b.switch_port, "eth_src": b.mac, "eth_dst": CHECKER_MAC,
                  **FlowKey(b.ip, CHECKER_IP, 6, 80, 50000).fields()}
    assert [o.port for o in t.lookup(to_checker)] == [8]


def test_vip_tables_elsewhere_still_leave_the_l2_tables_alone():
    sw = dataclasses.replace(SWITCH, tables=TableLayout.starting_at(20))
    t = FakeOFTable()
    t.apply(l2logic.table_miss_flows())
    t.apply_vips(sw, [vip()])
    assert {f.table for f in t.flows() if f.cookie != BASE_COOKIE} == {0, *range(20, 26)}
    (out,) = t.lookup(client_packet(KEYS[0]))
    assert out.port in BY_PORT
