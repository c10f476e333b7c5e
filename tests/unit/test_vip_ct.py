"""The VIP's connection table in the datapath's conntrack (conntrack_impl ct), checked by
behaviour in the fake table with both apps' flows and its small tracker: connections keep
their backend across pool changes with no flow learned per connection, NAT replies are
translated per connection, and a backend's own port 80 traffic (a client elsewhere
connecting to it directly, a DC host connecting to its own VIP) is not mistaken for a
VIP reply."""
from __future__ import annotations

import dataclasses

import pytest

from controller import l2logic
from controller import vipflows as vf
from controller.hashing import FlowKey
from controller.l2logic import MacTables
from support.fakeoftable import FakeOFTable
from support.vipcase import (BY_PORT, KEYS, ROUTER_MAC, SWITCH, UPLINK, VIP_IP, VIP_MAC,
                             backends, client_packet, replace_backend, vip, without)

HOST_IP, HOST_MAC, HOST_PORT = "10.101.0.3", "02:1b:0a:65:00:03", 5   # a DC host, not a backend
STATIONS = [(ROUTER_MAC, UPLINK), (HOST_MAC, HOST_PORT)] + \
    [(b.mac, b.switch_port) for b in backends()]


def ct_vip(**kw):
    return vip(conntrack_impl="ct", **kw)


def dc_switch(v) -> FakeOFTable:
    t = FakeOFTable()
    t.apply(l2logic.table_miss_flows())
    macs = MacTables()
    for mac, port in STATIONS:
        t.apply(l2logic.learn_flows(macs.packet_in(1, port, mac))[1])
    t.apply_vips(SWITCH, [v])
    return t


def reply_of(out, key: FlowKey, eth_dst=ROUTER_MAC) -> dict:
    """The backend's answer to the packet `out` delivered to it."""
    b = BY_PORT[out.port]
    return {"in_port": b.switch_port, "eth_src": b.mac, "eth_dst": eth_dst,
            **FlowKey(out["ipv4_dst"], key.src, 6, 80, key.sport).fields()}


def connect(t, keys) -> dict:
    """SYN and the backend's SYN-ACK for each key: key -> backend name."""
    got = {}
    for k in keys:
        (out,) = t.lookup(client_packet(k))
        t.lookup(reply_of(out, k))
        got[k] = BY_PORT[out.port].name
    return got


def backend_now(t, k) -> str | None:
    outs = t.lookup(client_packet(k))
    return BY_PORT[outs[0].port].name if outs else None


@pytest.mark.parametrize("mode", ["nat", "dsr"])
def test_a_new_connection_is_committed_not_learned(mode):
    t = dc_switch(ct_vip(mode=mode))
    flows_before = len(t.flows())
    tr = t.trace(client_packet(KEYS[0]))
    (out,) = tr.outputs
    b = BY_PORT[out.port]
    assert out["eth_dst"] == b.mac
    assert out["ipv4_dst"] == (b.ip if mode == "nat" else VIP_IP)
    assert tr.learned == [] and len(t.flows()) == flows_before
    (conn,) = t.conntrack(SWITCH.ct_zone)
    assert conn.mark == vf.ipv4_int(b.ip)


@pytest.mark.parametrize("algorithm", ["modn", "maglev"])
@pytest.mark.parametrize("mode", ["nat", "dsr"])
def test_connections_keep_their_backend_when_the_pool_changes(mode, algorithm):
    """mod N remaps most keys when N changes; the tracker keeps every connection whose
    backend stays, whatever the hash does."""
    v = ct_vip(mode=mode, algorithm=algorithm)
    t = dc_switch(v)
    before = connect(t, KEYS[:200])
    gone = "b7"
    t.apply_diff(vf.vip_diff(t.flows(), vf.desired_flows(SWITCH, [without(v, gone)])))
    for k, name in before.items():
        if name != gone:
            assert backend_now(t, k) == name
    fresh = [backend_now(t, k) for k in KEYS[200:300]]
    assert gone not in fresh and None not in fresh


def test_nat_reply_is_translated_back_to_the_vip_and_switched_by_l2():
    t = dc_switch(ct_vip(mode="nat"))
    k = KEYS[0]
    (out,) = t.lookup(client_packet(k))
    (back,) = t.lookup(reply_of(out, k))
    assert back.port == UPLINK
    assert (back["ipv4_src"], back["eth_src"], back["tcp_src"]) == (VIP_IP, VIP_MAC, 80)
    assert (back["ipv4_dst"], back["tcp_dst"]) == (k.src, k.sport)


