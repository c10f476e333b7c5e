"""`make bench`: performance checks, each measured side by side with its baseline in one run.

Writes results/bench/<run-id>/bench.csv with columns metric, value, unit, baseline, ratio,
target, note (ratio = value / baseline) and prints the table. Targets are informative here:
speed is checked in benchmarks, never in timed tests, because the machines are noisy.
Metrics come from small functions registered in METRICS; other issues add theirs.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from experiments.cpu import CpuIdleSampler
from experiments.results import write_csv, write_json
from topologies.state import new_run_id
from topologies.system import REPO_ROOT

BENCH_COLUMNS = ("metric", "value", "unit", "baseline", "ratio", "target", "note")


@dataclass
class Row:
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    target: float | None = None
    note: str = ""

    def as_dict(self) -> dict:
        ratio = self.value / self.baseline if self.value is not None and self.baseline else None
        return {"metric": self.metric, "value": _round(self.value), "unit": self.unit,
                "baseline": _round(self.baseline), "ratio": _round(ratio),
                "target": self.target, "note": self.note}


def _round(x):
    return None if x is None else round(x, 4)


def _mech():
    from lab import mechanisms
    return mechanisms.detect()


def bench_topology() -> list[Row]:
    """three-dc brought up (controller connected, every switch configured) and torn down."""
    from topologies import scenario
    from lab.net import LiveNet
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("three-dc"))
    mech = _mech()
    run_id = new_run_id("bench-topo")
    ups, downs = [], []
    for _ in range(2):
        live = LiveNet(plan, mech, run_id, Path("/tmp") / f"lblab-{run_id}", log=lambda *_: 0)
        with live:
            # "verified": one ping across the WAN before the clock stops.
            res = live.ping(plan.by_role("client")[0].name, str(plan.by_role("backend")[-1].ip),
                            count=1, interval=0.2)
            if res.received != 1:
                raise RuntimeError("three-dc did not pass traffic during the benchmark")
            up = live.timing.up_s
        ups.append(up)
        downs.append(live.timing.down_s)
    note = f"median of 2; link_delay={mech.link_delay}, datapath={mech.ovs_datapath}"
    return [Row("topology_up_s", statistics.median(ups), "s", target=10, note=note),
            Row("topology_down_s", statistics.median(downs), "s", target=5, note=note)]


def bench_ovs_goodput() -> list[Row]:
    """TCP goodput host-to-host across one lblab switch vs over a plain veth pair."""
    from lab.probes import iperf3_goodput_mbps
    from lab.minimal import two_host_net
    mech = _mech()
    through_switch, direct = [], []
    for _ in range(2):  # interleaved, so drift in machine load hits both alike
        with two_host_net(mech, with_switch=True) as (h1, h2):
            through_switch.append(iperf3_goodput_mbps(h1, h2, h2.IP(), seconds=3))
        with two_host_net(mech, with_switch=False) as (h1, h2):
            direct.append(iperf3_goodput_mbps(h1, h2, h2.IP(), seconds=3))
    return [Row("ovs_goodput_vs_veth", statistics.median(through_switch), "Mbit/s",
                baseline=statistics.median(direct),
                note=f"iperf3 TCP 3 s, median of 2; OVS datapath {mech.ovs_datapath}")]


RPS_SECONDS, RPS_CONNECTIONS = 5, 32


def _nginx_in(node, work: Path, name: str):
    """nginx (lblab's backend configuration) in a Mininet node, ready when /health answers."""
    from lab import nginx
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(nginx.render_conf(name, "bench", 80, work))
    proc = node.popen(nginx.command(conf))
    deadline = time.monotonic() + 10
    while node.cmd("curl -sf -m 1 http://127.0.0.1/health").strip() != "ok":
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"nginx did not start in {node.name}")
        time.sleep(0.05)
    return proc


