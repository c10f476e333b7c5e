"""VIP flows, executed in the fake flow table: where does each packet go, with which headers?
(With the L2 app's flows beside them: test_two_apps.py; rendering: test_flow_rendering.py.)"""
from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter
from types import SimpleNamespace

import pytest

from controller import flows, vipmodel
from controller import vipflows as vf
from controller.hashing import FlowKey, synthetic_keys
from controller.vipmodel import Backend, Vip, VipError
from support.fakeoftable import CONTROLLER, FakeOFTable, FakeOFTableError
from support.vipcase import (BY_PORT, CHECKER_IP, GRE_PORT, KEYS, ROUTER_MAC, SUBNET, SWITCH,
                             UPLINK, VIP_IP, VIP_MAC, backend_of, backends, client_packet,
                             installed, replace_backend, resync, send, vip, without)


# --- ARP -----------------------------------------------------------------------------------
def test_arp_for_vip_answered_by_the_switch():
    t = installed(vip())
    req = {"in_port": UPLINK, "eth_type": 0x0806, "eth_src": ROUTER_MAC,
           "eth_dst": "ff:ff:ff:ff:ff:ff", "arp_op": 1, "arp_sha": ROUTER_MAC,
           "arp_spa": "10.101.0.1", "arp_tha": "00:00:00:00:00:00", "arp_tpa": VIP_IP}
    (out,) = t.lookup(req)
    assert out.port == UPLINK
    assert (out["eth_src"], out["eth_dst"], out["arp_op"]) == (VIP_MAC, ROUTER_MAC, 2)
    assert (out["arp_sha"], out["arp_spa"]) == (VIP_MAC, VIP_IP)
    assert (out["arp_tha"], out["arp_tpa"]) == (ROUTER_MAC, "10.101.0.1")


def test_arp_for_other_addresses_left_to_l2():
    t = installed(vip())
    tr = t.trace({"in_port": UPLINK, "eth_type": 0x0806, "arp_op": 1, "eth_src": ROUTER_MAC,
                  "arp_tpa": "10.101.0.10", "arp_spa": "10.101.0.1"})
    assert tr.hits == [] and tr.misses == [0]


# --- client -> VIP -------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["modn", "maglev", "leastload"])
def test_nat_rewrites_ip_and_mac_to_a_pool_backend(algorithm):
    t = installed(vip(mode="nat", algorithm=algorithm))
    seen = Counter()
    for k in KEYS[:100]:
        out = send(t, k)
        b = BY_PORT[out.port]
        assert (out["ipv4_dst"], out["eth_dst"]) == (b.ip, b.mac)
        assert (out["ipv4_src"], out["tcp_src"], out["tcp_dst"]) == (k.src, k.sport, 80)
        seen[b.name] += 1
    assert len(seen) >= (2 if algorithm == "leastload" else 6)


def test_dsr_rewrites_only_the_mac():
    t = installed(vip(mode="dsr"))
    for k in KEYS[:50]:
        out = send(t, k)
        b = BY_PORT[out.port]
        assert out["eth_dst"] == b.mac and out["ipv4_dst"] == VIP_IP


def test_gre_sets_tunnel_destination_and_uses_the_gre_port():
    far = tuple(Backend(f"r{i}", f"10.102.0.{10 + i}") for i in range(3))
    t = installed(vip(mode="gre", backends=far))
    dests = set()
    for k in KEYS[:60]:
        out = send(t, k)
        assert out.port == GRE_PORT and out["ipv4_dst"] == VIP_IP
        dests.add(out["tun_ipv4_dst"])
    assert dests == {b.ip for b in far}


def test_same_connection_same_backend_and_every_packet_same_answer():
    t = installed(vip(conntrack=False))
    assert all(backend_of(send(t, k)) == backend_of(send(t, k)) for k in KEYS[:50])


def test_other_traffic_to_the_vip_is_dropped_not_flooded():
    t = installed(vip())
    key = FlowKey("192.0.2.7", VIP_IP, 6, 40000, 22)
    tr = t.trace(client_packet(key))
    assert tr.outputs == [] and tr.hits[0].priority == vf.PRIO_VIP_OTHER


def test_several_service_ports():
    t = installed(vip(ports=(80, 443)))
    assert send(t, FlowKey("192.0.2.7", VIP_IP, 6, 40000, 443)) is not None


