"""vip-modes: the same VIP in NAT and in DSR mode, under search and upload traffic.

The chapter: with NAT both directions cross the load balancer, which keeps per-connection
state; with DSR the balancer only rewrites the destination MAC and the backend answers the
client directly, so reply traffic (the bulk, for searches and downloads) never loads it.
`lb_reply_bytes_share` is the share of the backends' reply bytes that the LB's own flows
handled (the NAT reverse path), read from Open vSwitch's counters. The DC edge switch plays
two roles, ToR (L2 flows) and LB (VIP flows); "crossing the LB" means being handled by VIP
flows, as it would be on a separate LB box.
"""
from __future__ import annotations

from topologies import ovsstats
from experiments.base import Context, Experiment, Param
from experiments.tolerance import Tol
from experiments.seeds import derive
from experiments.stats import pct, percentile
from experiments.vipclient import for_live
from experiments.workloads import control
from controller import vipflows

SUMMARY_COLUMNS = ("variant", "requests", "ok_pct", "latency_p50_ms", "latency_p99_ms",
                   "upload_goodput_mbps", "lb_reply_bytes_share", "uploads", "upload_ok_pct",
                   "vip", "mode", "reply_bytes", "lb_reply_bytes")


def reply_counters(plan, dc: str, vip_index: int) -> tuple[int, int]:
    """(bytes sent by the DC's backends, bytes of those the VIP's flows rewrote as replies),
    read once the flow counters have caught up with the traffic (ovsstats.settled)."""
    return ovsstats.settled(lambda: _reply_counters(plan, dc, vip_index))


def _reply_counters(plan, dc: str, vip_index: int) -> tuple[int, int]:
    bridge = plan.switch(dc).name
    total = sum(ovsstats.port_rx_bytes(bridge, h.switch_port)
                for h in plan.hosts_in(dc, "backend"))
    lb = ovsstats.bytes_where(bridge, lambda f: vipflows.rewrites_replies(f) and
                              vipflows.cookie_vip_index(f.cookie) == vip_index)
    return total, lb


def record_upload(ctx: Context, variant: str, index: int, client, vip: str, up: dict) -> None:
    ctx.record(variant=variant, upload_index=index, src=client.name, src_region=client.site,
               dst=vip, dst_dc=up["dc"], vip=vip, backend=up["backend"], workload="upload",
               latency_ms=up["seconds"] * 1000, bytes=up["acked_bytes"], ok=up["ok"],
               error=up["error"], goodput_mbps=up["goodput_mbps"])


def finish_searches(ctx: Context, variant: str, procs, vip: str, pool: set[str],
                    timeout_s: float) -> list[dict]:
    """Collect background search clients' rows and record them; a reply from a backend
    outside the VIP's pool counts as a failure."""
    rows = []
    for client, proc in procs:
        for row in control.finish_json_lines(proc, timeout_s):
            rows.append(row)
            ok = row["ok"] and row["backend"] in pool
            ctx.record(variant=variant, t_s=row["t_s"], src=client.name,
                       src_region=client.site, dst=vip, dst_dc=row["dc"], vip=vip,
                       backend=row["backend"], workload="search",
                       latency_ms=row["latency_ms"], bytes=row["bytes"], ok=ok,
                       error=row["error"] or ("" if ok else "foreign backend"))
    return rows


def run(ctx: Context) -> list[dict]:
    plan, p = ctx.plan, ctx.params
    dc = plan.scenario.dcs[0]
    vip = str(dc.vip)
    clients = [plan.hosts_in(r.name, "client")[0] for r in plan.scenario.regions]
    summary = []
    # gre: tunnelled to the VIP's own backends; gre-xdc: to the backends of another DC only
    # (cross-DC, across the WAN). Both with the MSS clamped at the client edge (gre-mtu).
    gre_modes = [m for m in p["modes"] if m.startswith("gre")]
    other = plan.scenario.dcs[1] if len(plan.scenario.dcs) > 1 else None
    with ctx.open_net(**({"gre": True} if gre_modes else {})) as live:
        api = for_live(live)
        control.start_http_backends(live, plan, dcs=[dc.name] + (
            [other.name] if "gre-xdc" in p["modes"] and other else []))
        live.start_health_checks()
        with ctx.phase("vip-modes", len(p["modes"])) as bar:
            for mode in p["modes"]:
                pool = _set_pool(api, plan, dc, other, mode, live)
                before = reply_counters(plan, dc.name, 1)
                procs = [(c, control.start_json_lines(live, c.name, "search_json", [
                    "--host", vip, "--rate", str(p["rate"]), "--duration", str(p["duration_s"]),
                    "--seed", str(derive(ctx.seed, "client", c.name))])) for c in clients]
                uploads = []
                for u in range(p["uploads"]):
                    client = clients[u % len(clients)]
                    up = control.run_upload(live, client.name, vip, p["upload_mb"],
                                            p["upload_timeout_s"])
                    uploads.append(up)
                    record_upload(ctx, mode, u, client, vip, up)
                rows = finish_searches(ctx, mode, procs, vip, pool, p["duration_s"] + 60)
                after = reply_counters(plan, dc.name, 1)
                total, lb = after[0] - before[0], after[1] - before[1]
                oks = [r for r in rows if r["ok"]]
                good = [u["goodput_mbps"] for u in uploads if u["ok"]]
                summary.append({
                    "variant": mode, "mode": mode, "vip": vip, "requests": len(rows),
                    "ok_pct": pct(len(oks), len(rows)),
                    "latency_p50_ms": percentile([r["latency_ms"] for r in oks], 50),
                    "latency_p99_ms": percentile([r["latency_ms"] for r in oks], 99),
                    "uploads": len(uploads), "upload_ok_pct": pct(len(good), len(uploads)),
                    "upload_goodput_mbps": round(sum(good) / len(good), 2) if good else None,
                    "reply_bytes": total, "lb_reply_bytes": lb,
                    "lb_reply_bytes_share": round(min(lb / total, 1.0), 4) if total else None})
                bar.advance()
        _set_pool(api, plan, dc, other, "nat", live)
    return summary


