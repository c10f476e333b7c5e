"""The LB tier (`lbs: K > 1`), pure parts: scenario validation, the plan's LB instances,
the per-LB VIP config, one-armed DSR flows, and every LB computing the same choice."""
from __future__ import annotations

import dataclasses
import random

import pytest

from controller import vipconfig, vipflows as vf
from controller.vipmodel import Backend, LbSwitch, VipError, assignment
from controller import viprest
from controller.vipswitch import VipSwitch
from lab import vip_config
from support.fakeoftable import FakeOFTable
from support.vipcase import KEYS, SUBNET, client_packet, vip
from topologies import scenario as sc
from topologies.plan import LB_UPLINK_PORT, build_plan
from topologies.topo import ScenarioTopo


def tier_scenario(**dc):
    spec = {"subnet": "10.101.0.0/24", "vip": "10.101.0.100", "backends": 8,
            "mode": "dsr", "lbs": 3, **dc}
    return sc.parse({"name": "t", "regions": {"na": {"subnet": "10.1.0.0/24"}},
                     "dcs": {"us1": spec}, "links": [{"a": "na", "b": "us1", "delay_ms": 1}]},
                    "t.yaml")


def test_lbs_defaults_to_one_and_existing_scenarios_are_unchanged():
    three = sc.load("three-dc")
    assert all(d.lbs == 1 for d in three.dcs)
    plan = build_plan(three)
    assert plan.lbs == () and all(s.role == "site" for s in plan.switches)
    assert {h.role for h in plan.hosts} == {"client", "backend", "resolver", "authority"}


@pytest.mark.parametrize("dc, message", [
    ({"lbs": 0}, "dcs.us1.lbs: must be between 1 and 4, got 0"),
    ({"lbs": 5}, "dcs.us1.lbs: must be between 1 and 4, got 5"),
    ({"lbs": "3"}, "dcs.us1.lbs: expected a whole number, got '3'"),
    ({"mode": "nat"}, "dcs.us1.mode: mode nat needs one LB: replies must return through "
                      "the LB that holds the translation"),
    ({"conntrack_impl": "ct"}, "dcs.us1.conntrack_impl: conntrack_impl ct needs one LB"),
])
def test_bad_tier_settings_are_one_line_errors(dc, message):
    with pytest.raises(sc.ScenarioError) as err:
        tier_scenario(**dc)
    assert str(err.value).startswith(f"t.yaml: {message}")
    assert "\n" not in str(err.value)


def test_a_tier_learns_its_connections_by_default():
    assert tier_scenario().dc("us1").conntrack_impl == "learn"
    assert tier_scenario(lbs=1, mode="nat").dc("us1").conntrack_impl == "ct"


def test_plan_gives_each_lb_its_switch_speaker_and_fabric_port():
    plan = build_plan(tier_scenario())
    lbs = plan.lbs_of("us1")
    assert [lb.k for lb in lbs] == [1, 2, 3]
    assert [lb.switch.name for lb in lbs] == ["lbs-us1-1", "lbs-us1-2", "lbs-us1-3"]
    assert [str(lb.speaker.ip) for lb in lbs] == ["10.101.0.56", "10.101.0.57", "10.101.0.58"]
    assert len({lb.switch.dpid for lb in lbs} | {plan.switch("us1").dpid}) == 4
    assert plan.switch("us1").name == "lbs-us1"          # the fabric stays the site switch
    fabric_ports = [h.switch_port for h in plan.hosts_in("us1") if not h.switch]
    assert not set(fabric_ports) & {lb.fabric_port for lb in lbs}
    assert all(lb.speaker.switch == lb.switch.name for lb in lbs)
    assert all(len(n) <= 15 for lb in lbs for n in (f"{lb.switch.name}-eth2",
                                                     f"{lb.speaker.name}-eth0"))


def test_a_vip_on_a_speaker_address_is_refused():
    with pytest.raises(ValueError, match="LB 2's speaker address"):
        build_plan(tier_scenario(vip="10.101.0.57"))


def test_topology_hangs_each_lb_off_the_fabric():
    plan = build_plan(tier_scenario())
    topo = ScenarioTopo(plan=plan)
    for lb in plan.lbs:
        links = {frozenset((a, b)) for a, b in topo.links()}
        assert frozenset((lb.switch.name, "lbs-us1")) in links
        assert frozenset((lb.speaker.name, lb.switch.name)) in links
        assert topo.port(lb.switch.name, "lbs-us1") == (LB_UPLINK_PORT, lb.fabric_port)


def test_vip_config_has_one_entry_per_lb_and_none_for_the_fabric():
    plan = build_plan(tier_scenario())
    config = vip_config.from_plan(plan)
    assert str(plan.switch("us1").dpid) not in config["switches"]
    loaded = vipconfig.load(config)
    assert len(loaded) == 3
    for lb in plan.lbs:
        sw = loaded[lb.switch.dpid]
        assert sw.lb_number == lb.k and sw.lb.one_armed_mac == lb.mac
        (v,) = sw.vips.values()
        assert v.mode == "dsr" and v.conntrack_impl == "learn"
        assert {b.switch_port for b in v.backends} == {LB_UPLINK_PORT}
    zones = {sw.lb.ct_zone for sw in loaded.values()}
    assert len(zones) == 3     # every LB its own connection table


ONE_ARMED = LbSwitch(uplink_port=1, dc_subnet=SUBNET, one_armed_mac="02:1b:0a:65:00:38")


def one_armed_vip(**kw):
    kw.setdefault("backends", tuple(dataclasses.replace(b, switch_port=1)
                                    for b in vip().backends))
    return vip(mode="dsr", conntrack_impl="learn", **kw)