# --- NAT reverse path and traffic inside the DC ----------------------------------------------
def test_nat_reply_gets_the_vip_as_source():
    t = installed(vip(mode="nat"))
    b = backends()[3]
    reply = {"in_port": b.switch_port, "eth_src": b.mac, "eth_dst": ROUTER_MAC,
             **FlowKey(b.ip, "192.0.2.7", 6, 80, 40000).fields()}
    (out,) = t.lookup(reply)
    assert out.port == UPLINK
    assert (out["ipv4_src"], out["eth_src"]) == (VIP_IP, VIP_MAC)
    assert (out["ipv4_dst"], out["eth_dst"], out["tcp_dst"]) == ("192.0.2.7", ROUTER_MAC, 40000)


def test_dsr_replies_are_not_rewritten():
    t = installed(vip(mode="dsr"))
    b = backends()[0]
    reply = {"in_port": b.switch_port, "eth_src": b.mac, "eth_dst": ROUTER_MAC,
             **FlowKey(VIP_IP, "192.0.2.7", 6, 80, 40000).fields()}
    assert t.trace(reply).hits == []   # left to L2


def test_outside_prefixes_cover_exactly_the_complement():
    prefixes = [ipaddress.IPv4Network(p) for p in vf.outside_prefixes(SUBNET)]
    assert len(prefixes) == 24
    net = ipaddress.IPv4Network(SUBNET)
    for a in ("0.0.0.0", "10.101.1.0", "10.100.255.255", "192.0.2.7", "255.255.255.255",
              "10.101.0.0", "10.101.0.255", CHECKER_IP):
        ip = ipaddress.IPv4Address(a)
        assert sum(ip in p for p in prefixes) == (0 if ip in net else 1), a


# --- pool changes, conntrack, drain ----------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["modn", "maglev"])
def test_conntrack_keeps_connections_to_surviving_backends(algorithm):
    v = vip(algorithm=algorithm, conntrack=True)
    t = installed(v)
    before = {k: backend_of(send(t, k)) for k in KEYS}
    resync(t, without(v, "b3"))
    for k, b in before.items():
        after = backend_of(send(t, k, now=1))
        if b != "b3":
            assert after == b, k
        else:
            assert after is None   # its backend is gone; the learned entry leads nowhere
    # New connections avoid b3 and land on a survivor.
    fresh = synthetic_keys(200, VIP_IP, seed=99)
    assert {backend_of(send(t, k)) for k in fresh} <= {f"b{i}" for i in range(8)} - {"b3"}


def test_without_conntrack_modn_moves_most_connections():
    v = vip(algorithm="modn", conntrack=False)
    t = installed(v)
    before = {k: backend_of(send(t, k)) for k in KEYS}
    resync(t, without(v, "b3"))
    moved = sum(backend_of(send(t, k)) != b for k, b in before.items())
    assert moved / len(KEYS) >= 0.5


@pytest.mark.parametrize("hash_impl", ["dp_hash", "multipath"])
def test_maglev_remap_through_the_installed_tables(hash_impl):
    keys = synthetic_keys(10_000, VIP_IP)
    v = vip(algorithm="maglev", conntrack=False, hash_impl=hash_impl)
    t = installed(v)
    before = [backend_of(send(t, k)) for k in keys]
    resync(t, without(v, "b5"))
    after = [backend_of(send(t, k)) for k in keys]
    assert sum(a != b for a, b in zip(before, after)) / len(keys) <= 1.15 / 8
    shares = Counter(before)
    assert max(shares.values()) / (len(keys) / 8) <= 1.10


def test_learned_entry_names_the_backend_in_its_cookie():
    v = vip(conntrack=True)
    t = installed(v)
    out = send(t, KEYS[0])
    b = BY_PORT[out.port]
    (entry,) = t.flows(table=SWITCH.tables.conn, cookie=vf.conn_cookie(v.index, b.ip))
    assert entry.idle_timeout == v.conn_idle_timeout
    assert entry.match_dict["ipv4_src"] == KEYS[0].src


@pytest.mark.parametrize("state", ["drain", "down"])
def test_drained_or_down_backend_gets_no_new_keys_but_keeps_learned_ones(state):
    v = vip(algorithm="maglev", conntrack=True)
    t = installed(v)
    on_b2 = [k for k in KEYS if backend_of(send(t, k)) == "b2"]
    assert on_b2
    resync(t, replace_backend(v, "b2", state=state))
    fresh = synthetic_keys(500, VIP_IP, seed=5)
    assert "b2" not in {backend_of(send(t, k, now=1)) for k in fresh}
    assert all(backend_of(send(t, k, now=1)) == "b2" for k in on_b2)
    # Once idle for the connection timeout, the entry goes and the key re-hashes elsewhere.
    t.expire(now=1 + v.conn_idle_timeout)
    assert all(backend_of(send(t, k, now=100)) != "b2" for k in on_b2)