def bench_lab_rps() -> list[Row]:
    """HTTP requests per second with a new connection each (wrk, Connection: close), one
    client host to one nginx backend through one lblab switch; baseline the same load
    generator and server over a Linux bridge (the machine's own limit)."""
    from lab import wrk
    from lab.minimal import two_host_net
    from lab.mechanisms import nginx_available
    mech = _mech()
    if not nginx_available():
        return [Row("lab_rps_direct", None, "req/s", target=6000,
                    note="not measured: nginx with Lua missing (make setup)")]
    got: dict[str, list] = {"ovs": [], "bridge": []}
    errors = 0
    for _ in range(2):  # interleaved, so drift in machine load hits both alike
        for kind in ("ovs", "bridge"):
            with two_host_net(mech, with_switch=kind == "ovs",
                              linux_bridge=kind == "bridge") as (h1, h2):
                srv = _nginx_in(h2, Path("/tmp") / f"lblab-bench-nginx-{os.getpid()}", "be1")
                try:
                    res = wrk.run(h1, f"http://{h2.IP()}/search?size=64",
                                  seconds=RPS_SECONDS, connections=RPS_CONNECTIONS)
                finally:
                    srv.terminate()
                    srv.wait(timeout=5)
                got[kind].append(res.rps)
                errors += res.errors
    return [Row("lab_rps_direct", statistics.median(got["ovs"]), "req/s",
                baseline=statistics.median(got["bridge"]), target=6000,
                note=f"wrk -t2 -c{RPS_CONNECTIONS} {RPS_SECONDS} s, a new connection per "
                     f"request, nginx (1 worker); median of 2; baseline a Linux bridge; "
                     f"OVS datapath {mech.ovs_datapath}; wrk errors {errors}")]


def _relay_metric(name: str, unit: str, note: str) -> Callable[[], list[Row]]:
    def measure() -> list[Row]:
        from topologies.relay import bench as relay_bench
        value = getattr(relay_bench, name)()
        return [Row(name, value, unit, target=relay_bench.TARGETS[name], note=note)]
    return measure


