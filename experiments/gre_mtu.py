"""gre-mtu: uploads and searches through a GRE VIP, with and without a fix for the 24 bytes
that GRE adds to every packet.

The chapter: the LB wraps each client packet in an outer IPv4 + GRE header (24 bytes). A
full-size 1500-byte client packet becomes 1524 bytes, more than a 1500-byte underlay can
carry; Open vSwitch drops it (DF set, no fragmentation, no ICMP). Small requests fit, so
searches work while large uploads hang: an MTU black hole. Variants (one network, applied in
turn, each undoing the previous one; clients forget learnt path MTUs in between):
- no-fix: underlay MTU 1500;
- mss-clamp: the client-region routers (the client edge) clamp the MSS of SYNs in both
  directions to 1500 - 40 - 24 = 1436 with nftables (clamping only the client's SYN does
  not help: the client's segment size follows the backend's SYN-ACK);
- jumbo-underlay: MTU 1600 on every interface an outer packet crosses (DC LANs, WAN links,
  relays), client LANs stay at 1500 so replies keep the client's MTU;
- icmp-frag-needed: the DC router in front of the LB forwards to the VIP over a route with
  a locked MTU of 1476, so too-big packets get ICMP fragmentation-needed and path MTU
  discovery works.
An upload that hangs is cut off (`--stall` seconds without progress, or `--timeout`) and
counted as failed. The GRE port's rx counter must stay at 0 (replies return directly), and
the userspace decapsulators' CPU time is recorded.
"""
from __future__ import annotations

import time

from experiments.base import Context, Experiment, Param
from experiments.tolerance import Tol
from experiments.seeds import derive
from experiments.stats import pct, percentile
from experiments.vip_modes import finish_searches, record_upload
from experiments.vipclient import for_live
from experiments.workloads import control

VARIANTS = ("no-fix", "mss-clamp", "jumbo-underlay", "icmp-frag-needed")
JUMBO_MTU = 1600
SUMMARY_COLUMNS = ("variant", "uploads", "upload_ok_pct", "upload_goodput_mbps",
                   "search_ok_pct", "search_latency_p50_ms", "searches",
                   "search_latency_p99_ms", "underlay_mtu", "fix", "gre_port_rx_packets",
                   "gre_port_tx_packets", "decap", "decap_cpu_pct", "decap_inner_mbps",
                   "decap_drops", "vip", "backends")


def apply_variant(levers, variant: str) -> str:
    """Undo every lever, then apply the variant's (lab/mtu.py); returns what was set."""
    levers.unclamp_mss()
    levers.no_icmp_frag_needed()
    if levers.mtu != 1500:
        levers.set_underlay_mtu(1500)
    levers.flush_client_pmtu()
    if variant == "no-fix":
        return "none"
    if variant == "mss-clamp":
        routers = levers.clamp_mss()
        return f"mss 1436 both directions on {' '.join(routers)}"
    if variant == "jumbo-underlay":
        levers.set_underlay_mtu(JUMBO_MTU)
        return f"underlay mtu {JUMBO_MTU}"
    if variant == "icmp-frag-needed":
        return "; ".join(levers.icmp_frag_needed())
    raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")


def _decap_totals(stats: dict) -> tuple[float, int, int]:
    cpu = sum(s.get("cpu_s", 0.0) for s in stats.values())
    inner = sum(s.get("inner_bytes", 0) for s in stats.values())
    drops = sum(sum(s.get("dropped", {}).values()) for s in stats.values())
    return cpu, inner, drops


