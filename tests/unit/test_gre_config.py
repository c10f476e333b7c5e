"""GRE mode's configuration, pure: the per-LB pkt_mark in the flows, its encodings, the VIP
config from a plan with GRE (ports, remote backends, other DCs' hosts for REST), the
scenario's remote_backends, and the REST rules for backends outside the DC."""
from __future__ import annotations

import copy

import pytest
import yaml

from controller import vipconfig, viprest
from controller import vipflows as vf
from controller.flows import LOCAL_PORT, SetField
from controller.hashing import synthetic_keys
from controller.ofctl import to_ofctl
from controller.vipmodel import Backend, LbSwitch, Vip
from lab import vip_config
from support.datapath import MODULES, of_datapath
from support.fakeoftable import FakeOFTable
from topologies import gre, scenario
from topologies.plan import build_plan

SWITCH = LbSwitch(uplink_port=1, dc_subnet="10.101.0.0/24", gre_port=gre.GRE_OFPORT,
                  gre_mark=gre.mark_for(1))
FAR = tuple(Backend(f"r{i}", f"10.102.0.{10 + i}") for i in range(3))
VIP = Vip(name="us1", address="10.101.0.100", mac="02:1c:0a:65:00:64", mode="gre",
          backends=FAR)


def test_gre_flows_mark_the_packet_for_the_lbs_own_underlay():
    t = FakeOFTable()
    t.apply_vips(SWITCH, [VIP])
    for key in synthetic_keys(30, VIP.address, seed=3):
        outs = t.lookup({"in_port": 1, "eth_dst": VIP.mac, **key.fields()})
        assert len(outs) == 1
        out = outs[0]
        assert out.port == gre.GRE_OFPORT
        assert out["pkt_mark"] == gre.mark_for(1)
        assert out["tun_ipv4_dst"] in {b.ip for b in FAR}
    text = "\n".join(to_ofctl(f) for f in vf.desired_flows(SWITCH, [VIP]))
    assert f"set_field:{gre.mark_for(1)}->pkt_mark,set_field:10.102.0.10->tun_dst," \
           f"output:{gre.GRE_OFPORT}" in text


def test_outer_packets_for_a_backend_of_the_lbs_own_lan_skip_the_router_hairpin():
    """The tunnel push hands the outer packet back to the bridge from LOCAL, addressed to the
    DC router; for a backend on the switch's own LAN the switch delivers it itself, and for
    a backend of another DC it leaves it to the router (and the WAN)."""
    plan = _two_dc(mode="gre", remote_backends=["eu1"])
    us1 = {s.dc: s for s in vipconfig.load(vip_config.from_plan(plan, gre=True)).values()}["us1"]
    vips = list(us1.vips.values())
    t = FakeOFTable()
    t.apply_vips(us1.lb, vips)
    router_mac = "02:1b:c6:12:01:01"
    for b in vips[0].backends:
        outer = {"in_port": LOCAL_PORT, "eth_dst": router_mac, "eth_type": 0x0800,
                 "ip_proto": 47, "ipv4_src": str(gre.tep_lb_ip(1)), "ipv4_dst": b.ip}
        outs = t.lookup(outer)
        if b.switch_port is None:                 # eu1's: by the router, across the WAN
            assert b.name.startswith("lbb-eu1") and outs == []
        else:
            assert [(o.port, o["eth_dst"]) for o in outs] == [(b.switch_port, b.mac)]
    # Only GRE from LOCAL: the same addresses from a port, or TCP from LOCAL, are not touched.
    local = next(b for b in vips[0].backends if b.switch_port is not None)
    assert t.lookup({"in_port": 1, "eth_type": 0x0800, "ip_proto": 47,
                     "ipv4_dst": local.ip}) == []
    assert t.lookup({"in_port": LOCAL_PORT, "eth_type": 0x0800, "ip_proto": 6,
                     "ipv4_dst": local.ip, "tcp_src": 1, "tcp_dst": 80}) == []
    # One flow per backend, whatever the number of gre VIPs naming it; none in nat.
    twice = [vips[0], _replace(vips[0], name="other", address="10.101.0.101", index=2)]
    shortcut = [f for f in vf.desired_flows(us1.lb, twice) if f.priority == vf.PRIO_GRE_LOCAL]
    assert len(shortcut) == sum(b.switch_port is not None for b in vips[0].backends) == 2
    nat = [_replace(vips[0], mode="nat", backends=tuple(b for b in vips[0].backends
                                                        if b.switch_port is not None))]
    assert not [f for f in vf.desired_flows(us1.lb, nat) if f.priority == vf.PRIO_GRE_LOCAL]
    assert "in_port=LOCAL" in to_ofctl(shortcut[0])


@pytest.mark.parametrize("fw", MODULES)
def test_pkt_mark_is_encoded_as_a_nicira_load(fw):
    pytest.importorskip(fw)
    from controller import ofmsg
    dp = of_datapath(fw)
    act = ofmsg.ryu_action(dp, SetField("pkt_mark", gre.mark_for(2)))
    assert type(act).__name__ == "NXActionRegLoad2"
    for f in vf.desired_flows(SWITCH, [VIP]):
        ofmsg.flow_mod(dp, f).serialize()


