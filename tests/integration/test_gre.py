"""GRE forwarding through the VIP on real Open vSwitch (userspace datapath here) with the
backends' decapsulation (userspace decapsulator here, kernel ip_gre where it exists): what a
user of the GRE mode cares about. Network: two-dc with us1's VIP in mode gre and eu1's
backends in its pool (the scenario's `remote_backends`)."""
from __future__ import annotations

import copy
import csv
import subprocess

import pytest
import yaml

from conftest import LBLAB, REPO
from experiments.vipclient import for_live
from experiments.workloads import control
from lab import mechanisms
from topologies import grestate, ovsstats, scenario
from lab.net import LiveNet
from topologies.plan import build_plan
from topologies.state import new_run_id

pytestmark = pytest.mark.integration


def gre_scenario():
    path = scenario.resolve_path("two-dc")
    data = copy.deepcopy(yaml.safe_load(path.read_text()))
    data["dcs"]["us1"].update(mode="gre", remote_backends=["eu1"])
    return scenario.parse(data, f"{path} (us1 gre, remote_backends eu1)")


@pytest.fixture
def grenet(lblab_clean, tmp_path):
    mech = mechanisms.detect()
    if mech.gre_decap == "none":
        pytest.skip("no GRE decapsulation on this machine (lblab doctor: gre_decap none)")
    plan = build_plan(gre_scenario())
    with LiveNet(plan, mech, new_run_id("test"), tmp_path, calibrate_links=False) as live:
        control.start_http_backends(live, plan)
        live.start_health_checks()
        yield plan, live, for_live(live)
    # after teardown: no tunnel port, no decapsulator, no OVS route of ours
    assert not [r for r in grestate.ovs_user_routes() if r["dev"].startswith("lbs-")]
    ports = subprocess.run(["ovs-vsctl", "--columns=name", "list", "interface"],
                           capture_output=True, text=True).stdout
    assert "lbg-" not in ports
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "topologies.gredecap" not in procs


def timed_get(live, client: str, url: str) -> tuple[dict, float]:
    """(reply, TCP connect time in ms) with curl: the SYN goes through the tunnel, the
    SYN-ACK straight back."""
    out = live.node(client).cmd(
        f"curl -s -m 5 -D - -o /dev/null -w 'LBLAB %{{http_code}} %{{time_connect}}\\n' "
        f"'{url}'")
    status, connect, backend = 0, 0.0, ""
    for line in out.splitlines():
        if line.startswith("LBLAB "):
            _, code, t = line.split()
            status, connect = int(code), float(t) * 1000
        elif line.lower().startswith("x-backend:"):
            backend = line.split(":", 1)[1].strip()
    return {"status": status, "backend": backend}, connect


def test_http_through_gre_vip_from_every_region_to_both_dcs(grenet):
    plan, live, api = grenet
    vip = plan.scenario.dcs[0].vip
    local = {h.name for h in plan.hosts_in("us1", "backend")}
    remote = {h.name for h in plan.hosts_in("eu1", "backend")}
    assert {b["name"] for b in api.vip("us1")["backends"]} == local | remote
    assert api.vip("us1")["mode"] == "gre"
    rx_before = {dc.name: live.gre.port_counters(dc.name) for dc in plan.scenario.dcs}
    for client in plan.by_role("client"):
        seen = set()
        for i in range(24):
            reply = control.http_get(live, client.name, f"http://{vip}/search?size=3000&i={i}")
            assert reply["status"] == 200, (client.name, reply)
            assert reply["backend"] in local | remote, reply
            seen.add(reply["backend"])
        assert seen & local and seen & remote, (client.name, seen)
    # direct return: nothing came back through a tunnel port
    for dc in plan.scenario.dcs:
        after = live.gre.port_counters(dc.name)
        assert after["rx_packets"] == rx_before[dc.name]["rx_packets"] == 0
    sent = live.gre.port_counters("us1")["tx_packets"] - rx_before["us1"]["tx_packets"]
    assert sent >= 24 * len(plan.by_role("client")), sent   # every request left tunnelled
    # us1's own backends got their outer packets from the LB switch itself, not by a
    # hairpin through the DC router; eu1's went by the router (no shortcut names them)
    from controller.vipflows import PRIO_GRE_LOCAL
    shortcut = {f.text.split("nw_dst=")[1].split(",")[0]: f.n_packets
                for f in ovsstats.flows(plan.switch("us1").name, table=0)
                if f.priority == PRIO_GRE_LOCAL}
    assert set(shortcut) == {str(h.ip) for h in plan.hosts_in("us1", "backend")}, shortcut
    assert all(n > 0 for n in shortcut.values()), shortcut
    if live.mech.gre_decap == "userspace":
        stats = live.gre.decap_stats()
        assert all(stats[h]["decapsulated"] > 0 for h in local | remote), stats
        assert not any(s["dropped"] for s in stats.values()), stats


