"""dns-rr-pop: dns-rr at population scale: the herd effect against the number of resolvers
and how evenly users are spread over them.

The scenario (three-dc-pop) holds 2,100 users, each with its own address (50 per /24) on its
region's population host, and 102 real unbound resolvers (34 per region, each its own
process, address and cache; `rrset-roundrobin: no`, as dns-rr). The authority answers every
DC's VIP (policy all), rotating the order per query. Per variant every user has one stub
behaviour (`random` or `first`, experiments/workloads/population.py) and the same users are
dealt over the first N resolvers (taken region by region in turn), evenly (`uniform`) or by
Zipf (resolver k gets a share proportional to 1/k^s: a few large ISP resolvers serve most
users). Every resolver starts with an empty cache. Each user sends Poisson requests; each
request resolves through the user's resolver, from the user's address, and goes to the
address the behaviour picks.

The herd, as one number per variant: `share_max_mean_over_time`, the busiest DC's share in
the worst time bin divided by the mean share 1/N_DC. Behind one resolver, `first` users all
take the one cached first record for a whole TTL (N_DC = 3 gives 3.0); spread over more
resolvers, whose caches expire at different times and hold different orders, their choices
average out, so the number shrinks towards 1, slower when a few resolvers hold most users.
`random` users spread at any resolver count: near 1 (sampling noise only).
"""
from __future__ import annotations

import time

from experiments import dnsnet
from experiments.base import Context, Experiment, Param
from experiments.dns_rr import by_share_rank, shares
from experiments.tolerance import Tol
from lab import unbound
from lab.dns_config import gslb_config
from topologies import population

SUMMARY_COLUMNS = ("variant", "pick", "ttl_s", "resolvers", "resolver_skew", "users", "dc",
                   "share", "share_stddev_over_time", "share_max_mean_over_time",
                   "requests", "failed", "bins", "bin_s", "resolver_roundrobin")


def interleaved(scenario) -> list:
    """The population resolvers, taken region by region in turn (na1, eu1, ap1, na2, ...),
    so that N of them are spread over the regions; the public resolver is not among them."""
    per_region = [population.region_resolvers(r) for r in scenario.populations]
    out = []
    for k in range(max(len(r) for r in per_region)):
        out += [r[k] for r in per_region if k < len(r)]
    return out


def variants(p: dict) -> list[tuple[str, str, int]]:
    """(pick, spread, resolvers) in run order: every pick x resolver count, uniform; then
    the skewed spread at the largest counts (`zipf_counts`), for the picks in `zipf_picks`."""
    out = [(pick, "uniform", n) for pick in p["picks"] for n in p["resolver_counts"]]
    out += [(pick, "zipf", n) for pick in p["picks"] if pick in p.get("zipf_picks", p["picks"])
            for n in p["zipf_counts"]]
    return out