def _two_dc(**us1):
    path = scenario.resolve_path("two-dc")
    data = copy.deepcopy(yaml.safe_load(path.read_text()))
    data["dcs"]["us1"].update(us1)
    return build_plan(scenario.parse(data, "test"))


def test_config_with_gre_names_ports_marks_and_remote_backends():
    plan = _two_dc(mode="gre", remote_backends=["eu1"])
    cfg = vip_config.from_plan(plan, gre=True)
    sws = vipconfig.load(cfg)
    by_dc = {s.dc: s for s in sws.values()}
    us1, eu1 = by_dc["us1"], by_dc["eu1"]
    assert us1.lb.gre_port == eu1.lb.gre_port == gre.GRE_OFPORT
    assert us1.lb.gre_mark == gre.mark_for(1) and eu1.lb.gre_mark == gre.mark_for(2)
    names = [b.name for b in us1.vips["us1"].backends]
    assert names == ["lbb-us11", "lbb-us12", "lbb-eu11", "lbb-eu12"]
    assert [b.name for b in eu1.vips["eu1"].backends] == ["lbb-eu11", "lbb-eu12"]
    vf.desired_flows(us1.lb, list(us1.vips.values()))   # valid as configured
    # other DCs' backends are known by name, for REST adds in gre mode
    assert us1.hosts["10.102.0.11"]["name"] == "lbb-eu11"


def test_config_without_gre_is_unchanged():
    plan = _two_dc()
    sws = vipconfig.load(vip_config.from_plan(plan))
    for s in sws.values():
        assert s.lb.gre_port is None and s.lb.gre_mark == 0
        assert all(h["mac"] for h in s.hosts.values())


def test_rest_adds_a_remote_backend_only_in_gre_mode():
    plan = _two_dc()
    sw = vipconfig.load(vip_config.from_plan(plan, gre=True))[plan.switch("us1").dpid]
    v = sw.vips["us1"]
    added = viprest.add_backend(sw, _replace(v, mode="gre"), {"ip": "10.102.0.11"})
    assert added.backends[-1].name == "lbb-eu11" and added.backends[-1].mac is None
    viprest.checked(sw, {"us1": added})
    nat = viprest.add_backend(sw, v, {"ip": "10.102.0.11"})
    with pytest.raises(viprest.BadRequest, match="use mode gre"):
        viprest.checked(sw, {"us1": nat})


def _replace(v, **kw):
    import dataclasses
    return dataclasses.replace(v, **kw)


def test_scenario_remote_backends_need_gre_and_another_dc():
    with pytest.raises(scenario.ScenarioError, match="mode: gre"):
        _two_dc(remote_backends=["eu1"])
    with pytest.raises(scenario.ScenarioError, match="not another DC"):
        _two_dc(mode="gre", remote_backends=["us1"])
    with pytest.raises(scenario.ScenarioError, match="list of names"):
        _two_dc(mode="gre", remote_backends="eu1")
    assert _two_dc(mode="gre", remote_backends=["eu1"]).scenario.dcs[0].remote_backends == \
        ("eu1",)


def test_kernel_underlay_routes_each_lbs_mark_to_its_own_dc_router():
    """Kernel datapath: the mark an LB's flows set must select a table that reaches every
    DC subnet through that LB's own DC router (same design as the OVS user routes)."""
    plan = build_plan(scenario.load("three-dc"))
    cmds = gre.policy_routing_commands(plan)
    rules = [c for c in cmds if c[1] == "rule"]
    assert len(rules) == len(plan.scenario.dcs)
    for dc in plan.scenario.dcs:
        i = gre.dc_index(plan, dc.name)
        table = str(gre.table_for(i))
        assert ["ip", "rule", "add", "pref", table, "fwmark", f"{gre.mark_for(i):#x}/0xffffffff",
                "lookup", table] in rules
        routes = [c for c in cmds if c[1] == "route" and c[-1] == table]
        assert {c[3] for c in routes} == {str(d.subnet) for d in plan.scenario.dcs}
        assert all(c[5] == str(gre.tep_router_ip(i)) and c[7] == plan.switch(dc.name).name
                   for c in routes)


def test_clean_recognises_only_lblabs_policy_rules():
    shown = ("0:\tfrom all lookup local\n"
             f"27001:\tfrom all fwmark {gre.mark_for(1):#x} lookup 27001\n"
             f"27003:\tfrom all fwmark {gre.mark_for(3):#x}/0xffffffff lookup 27003\n"
             "27002:\tfrom all fwmark 0x1b1a0002 lookup 100\n"        # not our table
             "500:\tfrom all fwmark 0x7 lookup 27007\n"               # not our mark
             "32766:\tfrom all lookup main\n")
    rules = gre.parse_policy_rules(shown)
    assert rules == [{"pref": 27001, "mark": gre.mark_for(1), "table": 27001},
                     {"pref": 27003, "mark": gre.mark_for(3), "table": 27003}]