def test_cross_dc_backends_cost_the_extra_wan_latency(grenet):
    plan, live, api = grenet
    vip = plan.scenario.dcs[0].vip
    client = plan.hosts_in("na", "client")[0].name

    def connect_ms(pool_dc: str) -> float:
        others = [h for h in plan.hosts_in("us1" if pool_dc == "eu1" else "eu1", "backend")]
        for h in others:
            api.drain("us1", str(h.ip))
        # readiness: the switch's bucket table no longer names them (REST applies changes
        # asynchronously; thousands of entries take a while)
        from experiments.vip_hashing import wait_table
        wait_table(plan, "us1", exclude={int(h.ip) for h in others})
        try:
            times = []
            for i in range(5):
                reply, ms = timed_get(live, client, f"http://{vip}/search?i={i}")
                assert reply["status"] == 200 and reply["backend"].startswith(f"lbb-{pool_dc}")
                times.append(ms)
            return sorted(times)[len(times) // 2]
        finally:
            for h in others:
                api.call("POST", f"/vips/us1/backends/{h.ip}/undrain")

    local, remote = connect_ms("us1"), connect_ms("eu1")
    # na -> us1 LB -> backend: the tunnel's extra leg to eu1 (us1 -> eu1, 25 ms one way
    # in two-dc) and eu1 -> na (20 ms) instead of us1 -> na (5 ms)
    if live.mech.link_delay != "none":
        assert remote > local + 20, (local, remote)


def test_gre_vip_accepts_another_dcs_backend_over_rest(grenet):
    plan, live, api = grenet
    eu1 = plan.scenario.dcs[1]
    api.change(eu1.name, mode="gre")
    far = plan.hosts_in("us1", "backend")[0]
    api.add_backend(eu1.name, str(far.ip))
    assert far.name in {b["name"] for b in api.vip(eu1.name)["backends"]}
    for h in plan.hosts_in(eu1.name, "backend"):
        api.remove_backend(eu1.name, str(h.ip))
    client = plan.hosts_in("eu", "client")[0].name
    for i in range(3):
        reply = control.http_get(live, client, f"http://{eu1.vip}/search?i={i}")
        assert reply["status"] == 200 and reply["backend"] == far.name, reply
    # a NAT/DSR VIP still refuses it, with the reason
    api.change(eu1.name, mode="gre")
    status, payload = api.call("PUT", f"/vips/{eu1.name}", {"mode": "dsr"}, expect_ok=False)
    assert status == 400 and "gre" in payload["error"], payload


def test_gre_mtu_quick_shows_the_black_hole_and_the_fixes(lblab_clean, tmp_path):
    proc = subprocess.run([*LBLAB, "run", "gre-mtu", "--quick", "--out", str(tmp_path),
                           "--set", "variants=no-fix,mss-clamp,jumbo-underlay"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = next((tmp_path / "gre-mtu").iterdir())
    with open(run_dir / "summary.csv") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    assert float(rows["no-fix"]["upload_ok_pct"]) == 0, rows["no-fix"]
    assert float(rows["no-fix"]["search_ok_pct"]) >= 95, rows["no-fix"]
    for variant in ("mss-clamp", "jumbo-underlay"):
        assert float(rows[variant]["upload_ok_pct"]) >= 99, rows[variant]
        assert float(rows[variant]["search_ok_pct"]) >= 95, rows[variant]
    for row in rows.values():
        assert int(row["gre_port_rx_packets"]) == 0, row
