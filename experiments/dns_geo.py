"""dns-geo: geo answers need the user's location; behind a distant shared resolver only ECS
gives it.

Every client resolves www.lblab.test through its resolver (real unbound) before each search
request and sends it to the address it got. Most clients use the resolver of their own
region; the scenario's `dns.shared_resolver` sends some clients to a resolver in another
region (the chapter's middleman). Three variants, each with fresh resolver caches:
  all        every DC's address, clients pick at random (location ignored)
  geo-noecs  nearest DC to the *resolver* (unbound without the subnetcache module)
  geo-ecs    nearest DC to the *client* (unbound forwards the client's /24 as ECS)
Expected: clients behind a nearby resolver get their nearest DC with geo either way; clients
behind the distant one get the resolver's nearest DC without ECS and their own with it, and
their median latency drops accordingly.
"""
from __future__ import annotations

from experiments import dnsnet
from experiments.base import Context, Experiment, Param
from experiments.tolerance import Tol
from experiments.stats import percentile
from lab import unbound
from lab.dns_config import gslb_config
from topologies.system import InputError

SUMMARY_COLUMNS = ("variant", "policy", "ecs", "client_region", "resolver",
                   "resolver_region", "clients", "dc_chosen_pct_nearest", "latency_p50_ms",
                   "latency_p90_ms", "requests", "failed", "nearest_dc", "dcs_chosen")
VARIANTS = (("all", "all", True), ("geo-noecs", "geo", False), ("geo-ecs", "geo", True))


def run(ctx: Context) -> list[dict]:
    plan = ctx.plan
    if plan.scenario.dns.shared_resolver is None:
        raise InputError(f"dns-geo needs a distant shared resolver: scenario "
                         f"{plan.scenario.name} has no dns.shared_resolver")
    duration, rate = ctx.params["duration_s"], ctx.params["rate"]
    config = gslb_config(plan, ttl_s=ctx.params["ttl_s"])
    to_dc = dnsnet.dc_of_address(config)
    summary = []
    with ctx.open_net(controller_apps=dnsnet.controller_apps(plan)) as live:
        svc = dnsnet.start_dns_service(live, plan, config, ctx.work_dir,
                                        seed=ctx.seed)
        with ctx.phase("dns-geo: variants", len(VARIANTS)) as bar:
            for variant, policy, ecs in VARIANTS:
                svc.authority.set_policy(policy)
                unbound.stop_resolvers(svc.resolvers)  # fresh caches, this variant's ECS
                svc.resolvers = unbound.start_resolvers(live, plan, svc.authority.ip,
                                                       ctx.work_dir, ecs=ecs)
                jobs = dnsnet.default_jobs(plan, svc.resolvers, rate, "random", ctx.seed)
                t0, rows = dnsnet.run_clients(live, jobs, duration, ctx.work_dir)
                dnsnet.record_rows(ctx, rows, t0, plan, variant, policy=policy, ecs=ecs)
                summary += summarize(plan, config, to_dc, rows, variant, policy, ecs)
                bar.advance(1)
    far = [r for r in summary if r["resolver_region"] != r["client_region"]]
    for row in far:
        if row["variant"] == "geo-ecs" and (row["dc_chosen_pct_nearest"] or 0) < 90:
            ctx.warn(f"geo with ECS sent clients of {row['client_region']} behind "
                     f"{row['resolver']} to their nearest DC only "
                     f"{row['dc_chosen_pct_nearest']}% of the time")
    return summary


def summarize(plan, config, to_dc, rows, variant, policy, ecs) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["client_region"], row["resolver"]), []).append(row)
    out = []
    for (region, resolver), group in sorted(groups.items()):
        nearest = config.nearest_dc(region)
        chosen = [to_dc.get(r["dst"], "") for r in group if r["dst"]]
        ok_lat = [r["latency_ms"] for r in group if r["ok"]]
        counts = {dc: chosen.count(dc) for dc in sorted(set(chosen))}
        out.append({
            "variant": variant, "policy": policy, "ecs": ecs, "client_region": region,
            "resolver": resolver, "resolver_region": plan.host(resolver).site,
            "clients": len({r["client"] for r in group}),
            "dc_chosen_pct_nearest": round(100 * chosen.count(nearest) / len(chosen), 1)
            if chosen else None,
            "latency_p50_ms": percentile(ok_lat, 50),
            "latency_p90_ms": percentile(ok_lat, 90),
            "requests": len(group), "failed": sum(not r["ok"] for r in group),
            "nearest_dc": nearest,
            "dcs_chosen": " ".join(f"{dc}:{n}" for dc, n in counts.items())})
    return out


# Reproducibility tolerances (experiments/tolerance.py; README table).
TOLERANCES = {
    "dc_chosen_pct_nearest": Tol(abs=10),
    "latency_p50_ms": Tol(abs=5, rel=0.2),
    "latency_p90_ms": Tol(abs=10, rel=0.3),
}


EXPERIMENT = Experiment(
    name="dns-geo",
    summary="geo DNS behind nearby and distant resolvers: policy all vs geo without/with ECS",
    claim="A geo authority sees the resolver, not the user: clients behind a distant shared "
          "resolver get the resolver's nearest DC unless the resolver forwards EDNS Client "
          "Subnet, and then their latency drops to their own nearest DC's.",
    run=run,
    params=(Param("duration_s", 20.0, "seconds of traffic per variant", quick=8.0),
            Param("rate", 8.0, "search requests per second per client", quick=6.0),
            Param("ttl_s", 30, "TTL of the answers")),
    summary_columns=SUMMARY_COLUMNS,
    order=60,
    expected_s={"quick": 45, "full": 80},
    key_columns=("variant", "client_region", "resolver"),
    tolerances=TOLERANCES,
    renderer="experiments.report.dns:render_geo",
)