def test_no_backend_up_drops_new_connections_only():
    v = vip(conntrack=True)
    t = installed(v)
    known = KEYS[0]
    first = backend_of(send(t, known))
    all_down = dataclasses.replace(v, backends=tuple(
        dataclasses.replace(b, state="down") for b in v.backends))
    resync(t, all_down)
    assert send(t, KEYS[1]) is None
    assert backend_of(send(t, known)) == first


def test_weights_shift_the_share():
    v = replace_backend(vip(algorithm="maglev", conntrack=False), "b0", weight=3.0)
    t = installed(v)
    shares = Counter(backend_of(send(t, k)) for k in synthetic_keys(4000, VIP_IP))
    assert shares["b0"] / 4000 == pytest.approx(3 / 10, rel=0.15)


# --- leastload -----------------------------------------------------------------------------
def test_leastload_sends_new_connections_to_the_least_loaded():
    v = vip(algorithm="leastload", conntrack=False)
    loads = {"web": {f"b{i}": (0 if i == 4 else 100) for i in range(8)}}
    t = installed(v, loads=loads)
    keys = KEYS[:40]
    assert {backend_of(send(t, k)) for k in keys} == {"b4"}
    # Even with conntrack off, the learned entries count b4's connections (not consulted).
    assert len(t.flows(cookie=vf.conn_cookie(v.index, BY_PORT[14].ip))) == len(keys)


# --- where the hash is computed --------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["modn", "maglev"])
@pytest.mark.parametrize("hash_impl", ["dp_hash", "multipath"])
def test_both_hash_implementations_send_keys_where_the_model_says(algorithm, hash_impl):
    v = vip(algorithm=algorithm, conntrack=False, hash_impl=hash_impl)
    t = installed(v)
    for k in KEYS[:200]:
        assert backend_of(send(t, k)) == vipmodel.choose_backend(v, k).name


def test_dp_hash_hashes_in_a_group_and_the_bucket_table_has_power_of_two_entries():
    """select runs the VIP's group (the datapath computes dp_hash); the group's one bucket
    moves as many low bits of it into reg0 as the bucket table needs, and every entry
    resubmits to the backend table itself (a bucket is an action set: one final action)."""
    for algorithm, entries, bits in (("maglev", 8192, 13), ("modn", 1024, 10)):
        v = vip(algorithm=algorithm, conntrack=False)
        (group,) = vf.vip_groups(SWITCH, [v])
        assert group.group_id == vf.vip_group_id(v.index)
        move, resubmit = group.buckets[0]
        assert (move.src, move.dst, move.n_bits) == ("dp_hash", vf.REG_BUCKET, bits)
        assert resubmit == flows.Resubmit(SWITCH.tables.bucket)
        selects = [f for f in vf.desired_flows(SWITCH, [v]) if f.table == SWITCH.tables.select
                   and f.priority != vf.PRIO_MISS]
        assert [f.actions for f in selects] == [(flows.Group(group.group_id),)]
        bucket = [f for f in vf.desired_flows(SWITCH, [v]) if f.table == SWITCH.tables.bucket
                  and f.priority == vf.PRIO_ENTRY]
        assert len(bucket) == entries
        assert all(f.actions[-1] == flows.Resubmit(SWITCH.tables.backend) for f in bucket)
    assert vf.vip_groups(SWITCH, [vip(hash_impl="multipath")]) == []
    assert vf.vip_groups(SWITCH, [vip(reactive=True)]) == []


def test_table_slots_is_the_size_of_the_built_table():
    """The group's bit count comes from vipmodel.table_slots, which must agree with the
    table assignment() builds, for every algorithm and with backends down or none up."""
    for v in (vip(algorithm="maglev"), vip(algorithm="modn"), vip(algorithm="leastload"),
              vip(algorithm="maglev", table_size=1021), vip(algorithm="leastload", table_size=9),
              replace_backend(vip(algorithm="modn"), "b2", state="down"),
              vip(backends=tuple(dataclasses.replace(b, state="drain") for b in backends()))):
        assert vipmodel.table_slots(v) == len(vipmodel.assignment(v)), v


