"""dns-rr: multi-A round robin behind caching resolvers, and the herd effect.

The authority answers every DC's address (policy all), rotating the order per query. Each
client resolves through a real unbound before every request and picks an address:
  random  one of the records at random (what the chapter recommends clients do);
  first   the first record, as many stub resolvers and getaddrinfo's sorting effectively do.
The resolvers cache the answer for the TTL and serve it in the cached order
(`rrset-roundrobin: no`, param resolver_roundrobin), so with `first` every client behind one
resolver goes to the same DC until the TTL runs out: the herd. Per variant (pick, TTL,
number of resolvers the clients are spread over) the summary gives each DC's share of
requests over the run and the standard deviation of its share across time bins.
Expected: random -> each share near 1/N, small stddev (sampling noise only), whatever the
TTL; first -> shares far from 1/N and stddev near its 0/1 maximum with one resolver,
smoothing as resolvers are added and (over a long run) as the TTL shrinks.
"""
from __future__ import annotations

import statistics

from experiments import dnsnet
from experiments.base import Context, Experiment, Param
from experiments.tolerance import Tol
from experiments.seeds import derive
from lab import unbound
from lab.dns_config import gslb_config

SUMMARY_COLUMNS = ("variant", "pick", "ttl_s", "resolvers", "dc", "share",
                   "share_stddev_over_time", "requests", "failed", "bins", "bin_s",
                   "resolver_roundrobin")


def run(ctx: Context) -> list[dict]:
    plan, p = ctx.plan, ctx.params
    config = gslb_config(plan, policy="all")
    to_dc = dnsnet.dc_of_address(config)
    resolver_hosts = [h.name for h in plan.by_role("resolver")]
    counts = [n for n in p["resolver_counts"] if 1 <= n <= len(resolver_hosts)]
    if len(counts) != len(p["resolver_counts"]):
        ctx.warn(f"only {len(resolver_hosts)} resolver hosts: resolver counts above that "
                 "are skipped")
    variants = [(pick, ttl, n) for pick in p["picks"] for ttl in p["ttls"] for n in counts]
    summary = []
    with ctx.open_net(controller_apps=dnsnet.controller_apps(plan)) as live:
        svc = dnsnet.start_dns_service(live, plan, config, ctx.work_dir,
                                        seed=ctx.seed)
        with ctx.phase("dns-rr: variants", len(variants)) as bar:
            for pick, ttl, n in variants:
                variant = f"{pick}-ttl{ttl}-r{n}"
                svc.authority.set_ttl(int(ttl))
                unbound.stop_resolvers(svc.resolvers)
                svc.resolvers = unbound.start_resolvers(
                    live, plan, svc.authority.ip, ctx.work_dir,
                    roundrobin=p["resolver_roundrobin"], hosts=resolver_hosts[:n])
                used = [svc.resolvers[h] for h in resolver_hosts[:n]]
                jobs = [dnsnet.ClientJob(c.name, used[i % n].ip, p["rate"], pick,
                                         derive(ctx.seed, "client", c.name), {"resolver": used[i % n].host,
                                                        "client_region": c.site})
                        for i, c in enumerate(plan.by_role("client"))]
                t0, rows = dnsnet.run_clients(live, jobs, p["duration_s"], ctx.work_dir)
                dnsnet.record_rows(ctx, rows, t0, plan, variant, ttl_s=ttl, resolvers=n,
                                   pick=pick)
                summary += shares(rows, t0, to_dc, [d.name for d in config.dcs],
                                  p["bin_s"], p["duration_s"],
                                  {"variant": variant, "pick": pick, "ttl_s": ttl,
                                   "resolvers": n,
                                   "resolver_roundrobin": p["resolver_roundrobin"]})
                bar.advance(1)
    return summary


def shares(rows: list[dict], t0: float, to_dc: dict[str, str], dcs: list[str], bin_s: float,
           duration_s: float, labels: dict) -> list[dict]:
    """Per DC: share of all requests (by the address chosen) and its stddev over bins."""
    nbins = max(1, int(duration_s // bin_s))
    per_bin = [[] for _ in range(nbins)]
    chosen = []
    for row in rows:
        dc = to_dc.get(row["dst"], "")
        chosen.append(dc)
        b = int((row["epoch"] - t0) // bin_s)
        if 0 <= b < nbins:
            per_bin[b].append(dc)
    out = []
    for dc in dcs:
        bin_shares = [b.count(dc) / len(b) for b in per_bin if b]
        out.append({**labels, "dc": dc,
                    "share": round(chosen.count(dc) / len(chosen), 4) if chosen else None,
                    "share_stddev_over_time": round(statistics.pstdev(bin_shares), 4)
                    if len(bin_shares) > 1 else None,
                    "requests": chosen.count(dc),
                    "failed": sum(1 for r, c in zip(rows, chosen) if c == dc and not r["ok"]),
                    "bins": len(bin_shares), "bin_s": bin_s})
    return out


def by_share_rank(summary):
    """The summary as `lblab compare` matches it: rows by rank of share within a variant
    (busiest DC first, `share_rank`), not by DC name. Which DC a resolver's herd lands on
    depends on which answer it cached first (timing), while how unevenly the load falls is
    what the experiment shows."""
    if "share" not in summary.columns or "variant" not in summary.columns:
        return summary
    summary = summary.copy()
    rank = summary.groupby("variant")["share"].rank(method="first", ascending=False)
    summary["share_rank"] = rank.astype(int)
    return summary


# Reproducibility tolerances (experiments/tolerance.py; README table).
TOLERANCES = {
    "share": Tol(abs=0.1, why="random picks: ~3 binomial sd; first picks: herd timing"),
    "share[pick=first]": Tol(abs=0.35, why="compared by rank (busiest DC first): how "
                                           "many TTL periods a herd holds varies"),
    "share_stddev_over_time": Tol(abs=0.1),
    "share_stddev_over_time[pick=first]": Tol(
        abs=0.35, why="a quick run holds few TTL periods: one herd switch more or less "
                      "moves it by ~0.3 (0.31 seen between two same-seed runs)"),
}


EXPERIMENT = Experiment(
    name="dns-rr",
    summary="multi-A round robin behind caching resolvers: per-DC share over time (herd)",
    claim="DNS round robin balances only as well as clients spread their choices: with a "
          "random pick among all records the DCs share load evenly at any TTL, but clients "
          "that take the first record herd onto one DC per resolver for a whole TTL.",
    run=run,
    params=(Param("picks", ["random", "first"], "client address choice: random, first"),
            Param("ttls", [5, 30, 60], "TTLs of the answers, seconds", quick=[5, 30]),
            Param("resolver_counts", [1, 3], "numbers of resolvers the clients are spread "
                  "over (quick: 1; dns-rr-pop spreads 2,100 users over 1-100)", quick=[1]),
            Param("duration_s", 60.0, "seconds of traffic per variant", quick=10.0),
            Param("rate", 5.0, "requests per second per client", quick=4.0),
            Param("bin_s", 2.0, "time bin for the share over time"),
            Param("resolver_roundrobin", False, "unbound rrset-roundrobin (rotate cached "
                  "answers per reply)")),
    summary_columns=SUMMARY_COLUMNS,
    order=50,
    expected_s={"quick": 60, "full": 756},
    key_columns=("variant", "share_rank"),
    tolerances=TOLERANCES,
    renderer="experiments.report.dns:render_rr",
    comparable=by_share_rank,
)
