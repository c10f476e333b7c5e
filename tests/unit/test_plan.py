"""Network plan: addresses, names within kernel limits, routes along the lowest delay."""
from __future__ import annotations

import ipaddress

from topologies import scenario
from topologies.plan import NAME_PREFIXES, build_plan


def plan3():
    return build_plan(scenario.load("three-dc"))


def test_names_fit_interface_limit_and_carry_prefix():
    plan = plan3()
    nodes = [h.name for h in plan.hosts] + [r.name for r in plan.routers] + \
        [s.name for s in plan.switches] + [w.relay_name for w in plan.wans]
    assert len(nodes) == len(set(nodes))
    for name in nodes:
        assert name.startswith(NAME_PREFIXES)
        # the busiest router has one LAN + up to 5 WAN interfaces: name-ethNN
        assert len(f"{name}-eth10") <= 15, name


def test_hosts_are_inside_their_site_subnet():
    plan = plan3()
    for host in plan.hosts:
        site_net = (plan.scenario.dc(host.site).subnet if host.site in
                    [d.name for d in plan.scenario.dcs] else plan.scenario.region(host.site).subnet)
        assert host.ip in site_net
        assert host.gateway == site_net.network_address + 1
    ips = [h.ip for h in plan.hosts] + [dc.vip for dc in plan.scenario.dcs]
    assert len(ips) == len(set(ips))


def test_counts_match_scenario():
    plan = plan3()
    assert len(plan.by_role("client")) == 6
    assert len(plan.by_role("backend")) == 12
    assert len(plan.by_role("resolver")) == 3
    assert len(plan.by_role("authority")) == 1


def test_wan_subnets_distinct_and_in_pool():
    plan = plan3()
    nets = {ipaddress.ip_network(f"{w.a_ip}/30", strict=False) for w in plan.wans}
    assert len(nets) == len(plan.wans)
    assert all(n.subnet_of(plan.scenario.wan_pool) for n in nets)


def test_routes_follow_lowest_delay():
    plan = plan3()
    # na -> eu1: direct 40 ms beats na-us1-eu1 (3 + 38 = 41 ms)
    assert plan.configured_rtt_ms("na", "eu1") == 80
    assert [(w.link.a, w.link.b) for w in plan.path_wans("na", "eu1")] == [("na", "eu1")]
    # region to region goes through a DC: na -> eu = 43 ms one way
    assert plan.configured_rtt_ms("na", "eu") == 86
    assert plan.configured_rtt_ms("na", "na") == 0


def test_every_router_has_a_route_to_every_other_site():
    plan = plan3()
    for router in plan.routers:
        dsts = {r.dst for r in plan.routes if r.router == router.name}
        assert len(dsts) == len(plan.scenario.sites) - 1


def test_next_hops_are_on_connected_wan_links():
    plan = plan3()
    for route in plan.routes:
        site = route.router[len("lbr-"):]
        ends = [(w.a_ip, w.b_ip) for w in plan.wans if site in (w.link.a, w.link.b)]
        assert any(route.via in pair for pair in ends)
