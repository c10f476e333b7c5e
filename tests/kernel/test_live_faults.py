"""The live lab's `fail link` on the kernel world, where WAN links are netem veth pairs
between the routers (no relay node): the cut drops traffic both ways until it is
recovered, and recovering leaves the routes as they were."""
from __future__ import annotations

import pytest

from experiments.livecli import cut_wan, find_wan, restore_wan
from lab.probes import PingJob, ping_many

pytestmark = [pytest.mark.integration, pytest.mark.kernel]


def received(live, src: str, dst_ip: str) -> int:
    [(_, res)] = ping_many(live, [PingJob(src, dst_ip, {})], count=3, interval_s=0.2,
                           timeout_s=3)
    return res.received


def test_a_cut_wan_link_drops_both_ways_until_recovered(two_dc):
    plan = two_dc.plan
    client = plan.by_role("client")[0]
    backend = plan.hosts_in(plan.scenario.dcs[0].name, "backend")[0]
    wan = find_wan(plan, f"{client.site}-{backend.site}")
    assert wan is not None
    routes = {r: two_dc.node(r).cmd("ip route show") for r in (wan.a_router, wan.b_router)}
    assert received(two_dc, client.name, str(backend.ip)) > 0   # the path works before
    cut_wan(two_dc, wan)
    try:
        assert received(two_dc, client.name, str(backend.ip)) == 0
        assert received(two_dc, backend.name, str(client.ip)) == 0
    finally:
        restore_wan(two_dc, wan)
    assert received(two_dc, client.name, str(backend.ip)) > 0
    assert {r: two_dc.node(r).cmd("ip route show") for r in routes} == routes
