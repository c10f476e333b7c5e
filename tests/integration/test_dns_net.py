"""The GSLB authority and real unbound resolvers inside the emulated network (two-dc).

- `dig @authority +subnet=<client subnet>/24` names the client's nearest DC and echoes the
  option with the region's scope; a client behind its region's resolver gets its nearest DC;
- failover in small form: once the authority has detected a dead DC, no answer (direct or
  through a resolver, after the resolver's TTL) names it.
Readiness is checked with real queries; no sleeps stand in for it.
"""
from __future__ import annotations

import shutil
import sys
import time

import pytest

from experiments import dnsnet
from experiments.workloads.control import start_http_backends
from gslb.globalview import DETECT_TARGET_S
from lab import dns, mechanisms, unbound
from lab.dns_config import gslb_config, resolver_of
from lab.net import LiveNet
from topologies import scenario
from topologies.plan import build_plan
from topologies.system import stop_processes
from topologies.state import new_run_id

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("unbound") is None, reason="unbound not installed"),
              pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed")]


def test_ecs_answers_and_resolvers_give_each_client_its_nearest_dc(lblab_clean, tmp_path):
    plan = build_plan(scenario.load("two-dc"))
    config = gslb_config(plan)
    with LiveNet(plan, mechanisms.detect(), new_run_id("test-dns"), tmp_path) as live:
        svc = dnsnet.start_dns_service(live, plan, config, tmp_path)
        auth = svc.authority
        for region in plan.scenario.regions:
            vip = str(config.dc(config.nearest_dc(region.name)).vip)
            client = plan.hosts_in(region.name, "client")[0]
            # straight to the authority, with ECS, from the other region's client: the
            # answer follows the option, not the source address
            elsewhere = next(c.name for c in plan.by_role("client") if c.site != region.name)
            out = live.node(elsewhere).cmd(
                f"dig +time=2 +tries=2 +subnet={region.subnet} @{auth.ip} www.lblab.test A")
            assert "status: NOERROR" in out and f"\tA\t{vip}" in out, out
            assert f"CLIENT-SUBNET: {region.subnet}/{region.subnet.prefixlen}" in out, out
            # without the option: located by the source address, and no option echoed
            out = live.node(client.name).cmd(
                f"dig +time=2 +tries=2 @{auth.ip} www.lblab.test A")
            assert f"\tA\t{vip}" in out and "CLIENT-SUBNET" not in out, out
            # through the region's own (real, caching, ECS-forwarding) unbound
            res = resolver_of(plan, client.name)
            assert unbound.resolve(live, client.name, str(res.ip), config.service_fqdn) == [vip]
        # an unknown ECS family is a FORMERR (dig can't send one; dnspython in the host can)
        out = live.node(plan.by_role("client")[0].name).cmd(
            f"{sys.executable} -c \"import dns.message, dns.query, dns.edns; "
            "q = dns.message.make_query('www.lblab.test', 'A', use_edns=0, "
            "options=[dns.edns.GenericOption(8, bytes([0, 9, 24, 0, 10, 1, 0]))]); "
            f"print(dns.rcode.to_text(dns.query.udp(q, '{auth.ip}', timeout=2).rcode()))\"")
        assert out.strip().endswith("FORMERR"), out


def test_failed_dc_leaves_answers_and_resolvers_follow_within_ttl(lblab_clean, tmp_path):
    plan = build_plan(scenario.load("two-dc"))
    ttl = 2
    config = gslb_config(plan, ttl_s=ttl)
    region = plan.scenario.regions[0]
    dc = config.nearest_dc(region.name)
    vip, other_vip = str(config.dc(dc).vip), next(str(d.vip) for d in config.dcs
                                                  if d.name != dc)
    client = plan.hosts_in(region.name, "client")[0].name
    with LiveNet(plan, mechanisms.detect(), new_run_id("test-dns"), tmp_path) as live:
        svc = dnsnet.start_dns_service(live, plan, config, tmp_path)
        res_ip = svc.resolvers[resolver_of(plan, client).name].ip
        # cached now, for `ttl` s
        assert unbound.resolve(live, client, res_ip, config.service_fqdn) == [vip]
        failed_at = time.time()
        stop_processes(svc.backends[dc])
        detected = dns.wait_answer(svc.authority, str(region.subnet),
                                      lambda a: a == [other_vip], timeout_s=10)
        assert detected - failed_at < DETECT_TARGET_S + 1.0  # slack for a busy CI
        # after detection no answer from the authority names the failed DC ...
        for _ in range(5):
            assert vip not in svc.authority.answer(subnet=str(region.subnet))
        # ... and the resolver's copy runs out within its TTL
        deadline = time.monotonic() + ttl + 5
        while unbound.resolve(live, client, res_ip, config.service_fqdn) != [other_vip]:
            assert time.monotonic() < deadline, "resolver still names the failed DC"
            time.sleep(0.1)
        assert unbound.resolve(live, client, res_ip, config.service_fqdn) == [other_vip]
        state = svc.authority.state()
        assert state["dcs"][dc]["healthy"] is False
        # and when it comes back, so do its answers
        svc.backends[dc] = start_http_backends(live, plan, dcs=[dc])[dc]
        dns.wait_answer(svc.authority, str(region.subnet), lambda a: a == [vip],
                           timeout_s=10)
