"""VIP smoke tests on the kernel datapath: one VIP switched between nat, dsr and gre, each
answered by one of its backends; in gre mode also by a backend in the other DC, with direct
return (the kernel GRE vport routed by fwmark policy routing, the backends' ip_gre
decapsulating).

Collected only when the VIP balancer's Ryu app (controller.vipapp) exists."""
from __future__ import annotations

import pytest

pytest.importorskip("controller.vipapp", reason="VIP balancer app (controller.vipapp) not built")

pytestmark = [pytest.mark.integration, pytest.mark.kernel]

REQUESTS = 6


@pytest.fixture(scope="session")
def vip_ready(two_dc):
    from experiments.workloads import control
    dc = two_dc.plan.scenario.dcs[0]
    control.start_http_backends(two_dc, two_dc.plan)
    two_dc.start_health_checks()
    return dc


@pytest.mark.parametrize("mode", ["nat", "dsr", "gre"])
def test_vip_answered_by_a_backend(two_dc, vip_ready, mode):
    from experiments.vipclient import for_live
    from experiments.workloads import control
    plan, dc = two_dc.plan, vip_ready
    api = for_live(two_dc)
    api.change(dc.name, mode=mode)
    assert api.vip(dc.name).get("mode", mode) == mode
    pool = {h.name for h in plan.hosts_in(dc.name, "backend")}
    client = plan.hosts_in(plan.scenario.regions[0].name, "client")[0]
    answers = [control.http_get(two_dc, client.name, f"http://{dc.vip}/health", timeout_s=5)
               for _ in range(REQUESTS)]
    bad = [a for a in answers if a["status"] != 200 or a["backend"] not in pool]
    assert not bad, f"{mode}: {len(bad)}/{REQUESTS} requests failed or answered by a " \
                    f"foreign host: {bad[:3]}"
    # hash_impl dp_hash: the kernel datapath computes the VIP's hash (its flows hold the
    # hash action the select group asks for), so a new connection costs no upcall here
    # either. Checked right after the requests: idle kernel flows expire in 10 s.
    import subprocess
    assert api.vip(dc.name)["hash_impl"] == "dp_hash"
    flows = subprocess.run(["ovs-appctl", "dpctl/dump-flows"], capture_output=True,
                           text=True, check=True).stdout
    assert "hash(" in flows, flows[-1500:]


def test_gre_vip_reaches_a_backend_in_another_dc_with_direct_return(two_dc, vip_ready):
    """The chapter's point for GRE: the LB can pick a backend anywhere. us1's VIP keeps only
    one eu1 backend; every region's client is answered by it, through the kernel tunnel, and
    no reply comes back through a tunnel port."""
    from experiments.vipclient import for_live
    from experiments.workloads import control
    plan, dc = two_dc.plan, vip_ready
    other = next(d for d in plan.scenario.dcs if d.name != dc.name)
    far = plan.hosts_in(other.name, "backend")[0]
    local = [str(h.ip) for h in plan.hosts_in(dc.name, "backend")]
    api = for_live(two_dc)
    api.change(dc.name, mode="gre")
    rx_before = {d.name: two_dc.gre.port_counters(d.name)["rx_packets"]
                 for d in plan.scenario.dcs}
    tx_before = two_dc.gre.port_counters(dc.name)["tx_packets"]
    api.add_backend(dc.name, str(far.ip))
    try:
        for ip in local:
            api.remove_backend(dc.name, ip)
        for region in plan.scenario.regions:
            client = plan.hosts_in(region.name, "client")[0]
            for i in range(3):
                reply = control.http_get(two_dc, client.name,
                                         f"http://{dc.vip}/search?i={i}", timeout_s=5)
                assert reply["status"] == 200 and reply["backend"] == far.name, \
                    (client.name, reply)
        # Port counters are read live from the switch (ovs-ofctl dump-ports), never from
        # OVSDB's statistics, which lag by up to 5 s: nothing came back through a tunnel.
        for d in plan.scenario.dcs:
            assert two_dc.gre.port_counters(d.name)["rx_packets"] == rx_before[d.name]
        assert two_dc.gre.port_counters(dc.name)["tx_packets"] >= tx_before + 3 * len(
            plan.scenario.regions), "the requests did not leave through us1's GRE port"
    finally:
        for ip in local:
            api.add_backend(dc.name, ip)
        api.remove_backend(dc.name, str(far.ip))
        api.change(dc.name, mode="nat")


def test_nat_with_kernel_conntrack_keeps_backends_reachable_directly(two_dc, vip_ready):
    """conntrack_impl ct on the kernel datapath (nf_conntrack): the VIP's table is the
    tracker, a backend answers a direct client on port 80 from its own address while the
    VIP is in NAT mode, the DC's other host reaches its own VIP, and REST counts open
    connections from the kernel's conntrack."""
    import subprocess
    import time
    from experiments.vipclient import for_live
    from experiments.workloads import control
    plan, dc = two_dc.plan, vip_ready
    api = for_live(two_dc)
    api.change(dc.name, mode="nat")
    assert api.vip(dc.name)["connection_table"] == "conntrack"
    target = plan.hosts_in(dc.name, "backend")[1]
    client = plan.hosts_in(plan.scenario.regions[0].name, "client")[0]
    direct = control.http_get(two_dc, client.name, f"http://{target.ip}/search?size=700")
    assert (direct["status"], direct["backend"], direct["bytes"]) == (200, target.name, 700)
    (host,) = [h for h in plan.hosts_in(dc.name) if h.role != "backend"]
    pool = {h.name for h in plan.hosts_in(dc.name, "backend")}
    hairpin = control.http_get(two_dc, host.name, f"http://{dc.vip}/search?size=300")
    assert hairpin["status"] == 200 and hairpin["backend"] in pool
    streams = control.start_json_lines(two_dc, client.name, "streams", [
        "--host", str(dc.vip), "--count", "4", "--seconds", "8", "--interval", "0.5"])
    control.wait_streams_open(streams)
    deadline, counted = time.monotonic() + 15, 0
    while counted < 4 and time.monotonic() < deadline:
        counted = sum(b["active_connections"] or 0 for b in api.vip(dc.name)["backends"])
        time.sleep(0.3)
    dump = subprocess.run(["ovs-appctl", "dpctl/dump-conntrack", "zone=1"],
                          capture_output=True, text=True).stdout
    assert counted >= 4, dump[-500:]
    control.finish_json_lines(streams, timeout_s=40)
