"""rtt-matrix: RTT from every client region to every DC and every resolver.

Why first: every later latency claim rests on the emulated WAN doing what the scenario says.
The summary puts the configured RTT (twice the one-way delay of the routed path) beside the
measured median, with the mechanism that carried the delay, so a wrong emulation is visible.
"""
from __future__ import annotations

import statistics

from experiments.base import Context, Experiment, Param
from experiments.tolerance import Tol
from lab import fidelity
from lab.probes import PingJob, ping_many, rtt_many

SUMMARY_COLUMNS = ("src", "dst", "configured_rtt_ms", "measured_rtt_ms", "loss_pct",
                   "link_delay", "src_host", "dst_host", "dst_kind", "error_ms",
                   "replies", "sent")


def targets(plan) -> list[tuple[str, object]]:
    """(kind, host plan) of every probe target: each DC's first backend, each resolver."""
    out = [("dc", plan.hosts_in(dc.name, "backend")[0]) for dc in plan.scenario.dcs]
    out += [("resolver", h) for h in plan.by_role("resolver")]
    return out


def run(ctx: Context) -> list[dict]:
    plan = ctx.plan
    count, interval = ctx.params["pings"], ctx.params["interval_s"]
    sources = [plan.hosts_in(r.name, "client")[0] for r in plan.scenario.regions]
    jobs = [PingJob(src.name, str(dst.ip), {"src": src, "dst": dst, "kind": kind})
            for src in sources for kind, dst in targets(plan)]
    summary = []
    with ctx.open_net() as net:
        # One warm-up ping per pair: ARP and the controller's first packet-in are setup
        # costs, not path RTT.
        ping_many(net, jobs, count=1, interval_s=0.2)
        with ctx.phase("rtt-matrix: ping all pairs", len(jobs)) as bar:
            results = rtt_many(net, jobs, count=count, interval_s=interval)
            bar.advance(len(jobs))
    for job, res in results:
        src, dst, kind = job.label["src"], job.label["dst"], job.label["kind"]
        configured = plan.configured_rtt_ms(src.site, dst.site)
        for i, rtt in enumerate(res.rtts_ms):
            ctx.record(t_s=round(i * interval, 3), src=src.name, src_region=src.site,
                       dst=dst.name, dst_dc=dst.site if kind == "dc" else "",
                       workload="ping", latency_ms=rtt, bytes=84, ok=True, error="")
        for _ in range(res.sent - res.received):
            ctx.record(src=src.name, src_region=src.site, dst=dst.name,
                       dst_dc=dst.site if kind == "dc" else "", workload="ping",
                       ok=False, error="timeout")
        measured = statistics.median(res.rtts_ms) if res.rtts_ms else None
        summary.append({
            "src": src.site, "dst": dst.site if kind == "dc" else dst.name,
            "configured_rtt_ms": configured, "measured_rtt_ms": measured,
            "loss_pct": round(res.loss_pct, 2), "link_delay": ctx.mechanisms.link_delay,
            "src_host": src.name, "dst_host": dst.name, "dst_kind": kind,
            "error_ms": None if measured is None else round(measured - configured, 3),
            "replies": res.received, "sent": res.sent})
    # WAN paths carry configured delays; a pair inside one site (a client and its own
    # region's resolver) crosses only the site's switch, whose latency nothing configures.
    wan = [abs(r["error_ms"]) for r in summary
           if r["error_ms"] is not None and r["configured_rtt_ms"] > 0]
    lan = [r["measured_rtt_ms"] for r in summary
           if r["measured_rtt_ms"] is not None and r["configured_rtt_ms"] == 0]
    worst = max(wan, default=0)
    if ctx.mechanisms.link_delay != "none" and worst > fidelity.RTT_TOLERANCE_MS:
        ctx.warn(f"measured RTT differs from configuration by up to {worst:.2f} ms "
                 f"(> {fidelity.RTT_TOLERANCE_MS:g} ms) on a WAN path")
    if lan:
        ctx.log(f"  same-site pairs (LAN only, nothing configured): {min(lan):.2f}-"
                f"{max(lan):.2f} ms, the switches' own latency")
    return summary


# Reproducibility tolerances (experiments/tolerance.py; README table).
TOLERANCES = {
    "configured_rtt_ms": Tol(abs=0, why="from the scenario"),
    "measured_rtt_ms": Tol(abs=1.0, rel=0.02,
                           why="relay accuracy target 1 ms; 2 % on long paths"),
    "loss_pct": Tol(abs=10, why="one lost ping of a quick run's 10"),
}


EXPERIMENT = Experiment(
    name="rtt-matrix",
    summary="RTT from every client region to every DC and resolver, configured vs measured",
    claim="Latency between users and DCs is set by geography: the emulated WAN must apply "
          "the scenario's delays before any load-balancing result can be trusted.",
    run=run,
    params=(Param("pings", 20, "pings per pair", quick=10),
            Param("interval_s", 0.1, "seconds between pings", quick=0.05)),
    summary_columns=SUMMARY_COLUMNS,
    order=10,
    expected_s={"quick": 20, "full": 25},
    key_columns=("src", "dst"),
    tolerances=TOLERANCES,
    renderer="experiments.report.rtt:render",
)