def run(ctx: Context) -> list[dict]:
    plan, p = ctx.plan, ctx.params
    unknown = [v for v in p["variants"] if v not in VARIANTS]
    if unknown:
        from topologies.system import InputError
        raise InputError(f"gre-mtu: unknown variant {unknown[0]!r} (one of "
                         f"{', '.join(VARIANTS)})")
    dc = plan.scenario.dcs[0]
    vip = str(dc.vip)
    clients = [plan.hosts_in(r.name, "client")[0] for r in plan.scenario.regions]
    summary = []
    with ctx.open_net(gre=True) as live:
        api = for_live(live)
        gre = live.gre
        control.start_http_backends(live, plan)
        live.start_health_checks()
        api.change(dc.name, mode="gre")
        pool = {b["name"] for b in api.vip(dc.name)["backends"]}
        with ctx.phase("gre-mtu", len(p["variants"])) as bar:
            for variant in p["variants"]:
                fix = apply_variant(gre.levers, variant)
                port0 = gre.port_counters(dc.name)
                cpu0, inner0, drops0 = _decap_totals(gre.decap_stats())
                t0 = time.monotonic()
                procs = [(c, control.start_json_lines(live, c.name, "search_json", [
                    "--host", vip, "--rate", str(p["rate"]), "--duration", str(p["duration_s"]),
                    "--size", str(p["search_size"]), "--seed", str(derive(ctx.seed, "client", i))]))
                    for i, c in enumerate(clients)]
                uploads = []
                for u in range(p["uploads"]):
                    client = clients[u % len(clients)]
                    res = control.run_json_lines(live, client.name, "upload", [
                        "--host", vip, "--size-mb", str(p["upload_mb"]),
                        "--timeout", str(p["upload_timeout_s"]), "--stall", str(p["stall_s"])],
                        timeout_s=p["upload_timeout_s"] + 30)
                    up = res[-1]
                    uploads.append(up)
                    record_upload(ctx, variant, u, client, vip, up)
                rows = finish_searches(ctx, variant, procs, vip, pool, p["duration_s"] + 60)
                wall = time.monotonic() - t0
                port1 = gre.port_counters(dc.name)
                cpu1, inner1, drops1 = _decap_totals(gre.decap_stats())
                oks = [r for r in rows if r["ok"] and r["backend"] in pool]
                good = [u["goodput_mbps"] for u in uploads if u["ok"]]
                decap = live.mech.gre_decap
                summary.append({
                    "variant": variant, "uploads": len(uploads),
                    "upload_ok_pct": pct(len(good), len(uploads)),
                    "upload_goodput_mbps": round(sum(good) / len(good), 2) if good else None,
                    "search_ok_pct": pct(len(oks), len(rows)),
                    "search_latency_p50_ms": percentile([r["latency_ms"] for r in oks], 50),
                    "search_latency_p99_ms": percentile([r["latency_ms"] for r in oks], 99),
                    "searches": len(rows), "underlay_mtu": gre.levers.mtu, "fix": fix,
                    "gre_port_rx_packets": port1.get("rx_packets", 0) - port0.get("rx_packets", 0),
                    "gre_port_tx_packets": port1.get("tx_packets", 0) - port0.get("tx_packets", 0),
                    "decap": decap,
                    "decap_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1)
                    if decap == "userspace" else None,
                    "decap_inner_mbps": round((inner1 - inner0) * 8 / wall / 1e6, 2)
                    if decap == "userspace" else None,
                    "decap_drops": drops1 - drops0, "vip": vip,
                    "backends": " ".join(sorted(pool))})
                bar.advance()
    return summary


# Reproducibility tolerances (experiments/tolerance.py; README table).
TOLERANCES = {
    "upload_ok_pct": Tol(abs=10),
    "upload_goodput_mbps": Tol(rel=0.3),
    "search_ok_pct": Tol(abs=2),
    "search_latency_p50_ms": Tol(abs=5, rel=0.25),
    "search_latency_p50_ms[variant=no-fix]": Tol(
        rel=0.6, why="searches share the path with uploads stuck in the black hole, "
                     "retransmitting (79 vs 124 ms seen)"),
}


EXPERIMENT = Experiment(
    name="gre-mtu",
    summary="GRE VIP: the MTU black hole (no-fix) and its fixes: MSS clamping, jumbo underlay, "
            "ICMP fragmentation-needed",
    claim="GRE adds 24 bytes: over a 1500-byte underlay, small requests work but large "
          "transfers hang (no fragmentation, no ICMP); clamping the MSS in both directions, a "
          "larger underlay MTU, or ICMP fragmentation-needed (path MTU discovery) fix it.",
    run=run,
    scenario="two-dc",
    params=(Param("variants", list(VARIANTS), "MTU handling variants, in order"),
            Param("rate", 10.0, "search requests per second per client", quick=5.0),
            Param("duration_s", 15.0, "seconds of search traffic per variant", quick=5.0),
            Param("search_size", 20000, "search reply size (bytes): several segments"),
            Param("uploads", 5, "uploads per variant", quick=2),
            Param("upload_mb", 20.0, "size of each upload (MB)", quick=5.0),
            Param("upload_timeout_s", 60.0, "an upload not done by then failed", quick=20.0),
            Param("stall_s", 10.0, "an upload without progress this long failed", quick=5.0)),
    summary_columns=SUMMARY_COLUMNS,
    order=40,
    expected_s={"quick": 40, "full": 105},
    key_columns=("variant",),
    tolerances=TOLERANCES,
    renderer="experiments.report.gre:render",
)