def test_a_group_bucket_runs_as_an_action_set():
    """The fake table runs a bucket as OVS does (one final action): a bucket that relied on
    two resubmits in a row, as an action list would, loses the first."""
    v = vip(algorithm="maglev", conntrack=False)
    t = installed(v)
    (group,) = vf.vip_groups(SWITCH, [v])
    move, resubmit = group.buckets[0]
    t.add_group(dataclasses.replace(group, buckets=((move, resubmit,
                                                     flows.Resubmit(SWITCH.tables.out)),)))
    assert send(t, KEYS[0]) is None    # only resubmit(,out) ran: no backend chosen


# --- reactive ------------------------------------------------------------------------------
def test_reactive_first_packet_to_controller_then_exact_flow():
    v = vip(reactive=True, algorithm="maglev")
    t = installed(v)
    key = KEYS[0]
    (out,) = t.lookup(client_packet(key))
    assert out.port == CONTROLLER and out["reg2"] == v.index
    chosen = vipmodel.choose_backend(v, key)
    t.apply(vf.reactive_flows(v, key, chosen))
    out = send(t, key)
    assert (out.port, out["ipv4_dst"]) == (chosen.switch_port, chosen.ip)
    # No multipath or bucket flows in reactive mode.
    assert t.flows(table=SWITCH.tables.bucket) == [] or all(
        f.match_dict == {} for f in t.flows(table=SWITCH.tables.bucket))


# --- several VIPs --------------------------------------------------------------------------
def test_two_vips_share_the_tables_without_overlap():
    other = tuple(Backend(f"o{i}", f"10.101.0.{50 + i}", f"00:00:00:00:02:{i:02x}", 50 + i)
                  for i in range(2))
    v1 = vip()
    v2 = Vip("api", "10.101.0.101", "02:1b:1a:b0:00:02", backends=other, index=2,
             mode="dsr", algorithm="modn")
    t = installed(v1, v2)
    for k in KEYS[:30]:
        assert send(t, k).port in BY_PORT
        k2 = dataclasses.replace(k, dst="10.101.0.101")
        assert send(t, k2).port in (50, 51)


def test_overlapping_flows_are_refused_by_the_fake_table():
    t = FakeOFTable()
    t.add(flows.make_flow(0, 5, {"eth_type": 0x0800, "ipv4_dst": "10.0.0.0/8"}, []))
    with pytest.raises(FakeOFTableError):
        t.add(flows.make_flow(0, 5, {"eth_type": 0x0800, "ipv4_dst": "10.1.0.0/16"}, []))


# --- resynchronisation ---------------------------------------------------------------------
def test_diff_of_desired_with_itself_is_empty():
    want = vf.desired_flows(SWITCH, [vip()])
    assert vf.vip_diff(want, want).empty
    t = installed(vip())
    assert vf.vip_diff(t.flows(), want).empty


def test_diff_on_restart_keeps_learned_and_base_flows():
    v = vip(conntrack=True)
    t = installed(v)
    t.add(flows.make_flow(0, 10, {"in_port": 3}, [flows.Output(4)], cookie=0x1B1AB00000000000))
    for k in KEYS[:20]:
        send(t, k)
    learned = t.flows(table=SWITCH.tables.conn, cookie=vf.COOKIE_CONN,
                      mask=vf.COOKIE_PREFIX_MASK)
    assert len(learned) == 20
    d = vf.vip_diff(t.flows(), vf.desired_flows(SWITCH, [v]))
    assert d.empty
    d = resync(t, without(v, "b1"))
    assert d.delete and not any(vf.is_conn(f.cookie) for f in d.delete)
    assert len(t.flows(cookie=0x1B1AB00000000000)) == 1
    assert vf.vip_diff(t.flows(), vf.desired_flows(SWITCH, [without(v, "b1")])).empty


def test_pool_change_diff_touches_only_what_changed():
    v = vip(algorithm="maglev")
    old = vf.desired_flows(SWITCH, [v])
    d = vf.vip_diff(old, vf.desired_flows(SWITCH, [without(v, "b6")]))
    tables = {f.table for f in d.modify + d.add + d.delete}
    assert tables <= {SWITCH.tables.bucket, SWITCH.tables.backend, SWITCH.tables.l2}
    # Maglev: about 1/8 of the buckets change, not all of them.
    m = len([f for f in old if f.table == SWITCH.tables.bucket])
    assert len([f for f in d.modify if f.table == SWITCH.tables.bucket]) < 0.15 * m