def test_a_backend_answers_a_direct_client_from_its_own_address():
    """A client elsewhere connects to the backend itself on port 80 (no VIP): the answer is
    not a tracked VIP reply and leaves untouched (the learn implementation rewrote it)."""
    t = dc_switch(ct_vip(mode="nat"))
    b = backends()[2]
    to_backend = {"in_port": UPLINK, "eth_src": ROUTER_MAC, "eth_dst": b.mac,
                  **FlowKey("10.102.0.20", b.ip, 6, 41000, 80).fields()}
    (there,) = t.lookup(to_backend)
    assert there.port == b.switch_port and there["ipv4_dst"] == b.ip
    answer = {"in_port": b.switch_port, "eth_src": b.mac, "eth_dst": ROUTER_MAC,
              **FlowKey(b.ip, "10.102.0.20", 6, 80, 41000).fields()}
    (out,) = t.lookup(answer)
    assert out.port == UPLINK
    assert (out["ipv4_src"], out["eth_src"]) == (b.ip, b.mac)


def test_a_dc_host_reaches_its_own_vip_hairpin():
    t = dc_switch(ct_vip(mode="nat"))
    k = FlowKey(HOST_IP, VIP_IP, 6, 45000, 80)
    pkt = {"in_port": HOST_PORT, "eth_src": HOST_MAC, "eth_dst": VIP_MAC, **k.fields()}
    (out,) = t.lookup(pkt)
    b = BY_PORT[out.port]
    assert out["ipv4_dst"] == b.ip
    (back,) = t.lookup(reply_of(out, k, eth_dst=HOST_MAC))   # the backend ARPs the host
    assert back.port == HOST_PORT
    assert (back["ipv4_src"], back["eth_src"], back["ipv4_dst"]) == (VIP_IP, VIP_MAC, HOST_IP)


def test_dsr_replies_are_tracked_and_left_unchanged():
    t = dc_switch(ct_vip(mode="dsr"))
    k = KEYS[1]
    (out,) = t.lookup(client_packet(k))
    tr = t.trace(reply_of(out, k))
    (back,) = tr.outputs
    assert back.port == UPLINK
    assert (back["ipv4_src"], back["eth_src"]) == (VIP_IP, BY_PORT[out.port].mac)
    assert t.conntrack()[0].replied   # the tracker saw both directions


@pytest.mark.parametrize("state", ["drain", "down"])
def test_drained_backend_keeps_its_connections_and_gets_no_new_ones(state):
    v = ct_vip(mode="nat")
    t = dc_switch(v)
    before = connect(t, KEYS[:200])
    victim = before[KEYS[0]]
    t.apply_diff(vf.vip_diff(t.flows(), vf.desired_flows(
        SWITCH, [replace_backend(v, victim, state=state)])))
    assert all(backend_now(t, k) == name for k, name in before.items())
    assert victim not in {backend_now(t, k) for k in KEYS[200:300]}


def test_restart_resync_is_a_no_op_and_conntrack_is_never_touched():
    v = ct_vip(mode="nat")
    t = dc_switch(v)
    connect(t, KEYS[:20])
    d = vf.vip_diff(t.read_back(), vf.desired_flows(SWITCH, [v]))
    assert d.empty and len(t.conntrack()) == 20


def test_zone_is_the_switchs_own():
    sw = dataclasses.replace(SWITCH, ct_zone=7)
    t = FakeOFTable()
    t.apply_vips(sw, [ct_vip(mode="nat")])
    t.lookup(client_packet(KEYS[0]))
    assert len(t.conntrack(7)) == 1 and t.conntrack(1) == []


def test_reactive_and_gre_keep_the_learn_implementation():
    from controller.vipmodel import uses_ct
    assert uses_ct(ct_vip(mode="nat")) and uses_ct(ct_vip(mode="dsr"))
    assert not uses_ct(ct_vip(reactive=True)) and not uses_ct(ct_vip(mode="gre"))
    assert not uses_ct(ct_vip(conntrack=False)) and not uses_ct(vip())
