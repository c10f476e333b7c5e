"""`make bench`: performance checks, each measured side by side with its baseline in one run.

Writes results/bench/<run-id>/bench.csv with columns metric, value, unit, baseline, ratio,
target, note (ratio = value / baseline) and prints the table. Targets are informative here:
speed is checked in benchmarks, never in timed tests, because the machines are noisy.
Metrics come from small functions registered in METRICS (those measured through a VIP in
experiments/benchvip.py); other issues add theirs.
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
from topologies.system import REPO_ROOT, InputError

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


def detect_mechanisms():
    from lab import mechanisms
    return mechanisms.detect()


def bench_topology() -> list[Row]:
    """three-dc brought up (controller connected, every switch configured) and torn down."""
    from topologies import scenario
    from lab.net import LiveNet
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("three-dc"))
    mech = detect_mechanisms()
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
    mech = detect_mechanisms()
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
    from types import SimpleNamespace

    from experiments.workloads.control import backend_argv
    proc = node.popen(backend_argv("nginx", SimpleNamespace(name=name, site="bench"), 80, work))
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
    mech = detect_mechanisms()
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


def _benchvip():
    from experiments import benchvip   # imports this module: loaded when first measured
    return benchvip


def _benchctl():
    from experiments import benchctl   # imports this module: loaded when first measured
    return benchctl


def _benchtier():
    from experiments import benchtier   # imports this module: loaded when first measured
    return benchtier


def _relay_metric(name: str, unit: str, note: str) -> Callable[[], list[Row]]:
    def measure() -> list[Row]:
        from topologies.relay import bench as relay_bench
        value = getattr(relay_bench, name)()
        return [Row(name, value, unit, target=relay_bench.TARGETS[name], note=note)]
    return measure


def _worst_wan_error(mech) -> tuple[float, float, int, str]:
    """three-dc at idle: every pair of hosts in two different sites (one of each role per
    site: a client, a resolver, a backend, the authority), warm-up ping, then 20 probes each,
    six pairs at a time;
    (worst |median - configured|, median of those errors, pairs, the worst pair)."""
    from lab.net import LiveNet
    from lab.probes import PingJob, ping_many, rtt_many
    from topologies import scenario
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("three-dc"))
    run_id = new_run_id("bench-rtt")
    seen, hosts = set(), []
    for h in plan.hosts:
        if (h.site, h.role) not in seen:
            seen.add((h.site, h.role))
            hosts.append(h)
    jobs = [PingJob(a.name, str(b.ip), {"a": a, "b": b}) for a in hosts for b in hosts
            if a.site < b.site]
    with LiveNet(plan, mech, run_id, Path("/tmp") / f"lblab-{run_id}",
                 log=lambda *_: 0) as live:
        ping_many(live, jobs, count=1, interval_s=0.2)
        # a few probes at a time: dozens of probe processes at once on 2 cores would
        # measure the CPU queue, not the paths ("at idle")
        results = []
        for i in range(0, len(jobs), 6):
            results += rtt_many(live, jobs[i:i + 6], count=20, interval_s=0.05)
    errors = []
    for job, res in results:
        if not res.rtts_ms:
            raise RuntimeError(f"no reply from {job.label['b'].name} to {job.label['a'].name}")
        want = plan.configured_rtt_ms(job.label["a"].site, job.label["b"].site)
        errors.append((abs(statistics.median(res.rtts_ms) - want),
                       f"{job.label['a'].name}->{job.label['b'].name}"))
    errors.sort()
    return errors[-1][0], statistics.median(e for e, _ in errors), len(errors), errors[-1][1]


def bench_rtt_paths() -> list[Row]:
    """Worst host-to-host WAN path error of three-dc at idle, client regions' LANs on Linux
    bridges (the default) vs on OVS like the DCs' (the baseline), in one run."""
    import dataclasses
    mech = detect_mechanisms()
    if mech.link_delay == "none":
        return [Row("rtt_path_error_ms", None, "ms", target=0.5,
                    note="not measured: no link delay mechanism")]
    bridge = _worst_wan_error(dataclasses.replace(mech, region_lan="bridge"))
    ovs_only = _worst_wan_error(dataclasses.replace(mech, region_lan="ovs"))
    return [Row("rtt_path_error_ms", bridge[0], "ms", baseline=ovs_only[0], target=0.5,
                note=f"worst |median RTT - configured| over {bridge[2]} host pairs in "
                     f"different sites, 20 probes each; regions on Linux bridges, DCs on "
                     f"OVS ({mech.ovs_datapath}), link {mech.link_delay}; median error "
                     f"{bridge[1]:.3f} ms, worst {bridge[3]}; baseline every LAN on OVS "
                     f"(median {ovs_only[1]:.3f} ms, worst {ovs_only[3]})")]


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
    "vip": lambda: _benchvip().bench_vip(),
    "vip_gre": lambda: _benchvip().bench_vip_gre(),
    "maglev_table_build_ms": bench_maglev,
    "topology": bench_topology,
    "ovs_goodput_vs_veth": bench_ovs_goodput,
    "rtt_path_error_ms": bench_rtt_paths,
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
    "controllers": lambda: _benchctl().bench_controllers(),
    "lb_tier": lambda: _benchtier().bench_lb_tier(),
}


def run_bench(out_root: Path | None = None, only: list[str] | None = None, log=print) -> Path:
    from experiments.runner import git_info
    from lab import mechanisms
    from topologies import ovs
    unknown = sorted(set(only or ()) - set(METRICS))
    if unknown:  # a typo would otherwise run nothing and write an empty table
        raise InputError(f"--only {unknown[0]}: no such bench group (one of: "
                         f"{', '.join(METRICS)})")
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