def test_unchanged_bucket_entries_are_kept_not_rebuilt_and_equal_a_fresh_build():
    """A pool change builds only the entries it alters (the others are the same objects
    as before); every entry still equals one built from scratch, digest included."""
    v = vip(algorithm="maglev")
    old = [f for f in vf.desired_flows(SWITCH, [v]) if f.table == SWITCH.tables.bucket]
    new = [f for f in vf.desired_flows(SWITCH, [without(v, "b6")])
           if f.table == SWITCH.tables.bucket]
    kept = sum(a is b for a, b in zip(old, new))
    assert 0.8 * len(old) < kept < len(old)
    vf._BUCKET_ENTRIES.clear()
    fresh = [f for f in vf.desired_flows(SWITCH, [without(v, "b6")])
             if f.table == SWITCH.tables.bucket]
    assert fresh == new and not any(a is b for a, b in zip(fresh, new))


def test_diff_works_from_cookies_alone_as_read_from_the_switch():
    want = vf.desired_flows(SWITCH, [vip()])

    def as_stats(f):  # what a flow stats reply gives: Ryu's (addr, mask) form, no actions
        match = [(k, (str(ipaddress.IPv4Network(v).network_address),
                      str(ipaddress.IPv4Network(v).netmask)))
                 if isinstance(v, str) and "/" in v else (k, v.upper() if ":" in str(v) else v)
                 for k, v in f.match]
        return SimpleNamespace(table=f.table, priority=f.priority, match=match,
                               cookie=f.cookie)
    assert vf.vip_diff([as_stats(f) for f in want], want).empty
    changed = vf.desired_flows(SWITCH, [vip(mode="dsr")])
    d = vf.vip_diff([as_stats(f) for f in want], changed)
    assert d.modify and not d.add   # backend flows rewritten in place
    assert d.delete                 # NAT reverse flows go


# --- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [
    (dict(mode="dsr", backends=(Backend("x", "10.102.0.5", "00:00:00:00:09:01", 30),)),
     "outside the DC subnet.*DSR"),
    (dict(mode="fast"), "unknown mode"),
    (dict(algorithm="random"), "unknown algorithm"),
    (dict(algorithm="maglev", table_size=1000), "not prime"),
    (dict(algorithm="maglev", table_size=101), "too small"),
    (dict(algorithm="maglev", table_size=65537), "multipath"),
    (dict(mac="zz"), "MAC"),
    (dict(address="10.101.0.300"), "IPv4"),
    (dict(index=0), "index"),
    (dict(backends=(Backend("x", "10.101.0.5", None, None),)), "mac and switch_port"),
])
def test_bad_vip_is_a_clear_error(kw, msg):
    with pytest.raises(VipError, match=msg):
        vf.desired_flows(SWITCH, [vip(**kw)])


def test_gre_needs_a_gre_port_and_vips_need_unique_indexes():
    with pytest.raises(VipError, match="gre_port"):
        vf.desired_flows(dataclasses.replace(SWITCH, gre_port=None), [vip(mode="gre")])
    with pytest.raises(VipError, match="index 1 already"):
        vf.desired_flows(SWITCH, [vip(), vip(name="api", address="10.101.0.101")])


def test_table_layout_starting_elsewhere():
    sw = dataclasses.replace(SWITCH, tables=vipmodel.TableLayout.starting_at(20))
    t = FakeOFTable()
    t.apply_vips(sw, [vip()])
    assert {f.table for f in t.flows()} == {0, *range(20, 26)}
    assert send(t, KEYS[0]).port in BY_PORT
    for overlapping_l2 in (0, 1):   # the L2 app's tables 0 and 1
        with pytest.raises(VipError):
            vipmodel.TableLayout.starting_at(overlapping_l2)


def test_cookies_name_their_vip_and_are_told_apart():
    for index in (1, 7, 255):
        computed = vf.desired_flows(SWITCH, [vip(index=index)])[-1].cookie
        conn = vf.conn_cookie(index, "10.101.0.13")
        assert vf.cookie_vip_index(computed) == vf.cookie_vip_index(conn) == index
        assert vf.is_computed(computed) and not vf.is_conn(computed)
        assert vf.is_conn(conn) and not vf.is_computed(conn)
    from controller.l2logic import BASE_COOKIE
    assert vf.cookie_vip_index(BASE_COOKIE) is None
    targets = {vf.backend_flow_target(f, SWITCH.tables)
               for f in vf.desired_flows(SWITCH, [vip(index=3)])}
    assert targets - {None} == {(3, b.ip) for b in backends()}   # one per backend flow
