"""The LAN correction of relay links (topologies/calibration.py): every host-to-host path,
direct or through a transit site, loses exactly its two end LANs' one-way times; router
traffic loses nothing."""
from __future__ import annotations

import ipaddress

import pytest

from topologies import calibration as cal, scenario
from topologies.plan import build_plan, site_subnets
from topologies.relay.link import Compensation, RelayParams


@pytest.fixture(scope="module")
def plan():
    return build_plan(scenario.load("three-dc"))


def _correction(plan, comps, src_ip, dst_ip, src_site, dst_site) -> float:
    """Total one-way delay the relays take off a packet src -> dst along its routed path."""
    total, here = 0.0, src_site
    for wan in plan.path_wans(src_site, dst_site):
        forward = wan.link.a == here
        rules = comps[wan.index][0 if forward else 1]
        for r in rules:
            addr = ipaddress.IPv4Address(src_ip if r.field == "src" else dst_ip)
            if addr in ipaddress.IPv4Network(r.subnet):
                total += r.ms
        here = wan.link.b if forward else wan.link.a
    return total


def test_every_path_loses_exactly_its_end_lans(plan):
    lan = {"na": 0.6, "eu": 0.5, "ap": 0.7, "us1": 0.8, "eu1": 0.9, "ap1": 0.4}
    comps = cal.compensations(plan, lan)
    hosts = [h for h in plan.hosts]
    for src in hosts:
        for dst in hosts:
            if src.site == dst.site:
                continue
            got = _correction(plan, comps, src.ip, dst.ip, src.site, dst.site)
            assert got == pytest.approx(lan[src.site] / 2 + lan[dst.site] / 2), \
                (src.name, dst.name, plan.path_wans(src.site, dst.site))


def test_router_to_router_traffic_keeps_the_full_delay(plan):
    comps = cal.compensations(plan, {s: 0.6 for s in site_subnets(plan.scenario)})
    for wan in plan.wans:
        assert _correction(plan, comps, wan.a_ip, wan.b_ip, wan.link.a, wan.link.b) == 0


def test_fast_or_unmeasured_lans_get_no_rule(plan):
    comps = cal.compensations(plan, {"na": 0.01, "us1": None})
    assert all(rules == ((), ()) for rules in comps.values())


def test_correction_never_exceeds_the_links_delay(plan):
    comps = cal.compensations(plan, {"na": 100.0})
    na_us1 = next(w for w in plan.wans if {w.link.a, w.link.b} == {"na", "us1"})
    assert max(r.ms for r in comps[na_us1.index][0]) == na_us1.link.delay_ms


def test_relay_params_carry_rules_to_the_command_line():
    p = RelayParams(5, comp=(Compensation("src", "10.1.0.0/24", 0.25),))
    assert p.argv("ab")[-2:] == ["--ab-comp", "src:10.1.0.0/24:0.2500"]
    with pytest.raises(ValueError, match="src' or 'dst"):
        Compensation("to", "10.1.0.0/24", 0.1)
    with pytest.raises(ValueError, match="subnet"):
        Compensation("src", "10.1.0.1/24", 0.1)
    with pytest.raises(ValueError, match="at most 4"):
        RelayParams(5, comp=(Compensation("src", "10.1.0.0/24", 0.1),) * 5)
