"""dns-geo-pop: dns-geo at population scale: how many users a far public resolver costs
their nearest DC, with and without ECS.

The scenario (three-dc-pop) holds 2,100 users, each with its own address (50 per /24), the
regions' own resolvers (real unbound, forwarding the user's /24 as ECS) and one public
resolver in eu (the chapter's middleman). The authority answers geo: the nearest DC to
where it believes the user is. Per variant a share of every region's users (exactly,
seeded) uses the public resolver, with or without ECS, and the rest their region's own
resolvers; every resolver starts with an empty cache. Without ECS the authority sees the
public resolver's address (in eu) and sends its na and ap users to eu1; with ECS it sees
each user's /24 and sends them to their own nearest DC.

One summary row per variant, resolver kind (`own`, `public`, `all`) and user region (and
`all`): the share of requests sent to the user's nearest DC and latency percentiles, per
request and per user (`user_latency_*`: each user's median counted once, so heavy users do
not outweigh the rest). Latency counts from the request's scheduled start and includes the
user's DNS query (a resolver cache miss costs the WAN round trip to the authority).
"""
from __future__ import annotations

import dataclasses
import statistics

from experiments import dnsnet
from experiments.base import Context, Experiment, Param
from experiments.stats import percentile
from experiments.tolerance import Tol
from lab import unbound
from lab.dns_config import gslb_config
from topologies import population
from topologies.system import InputError

SUMMARY_COLUMNS = ("variant", "public_share", "ecs", "resolver_kind", "user_region", "users",
                   "requests", "failed", "dc_chosen_pct_nearest", "dc_chosen_pct_public_site",
                   "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
                   "user_latency_p50_ms", "user_latency_p90_ms", "nearest_dc", "dcs_chosen")


def variants(shares: list[float]) -> list[tuple[str, float, bool]]:
    """(name, share, ecs): share 0 once (nobody behind the public resolver: ECS moot), every
    other share without and with ECS."""
    out = []
    for share in shares:
        if share == 0:
            out.append(("share0", 0.0, False))
        else:
            out += [(f"share{share:g}-noecs", share, False), (f"share{share:g}-ecs", share, True)]
    return out