def _set_pool(api, plan, dc, other, mode: str, live) -> set[str]:
    """Put the VIP in `mode` ("gre-xdc": gre with only `other`'s backends) with its usual
    pool otherwise; the MSS clamp is on exactly for the gre modes. Returns the pool."""
    local = [h for h in plan.hosts_in(dc.name, "backend")]
    remote = plan.hosts_in(other.name, "backend") if other else []
    want = remote if mode == "gre-xdc" else local
    if mode == "gre-xdc" and not remote:
        from topologies.system import InputError
        raise InputError("vip-modes: gre-xdc needs a scenario with two DCs")
    # gre accepts any pool: switch to it first; nat/dsr accept only local backends: fix the
    # pool first.
    if mode.startswith("gre"):
        api.change(dc.name, mode="gre")
    have = {b["ip"] for b in api.vip(dc.name)["backends"]}
    for h in want:
        if str(h.ip) not in have:
            api.add_backend(dc.name, str(h.ip))
    for ip in have - {str(h.ip) for h in want}:
        api.remove_backend(dc.name, ip)
    if not mode.startswith("gre"):
        api.change(dc.name, mode=mode)
    if live.gre is not None:
        live.gre.levers.unclamp_mss()
        if mode.startswith("gre"):
            live.gre.levers.clamp_mss()
    return {h.name for h in want}


# Reproducibility tolerances (experiments/tolerance.py; README table).
TOLERANCES = {
    "ok_pct": Tol(abs=2),
    "latency_p50_ms": Tol(abs=5, rel=0.25),
    "latency_p99_ms": Tol(why="p99 of a quick run's ~150 requests is its 2nd-largest "
                              "value; under CPU contention it varied 4x between runs"),
    "upload_goodput_mbps": Tol(rel=0.3),
    "upload_goodput_mbps[variant=gre]": Tol(
        rel=0.5, why="a quick run's one upload through the userspace decapsulator is "
                     "bimodal: 53-58 or 92-93 Mbit/s in nine runs (old and new code alike)"),
    "upload_ok_pct": Tol(abs=0, why="an upload either completes or not"),
    "lb_reply_bytes_share": Tol(abs=0.05, why="the DSR acceptance bound"),
}


EXPERIMENT = Experiment(
    name="vip-modes",
    summary="NAT vs DSR through a VIP: latency, upload goodput, reply bytes through the LB",
    claim="With DSR the load balancer only sees requests; replies go straight to the "
          "client, so (unlike NAT) reply traffic does not load it.",
    run=run,
    scenario="three-dc",
    params=(Param("modes", ["nat", "dsr", "gre", "gre-xdc"],
                  "forwarding modes to compare (gre-xdc: gre to another DC's backends)"),
            Param("rate", 20.0, "search requests per second per client", quick=10.0),
            Param("duration_s", 10.0, "seconds of search traffic per mode", quick=5.0),
            Param("uploads", 3, "uploads per mode", quick=1),
            Param("upload_mb", 20.0, "size of each upload (MB)"),
            Param("upload_timeout_s", 60.0, "an upload not done by then failed")),
    summary_columns=SUMMARY_COLUMNS,
    order=20,
    expected_s={"quick": 120, "full": 145},
    key_columns=("variant",),
    tolerances=TOLERANCES,
    renderer="experiments.report.vip:render_modes",
)
