"""Traffic classes in the emulated network (two-dc), through a real unbound: the WAN link
from na to its nearest DC (us1) thinned to 10 Mbit/s and filled to 80% by an iperf3 UDP
stream, the DC's load feed measures it on its router's interface, and the authority sends
na's uploads to eu1 (room on its link) while na's searches stay on us1; once the cross
traffic stops, uploads come back to us1 within the upload name's TTL.
Readiness is the authority's own state and real queries; no sleeps stand in for it."""
from __future__ import annotations

import dataclasses
import shutil
import time

import pytest

from experiments import dnsnet
from experiments import traffic_classes as tc
from lab import mechanisms, unbound
from lab.dns_config import gslb_config, resolver_of
from lab.net import LiveNet
from topologies import scenario
from topologies.plan import build_plan
from topologies.scenario_dns import DnsService
from topologies.state import new_run_id

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("unbound") is None, reason="unbound not installed"),
              pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")]
UPLOAD_TTL_S = 2


def _plan():
    scen = scenario.load("two-dc")
    links = tuple(dataclasses.replace(link, bw_mbps=10.0) if {link.a, link.b} == {"na", "us1"}
                  else link for link in scen.links)
    services = (DnsService("search", "capacity", 2),
                DnsService("upload", "spare", UPLOAD_TTL_S, max_distance_ms=30.0))
    return build_plan(dataclasses.replace(scen, links=links, dns=dataclasses.replace(
        scen.dns, services=services)))


def _wait_state(authority, check, what: str, timeout_s: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        state = authority.state()
        if check(state):
            return state
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s: {state['dcs']}"
        time.sleep(0.2)


def _resolves_to(live, client, resolver_ip, name, vip, timeout_s) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := unbound.resolve(live, client, resolver_ip, name)) != [vip]:
        assert time.monotonic() < deadline, f"{name}: {got}, not [{vip}] in {timeout_s:g} s"
        time.sleep(0.2)


def test_uploads_leave_a_congested_wan_link_while_searches_stay_nearest(lblab_clean,
                                                                       tmp_path):
    plan = _plan()
    config = gslb_config(plan)
    vip = {d.name: str(d.vip) for d in config.dcs}
    client = plan.hosts_in("na", "client")[0].name
    with LiveNet(plan, mechanisms.detect(), new_run_id("test-classes"), tmp_path) as live:
        svc = dnsnet.start_dns_service(live, plan, config, tmp_path)
        res_ip = str(svc.resolvers[resolver_of(plan, client).name].ip)
        idle = _wait_state(svc.authority, lambda s: "na" in s["dcs"]["us1"]["wan_used"],
                           "the load feed reporting us1's link from na")
        assert idle["dcs"]["us1"]["wan_used"]["na"] < 0.2
        assert unbound.resolve(live, client, res_ip, "upload.lblab.test") == [vip["us1"]]
        cross = tc.start_cross_traffic(live, plan, {"cross_share": 0.8, "wan_mbps": 10.0},
                                       60)
        try:
            busy = _wait_state(svc.authority,
                               lambda s: s["dcs"]["us1"]["wan_used"].get("na", 0) > 0.6,
                               "the load feed seeing the cross traffic")
            # carried, not offered: a UDP stream of 8 of the link's 10 Mbit/s
            assert busy["dcs"]["us1"]["wan_used"]["na"] < 1.05
            assert busy["dcs"]["eu1"]["wan_used"].get("na", 0) < 0.2
            _resolves_to(live, client, res_ip, "upload.lblab.test", vip["eu1"],
                         UPLOAD_TTL_S + 5)
            assert unbound.resolve(live, client, res_ip, "search.lblab.test") == [vip["us1"]]
        finally:
            tc._stop(cross)
        _wait_state(svc.authority, lambda s: s["dcs"]["us1"]["wan_used"]["na"] < 0.2,
                    "the link's use falling once the cross traffic stopped")
        _resolves_to(live, client, res_ip, "upload.lblab.test", vip["us1"], UPLOAD_TTL_S + 5)