def summarize(rows: list[dict], config, to_dc: dict[str, str], public_name: str,
              public_site: str, head: dict) -> list[dict]:
    """Rows grouped by resolver kind x user region, with `all` for each."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        kind = "public" if row["resolver"] == public_name else "own"
        region = row["user_region"]
        for key in ((kind, region), (kind, "all"), ("all", region), ("all", "all")):
            groups.setdefault(key, []).append(row)
    public_dc = config.nearest_dc(public_site)
    out = []
    for (kind, region), group in sorted(groups.items()):
        chosen = [to_dc.get(r["dst"], "") for r in group if r["dst"]]
        nearest = [config.nearest_dc(r["user_region"]) for r in group if r["dst"]]
        ok_lat = [r["latency_ms"] for r in group if r["ok"]]
        per_user: dict[str, list[float]] = {}
        for r in group:
            if r["ok"]:
                per_user.setdefault(r["user"], []).append(r["latency_ms"])
        medians = [statistics.median(v) for v in per_user.values()]
        counts = {dc: chosen.count(dc) for dc in sorted(set(chosen) - {""})}
        hits = sum(c == n for c, n in zip(chosen, nearest))
        out.append({
            **head, "resolver_kind": kind, "user_region": region,
            "users": len({r["user"] for r in group}), "requests": len(group),
            "failed": sum(not r["ok"] for r in group),
            "dc_chosen_pct_nearest": round(100 * hits / len(chosen), 1) if chosen else None,
            "dc_chosen_pct_public_site": round(100 * chosen.count(public_dc) / len(chosen), 1)
            if chosen else None,
            "latency_p50_ms": percentile(ok_lat, 50), "latency_p90_ms": percentile(ok_lat, 90),
            "latency_p99_ms": percentile(ok_lat, 99),
            "user_latency_p50_ms": percentile(medians, 50),
            "user_latency_p90_ms": percentile(medians, 90),
            "nearest_dc": config.nearest_dc(region) if region != "all" else "",
            "dcs_chosen": " ".join(f"{dc}:{n}" for dc, n in counts.items())})
    return out


def run(ctx: Context) -> list[dict]:
    plan, p = ctx.plan, ctx.params
    scen = plan.scenario
    dnsnet.population_scenario(scen, "dns-geo-pop", public=True)
    public = population.public_resolver(scen)
    bad = [s for s in p["public_shares"]
           if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1]
    if bad:
        raise InputError(f"public_shares: {bad[0]} is not a share between 0 and 1")
    config = gslb_config(plan, policy="geo", ttl_s=int(p["ttl_s"]))
    to_dc = dnsnet.dc_of_address(config)
    k = int(p["resolvers_per_region"])
    own = {r.name: population.region_resolvers(r)[:max(1, k)] for r in scen.populations}
    users = population.with_behaviour(population.make_users(scen, ctx.seed), "random")
    todo = variants(list(p["public_shares"]))
    summary, seen = [], {}
    with ctx.open_net(controller_apps=dnsnet.controller_apps(plan)) as live:
        _, authority = dnsnet.start_population_service(live, plan, config, ctx.work_dir,
                                                       ctx.seed)
        with ctx.phase("dns-geo-pop: variants", len(todo)) as bar:
            for variant, share, ecs in todo:
                pub = dataclasses.replace(public, ecs=ecs)
                specs = [r for pool in own.values() for r in pool] + ([pub] if share else [])
                with unbound.instances(live, plan, specs, authority.ip, ctx.work_dir):
                    dealt = population.with_public_share(users, own, pub, share, ctx.seed)
                    t0, rows = dnsnet.run_population(live, dealt, p["duration_s"],
                                                     ctx.work_dir, rate=p["rate"] or None,
                                                     seed=ctx.seed)
                dnsnet.record_population(ctx, rows, t0, variant, ttl_s=p["ttl_s"],
                                         public_share=share, ecs=ecs)
                dnsnet.check_addresses(ctx, variant, rows, seen)
                summary += summarize(rows, config, to_dc, public.name, public.region,
                                     {"variant": variant, "public_share": share, "ecs": ecs})
                bar.advance(1)
        ctx.extra_metadata["population"] = {
            "users": len(users), "resolvers_per_region": {r: len(v) for r, v in own.items()},
            "public_resolver": {"name": public.name, "site": public.region,
                                "ip": str(public.ip)},
            "local_routes": dict(live.population_blocks), "addresses_seen": seen}
    for row in summary:
        if row["ecs"] and row["resolver_kind"] == "public" and row["user_region"] == "all" \
                and (row["dc_chosen_pct_nearest"] or 0) < 95:
            ctx.warn(f"{row['variant']}: users behind the public resolver with ECS got their "
                     f"nearest DC only {row['dc_chosen_pct_nearest']}% of the time")
    return summary


TOLERANCES = {
    "dc_chosen_pct_nearest": Tol(abs=5, why="hundreds of requests per group; the answer is "
                                 "deterministic given the resolver and ECS"),
    "dc_chosen_pct_public_site": Tol(abs=5),
    "latency_p50_ms": Tol(abs=5, rel=0.2),
    "latency_p90_ms": Tol(abs=10, rel=0.3),
    "user_latency_p50_ms": Tol(abs=5, rel=0.2),
}


EXPERIMENT = Experiment(
    name="dns-geo-pop",
    summary="dns-geo with 2,100 users: the share behind a far public resolver, ECS off/on",
    claim="A geo authority sees the resolver, not the user: the users behind a far public "
          "resolver are sent to the resolver's nearest DC, so the share of users who reach "
          "their own nearest DC falls with the share behind it, unless the resolver forwards "
          "the user's subnet (ECS), and then almost all do.",
    run=run,
    scenario="three-dc-pop",
    params=(Param("public_shares", [0.0, 0.25, 0.5], "shares of users behind the public "
                  "resolver", quick=[0.0, 0.5]),
            Param("resolvers_per_region", 10, "the regions' own resolvers used", quick=4),
            Param("duration_s", 20.0, "seconds of traffic per variant", quick=8.0),
            Param("rate", 0.0, "requests per second per user, open loop (0: each "
                  "user's own request process from the scenario)"),
            Param("ttl_s", 30, "TTL of the answers")),
    summary_columns=SUMMARY_COLUMNS,
    order=62,
    expected_s={"quick": 55, "full": 170},
    key_columns=("variant", "resolver_kind", "user_region"),
    tolerances=TOLERANCES,
    renderer="experiments.report.dnspop:render_geo_pop",
)