def max_mean_over_time(rows: list[dict], t0: float, to_dc: dict[str, str], n_dcs: int,
                       bin_s: float, duration_s: float, min_per_bin: int = 20) -> float | None:
    """The busiest DC's share in the worst time bin, over the mean share 1/n_dcs (bins with
    fewer than `min_per_bin` requests are left out: their shares are noise)."""
    nbins = max(1, int(duration_s // bin_s))
    per_bin: list[dict[str, int]] = [{} for _ in range(nbins)]
    for row in rows:
        dc = to_dc.get(row["dst"], "")
        b = int((row["epoch"] - t0) // bin_s)
        if dc and 0 <= b < nbins:
            per_bin[b][dc] = per_bin[b].get(dc, 0) + 1
    worst = [max(b.values()) / sum(b.values()) for b in per_bin
             if sum(b.values()) >= min_per_bin]
    return round(max(worst) * n_dcs, 4) if worst else None


def run(ctx: Context) -> list[dict]:
    plan, p = ctx.plan, ctx.params
    scen = plan.scenario
    dnsnet.population_scenario(scen, "dns-rr-pop")
    config = gslb_config(plan, policy="all", ttl_s=int(p["ttl_s"]))
    to_dc = dnsnet.dc_of_address(config)
    pool = interleaved(scen)
    users = population.make_users(scen, ctx.seed)
    todo = []
    for pick, spread, n in variants(p):
        if not 1 <= n <= len(pool):
            ctx.warn(f"{n} resolvers asked, the scenario has {len(pool)}: variant skipped")
            continue
        todo.append((pick, spread, n))
    dcs = [d.name for d in config.dcs]
    summary = []
    with ctx.open_net(controller_apps=dnsnet.controller_apps(plan)) as live:
        _, authority = dnsnet.start_population_service(live, plan, config, ctx.work_dir,
                                                       ctx.seed)
        started, memory, seen = [], {}, {}
        largest = max((n for _, _, n in todo), default=0)
        with ctx.phase("dns-rr-pop: variants", len(todo)) as bar:
            for pick, spread, n in todo:
                skew = "uniform" if spread == "uniform" else f"zipf{p['zipf_s']:g}"
                variant = f"{pick}-{skew}-r{n}"
                t_start = time.monotonic()
                with unbound.instances(live, plan, pool[:n], authority.ip, ctx.work_dir,
                                       roundrobin=p["resolver_roundrobin"]) as resolvers:
                    started.append({"resolvers": n,
                                    "start_s": round(time.monotonic() - t_start, 2)})
                    if n == largest:
                        memory = dnsnet.resolver_memory_mb(resolvers)
                    dealt = population.respread(population.with_behaviour(users, pick),
                                                pool[:n], spread, p["zipf_s"], ctx.seed)
                    t0, rows = dnsnet.run_population(live, dealt, p["duration_s"],
                                                     ctx.work_dir, rate=p["rate"] or None,
                                                     seed=ctx.seed)
                dnsnet.record_population(ctx, rows, t0, variant, ttl_s=p["ttl_s"],
                                         resolvers=n, pick=pick, resolver_skew=skew)
                dnsnet.check_addresses(ctx, variant, rows, seen)
                herd = max_mean_over_time(rows, t0, to_dc, len(dcs), p["bin_s"],
                                          p["duration_s"])
                summary += [{**row, "resolver_skew": skew, "users": len(users),
                             "share_max_mean_over_time": herd}
                            for row in shares(rows, t0, to_dc, dcs, p["bin_s"],
                                              p["duration_s"],
                                              {"variant": variant, "pick": pick,
                                               "ttl_s": p["ttl_s"], "resolvers": n,
                                               "resolver_roundrobin":
                                                   p["resolver_roundrobin"]})]
                bar.advance(1)
        ctx.extra_metadata["population"] = {
            "users": len(users), "resolvers_in_scenario": len(pool),
            "users_per_subnet": {r.name: r.population.users_per_subnet
                                 for r in scen.populations},
            "local_routes": dict(live.population_blocks),
            "resolver_start": started, "resolver_memory": memory,
            "addresses_seen": seen}
    return summary


TOLERANCES = {
    "share": Tol(abs=0.1, why="random picks: ~3 binomial sd; first picks: herd timing"),
    "share[pick=first]": Tol(abs=0.35, why="compared by rank (busiest DC first)"),
    "share_stddev_over_time": Tol(abs=0.1),
    "share_stddev_over_time[pick=first]": Tol(abs=0.35, why="herd switches per TTL"),
    "share_max_mean_over_time": Tol(abs=0.5, why="a maximum over 4-15 bins; behind one "
                                    "resolver it is 3 or near it, whatever the timing"),
}


EXPERIMENT = Experiment(
    name="dns-rr-pop",
    summary="dns-rr with 2,100 users behind 1-100 real resolvers: the herd vs resolvers",
    claim="Caching resolvers make whole populations land together: users that take the "
          "first record herd onto one DC per resolver and TTL, so the imbalance is largest "
          "behind one resolver and shrinks as users spread over more resolvers (less so "
          "when a few resolvers serve most of them); users that pick at random stay "
          "balanced at any resolver count.",
    run=run,
    scenario="three-dc-pop",
    params=(Param("picks", ["random", "first"], "user address choice: random, first"),
            Param("resolver_counts", [1, 10, 100], "resolvers the users are dealt over "
                  "(uniform)"),
            Param("zipf_counts", [100], "resolver counts also run with a Zipf spread"),
            Param("zipf_picks", ["random", "first"], "picks also run with the Zipf spread",
                  quick=["first"]),
            Param("zipf_s", 1.0, "Zipf exponent of the skewed spread"),
            Param("ttl_s", 5, "TTL of the answers, seconds"),
            Param("duration_s", 30.0, "seconds of traffic per variant", quick=6.0),
            Param("rate", 0.0, "requests per second per user, open loop (0: each "
                  "user's own request process from the scenario)"),
            Param("bin_s", 2.0, "time bin for the share over time"),
            Param("resolver_roundrobin", False, "unbound rrset-roundrobin (rotate cached "
                  "answers per reply)")),
    summary_columns=SUMMARY_COLUMNS,
    order=55,
    expected_s={"quick": 95, "full": 330},
    key_columns=("variant", "share_rank"),
    tolerances=TOLERANCES,
    renderer="experiments.report.dnspop:render_rr_pop",
    comparable=by_share_rank,
)