def _iperf_to(live, client: str, servers: list[str], target: str, seconds: float = 4,
              port: int = 80) -> float:
    """iperf3 TCP goodput from `client` to `target:port` with a server on every host in
    `servers`."""
    import json
    import subprocess
    procs = [live.spawn(h, ["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) for h in servers]
    try:
        for h in servers:
            live.wait_until(h, f"ss -Hltn 'sport = :{port}' | grep -q LISTEN", f"iperf3 on {h}")
        out = live.node(client).cmd(f"iperf3 -J -c {target} -p {port} -t {seconds:g}")
        data = json.loads(out)
        if "error" in data:
            raise RuntimeError(f"iperf3 to {target}: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)


def bench_vip() -> list[Row]:
    """Goodput and new-connection rate through the VIP (nat, dsr, reactive) vs direct to a
    backend over the same path, in one network. The direct baseline uses another port than
    the VIP's (80): in NAT mode the LB rewrites every reply from a backend's port 80 to the
    outside, so a direct connection to port 80 would not work (as behind a real NAT LB)."""
    from experiments.vipclient import for_live
    from experiments.workloads import control
    from topologies import scenario
    from lab.net import LiveNet
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("bench-vip"))
    mech = _mech()
    run_id = new_run_id("bench-vip")
    client = plan.by_role("client")[0].name
    backends = [h.name for h in plan.by_role("backend")]
    direct_ip = str(plan.by_role("backend")[0].ip)
    vip = str(plan.scenario.dcs[0].vip)
    dc = plan.scenario.dcs[0].name
    rows = []
    with LiveNet(plan, mech, run_id, Path("/tmp") / f"lblab-{run_id}",
                 log=lambda *_: 0) as live:
        api = for_live(live)
        # iperf3 opens a control and a data connection, which a hash may send to different
        # backends: for goodput the pool is the one backend that the direct path reaches.
        second = str(plan.by_role("backend")[1].ip)
        api.remove_backend(dc, second)
        good = {}
        for mode in ("nat", "dsr"):
            api.change(dc, mode=mode)
            good[mode + "_vip"] = _iperf_to(live, client, backends[:1], vip)
            good[mode + "_direct"] = _iperf_to(live, client, backends[:1], direct_ip,
                                               port=5201)
        api.add_backend(dc, second)
        note = (f"iperf3 TCP 4 s, same client and path; datapath {mech.ovs_datapath}, "
                f"link {mech.link_delay}; checksum offload off on backends: "
                f"{bool(live.tx_offload_off)}")
        for mode in ("nat", "dsr"):
            rows.append(Row(f"vip_goodput_{mode}_vs_direct", good[mode + "_vip"], "Mbit/s",
                            baseline=good[mode + "_direct"], target=0.9, note=note))
        control.start_http_backends(live, plan)
        control.start_http_backends(live, plan, port=8080)

        def rate(target: str, port: int = 80) -> float:
            res = control.run_json_lines(live, client, "connrate",
                                         ["--host", target, "--port", str(port),
                                          "--workers", "8", "--duration", "5"], timeout_s=60)
            return res[0]["conn_per_s"]
        api.change(dc, mode="nat", reactive=False)
        fast, direct = rate(vip), rate(direct_ip, 8080)
        api.change(dc, reactive=True)
        reactive = rate(vip)
        api.change(dc, reactive=False)
        rows.append(Row("vip_conn_rate_vs_direct", fast, "conn/s", baseline=direct,
                        target=0.8, note="8 concurrent connect-GET-close loops, 5 s, nat"))
        rows.append(Row("vip_conn_rate_reactive_vs_direct", reactive, "conn/s",
                        baseline=direct, note="first packet of each connection to the "
                        "controller, exact flows installed"))
    return rows


def bench_vip_gre() -> list[Row]:
    """GRE goodput through the VIP vs direct to the same backend, in one network of the
    bench-vip scenario (the hosts of bench_vip). A separate network from bench_vip's because
    GRE turns checksum offload off on the client (lab/gre.py), which would change
    the nat/dsr numbers. Both paths with the MSS clamped at the client edge (the 1500-byte
    underlay cannot carry full-size packets plus 24 bytes: gre-mtu). The note names the
    decapsulation mechanism and the decapsulator's CPU."""
    from experiments.vipclient import for_live
    from topologies import scenario
    from lab.net import LiveNet
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("bench-vip"))
    mech = _mech()
    metric = "vip_goodput_gre_vs_direct"
    if mech.gre_decap == "none":
        return [Row(metric, None, "Mbit/s", target=0.7,
                    note="not measured: no GRE decapsulation (gre_decap none)")]
    run_id = new_run_id("bench-gre")
    client = plan.by_role("client")[0].name
    backends = [h.name for h in plan.by_role("backend")]
    direct_ip = str(plan.by_role("backend")[0].ip)
    vip = str(plan.scenario.dcs[0].vip)
    dc = plan.scenario.dcs[0].name
    with LiveNet(plan, mech, run_id, Path("/tmp") / f"lblab-{run_id}", log=lambda *_: 0,
                 gre=True) as live:
        api = for_live(live)
        api.remove_backend(dc, str(plan.by_role("backend")[1].ip))  # iperf3: one backend
        api.change(dc, mode="gre")
        live.gre.levers.clamp_mss()
        vips, directs, cpu, wall = [], [], 0.0, 0.0
        for _ in range(2):  # interleaved, so drift in machine load hits both alike
            before = live.gre.decap_stats()
            t0 = time.monotonic()
            vips.append(_iperf_to(live, client, backends[:1], vip))
            wall += time.monotonic() - t0
            after = live.gre.decap_stats()
            cpu += sum(a.get("cpu_s", 0) - before.get(k, {}).get("cpu_s", 0)
                       for k, a in after.items())
            directs.append(_iperf_to(live, client, backends[:1], direct_ip, port=5201))
        rx = live.gre.port_counters(dc).get("rx_packets", 0)
        decap_impl = live.gre.decap_impl
    note = (f"gre_decap {mech.gre_decap}; iperf3 TCP 4 s, median of 2, same client, backend "
            f"and path; MSS clamped to 1436 and client tx offload off for both; GRE port rx "
            f"packets {rx}")
    if mech.gre_decap == "userspace":
        share = cpu / wall if wall else 0.0
        gbps = statistics.mean(vips) / 1000
        note += (f"; decapsulator {decap_impl}: {100 * share:.0f}% of a core incl. iperf3 "
                 f"setup, {share / gbps:.2f} cores per Gbit/s" if gbps else "")
    return [Row(metric, statistics.median(vips), "Mbit/s",
                baseline=statistics.median(directs), target=0.7, note=note)]


def bench_maglev() -> list[Row]:
    from controller.maglev import build_time_ms
    return [Row("maglev_table_build_ms", build_time_ms(100, 65537), "ms",
                note="N=100 backends, M=65537, pure Python, best of 3")]


def bench_dns_qps() -> list[Row]:
    """dnsperf against the standalone GSLB authority vs NSD serving the same zone, loopback."""
    from gslb.bench import DNSPERF_CLIENTS, DNSPERF_OUTSTANDING, dns_qps
    got = dns_qps()
    return [Row("dns_qps", got["value"], "qps", baseline=got["baseline"], target=30000,
                note=f"dnsperf 10 s, {DNSPERF_CLIENTS} clients x {DNSPERF_OUTSTANDING} "
                     "outstanding, 127.0.0.1; baseline NSD, same zone")]


METRICS: dict[str, Callable[[], list[Row]]] = {
    "lab_rps_direct": bench_lab_rps,
    "vip": bench_vip,
    "vip_gre": bench_vip_gre,
    "maglev_table_build_ms": bench_maglev,
    "topology": bench_topology,
    "ovs_goodput_vs_veth": bench_ovs_goodput,
    "relay_rtt_error_ms": _relay_metric(
        "relay_rtt_error_ms", "ms", "worst |median RTT - 2D|, D = 5, 20, 50 ms, idle"),
    "relay_rtt_error_loaded_ms": _relay_metric(
        "relay_rtt_error_loaded_ms", "ms", "same, TCP flow at 50% of a 100 Mbit/s cap"),
    "relay_goodput_vs_cap": _relay_metric(
        "relay_goodput_vs_cap", "ratio", "iperf3 TCP over 100 Mbit/s cap, 40 ms RTT / cap"),
    "relay_loss_error_pct": _relay_metric(
        "relay_loss_error_pct", "pct", "1% configured, 5,000 packets each way"),
    "relay_max_mbps": _relay_metric("relay_max_mbps", "Mbit/s", "TCP, one relay, no cap"),
    "relay_crosstalk_ms": _relay_metric(
        "relay_crosstalk_ms", "ms", "added RTT on an idle link beside a saturated one"),
    "dns_qps": lambda: bench_dns_qps(),
}


def run_bench(out_root: Path | None = None, only: list[str] | None = None, log=print) -> Path:
    from experiments.runner import git_info
    from lab import mechanisms
    from topologies import ovs
    ovs.ensure_running(log)
    run_id = new_run_id("bench")
    out_dir = Path(out_root or REPO_ROOT / "results") / "bench" / run_id
    rows: list[Row] = []
    started = dt.datetime.now(dt.timezone.utc).isoformat()
    with CpuIdleSampler() as cpu:
        for name, fn in METRICS.items():
            if only and name not in only:
                continue
            log(f"bench: {name} ...")
            t0 = time.monotonic()
            try:
                got = fn()
            except Exception as exc:  # one broken metric must not hide the others
                got = [Row(name, None, "", note=f"failed: {type(exc).__name__}: {exc}")]
            rows.extend(got)
            log(f"bench: {name} done in {time.monotonic() - t0:.1f}s")
    table = [r.as_dict() for r in rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "bench.csv", table, BENCH_COLUMNS)
    write_json(out_dir / "metadata.json", {
        "run_id": run_id, "started_utc": started, "git": git_info(),
        "mechanisms": mechanisms.detect().as_dict(), "versions": mechanisms.versions(),
        "kernel_release": platform.release(), "min_cpu_idle_pct": cpu.min_idle_pct,
        "cpu_starved": cpu.starved})
    log(f"{'metric':<28} {'value':>10} {'unit':<8} {'baseline':>10} {'ratio':>7} {'target':>7}")
    for r in table:
        fmt = lambda v: "" if v is None else f"{v:g}"  # noqa: E731
        log(f"{r['metric']:<28} {fmt(r['value']):>10} {r['unit']:<8} {fmt(r['baseline']):>10} "
            f"{fmt(r['ratio']):>7} {fmt(r['target']):>7}  {r['note']}")
    log(f"bench results: {out_dir / 'bench.csv'}")
    return out_dir