def test_one_armed_dsr_returns_the_packet_to_the_fabric_as_the_lb():
    t = FakeOFTable()
    v = one_armed_vip()
    t.apply_vips(ONE_ARMED, [v])
    macs = {b.mac for b in v.backends}
    for k in KEYS[:50]:
        pkt = client_packet(k)
        (out,) = t.lookup(pkt)
        assert out.port == pkt["in_port"]                  # back where it came from
        assert out["eth_src"] == ONE_ARMED.one_armed_mac   # the fabric never sees the router
        assert out["eth_dst"] in macs and out["ipv4_dst"] == v.address


@pytest.mark.parametrize("kw, what", [({"mode": "nat", "conntrack_impl": "learn"}, "mode nat"),
                                      ({"mode": "dsr", "conntrack_impl": "ct"},
                                       "conntrack_impl ct")])
def test_one_armed_lb_refuses_what_needs_both_directions(kw, what):
    v = dataclasses.replace(one_armed_vip(), **kw)
    with pytest.raises(VipError, match=what):
        vf.desired_flows(ONE_ARMED, [v])


def test_every_lb_computes_the_same_maglev_table_whatever_the_order():
    """Three LBs that learnt the pool in different orders (as REST adds and config order
    differ) build the same bucket -> backend table: a connection moved by ECMP finds its
    backend on any LB."""
    base = [Backend(f"b{i}", f"10.101.0.{11 + i}", f"02:1b:0a:65:00:{11 + i:02x}", 1)
            for i in range(8)]
    tables = []
    for seed in range(3):
        order = list(base)
        random.Random(seed).shuffle(order)
        tables.append([b.ip for b in assignment(one_armed_vip(algorithm="maglev",
                                                              backends=tuple(order)))])
    assert tables[0] == tables[1] == tables[2]


def test_leastload_is_an_lbs_own_choice_but_modn_and_maglev_are_shared():
    """With the same counts (at start every count is 0) leastload gives each backend the
    same share of buckets on every LB, but in an order of the LB's own: a connection moved
    to another LB is not sent to its backend by the hash (state only), while mod N and
    Maglev give every LB the same table. The DC's only LB (lb 0) keeps the plain order."""
    plan = build_plan(tier_scenario())
    config = vipconfig.load(vip_config.from_plan(plan))
    for algorithm in ("leastload", "modn", "maglev"):
        tables = {sw.lb_number: [b.ip for b in assignment(dataclasses.replace(v, algorithm=algorithm))]
                  for sw in config.values() for v in sw.vips.values()}
        assert sorted(tables) == [1, 2, 3]
        first = tables[1]
        for table in tables.values():
            assert sorted(table) == sorted(first)            # the same shares
        same = sum(x == y for x, y in zip(tables[2], tables[3])) / len(first)
        if algorithm == "leastload":
            assert same < 0.4, f"leastload's tables agree on {same:.0%} of the buckets"
        else:
            assert tables[1] == tables[2] == tables[3]
    (v,) = next(iter(config.values())).vips.values()
    alone = dataclasses.replace(v, algorithm="leastload", lb=0)
    assert [b.name for b in assignment(alone)] == \
        [b.name for b in v.backends] * 8          # 64 buckets, equal counts: interleaved


def test_find_tier_returns_every_lb_of_the_vip():
    plan = build_plan(tier_scenario())
    switches = {d: VipSwitch(c) for d, c in vipconfig.load(vip_config.from_plan(plan)).items()}
    pairs = viprest.find_tier(switches, "us1")
    assert sorted(sw.config.lb_number for sw, _ in pairs) == [1, 2, 3]
    assert len(viprest.find_tier(switches, "10.101.0.100")) == 3
    with pytest.raises(viprest.BadRequest):
        viprest.find_tier(switches, "eu1")


def test_a_tier_change_says_how_long_the_lbs_disagreed(monkeypatch):
    from controller import vipapp
    clock = iter([10.0, 10.05, 10.30])
    monkeypatch.setattr(vipapp.time, "monotonic", lambda: next(clock))
    change = vipapp.TierChange(1, [11, 12])
    assert change.describe()["disagreement_ms"] is None     # nobody confirmed yet
    change.confirm(12)
    assert change.describe()["confirmed"] == 1 and change.describe()["disagreement_ms"] is None
    change.confirm(11)
    change.confirm(11)                                        # a second reply changes nothing
    d = change.describe()
    assert d["disagreement_ms"] == 300.0 and d["confirm_spread_ms"] == 250.0
    assert d["lbs"] == 2 and d["confirmed"] == 2


def test_with_gre_every_lb_has_its_own_tunnel_endpoint():
    from topologies import gre
    plan = build_plan(tier_scenario(mode="gre"))
    ends = gre.endpoints(plan)
    assert [(b, port) for _, b, _, port in ends] == [
        ("lbs-us1-1", "lbg-us1-1"), ("lbs-us1-2", "lbg-us1-2"), ("lbs-us1-3", "lbg-us1-3")]
    indexes = [i for i, *_ in ends]
    assert len(set(indexes)) == 3 and all(i > len(plan.scenario.dcs) for i in indexes)
    assert len({gre.tep_subnet(i) for i in indexes}) == 3
    config = vipconfig.load(vip_config.from_plan(plan, gre=True))
    marks = {sw.lb.gre_mark for sw in config.values()}
    assert marks == {gre.mark_for(i) for i in indexes}
    flows = FakeOFTable()
    sw = next(iter(config.values()))
    flows.apply_vips(sw.lb, list(sw.vips.values()))
    (out,) = flows.lookup(client_packet(KEYS[0]))
    assert out.port == sw.lb.gre_port and out["pkt_mark"] == sw.lb.gre_mark
    cmds = gre.policy_routing_commands(plan)
    assert sum(c[:3] == ["ip", "rule", "add"] for c in cmds) == 3
