"""global-overload: demand ramps past what the DCs can serve; where it goes and what users
get, per global policy.

The scenario (three-dc-pop: 2,100 users, each its own address, behind their regions' own
real resolvers, ECS on) with every DC's capacity set to `capacity_rps` and enforced by its
backends (topologies/capacity.py). One population run per variant, its open-loop search
rate stepping through `steps` (fractions of the total capacity, `step_s` each, no gap,
after `warmup_s` at the first step's rate that the summary leaves out: the resolvers'
first answers were given before the authority saw any load),
split over the regions by `demand`: `hot` gives the first region `hot_share` of it (so that
region alone exceeds its nearest DC from the first step on), `even` splits it equally.
Policies (the authority's, for www.lblab.test, TTL `ttl_s`, fresh resolver caches per
variant):
  geo             the nearest DC that is not full (a full DC leaves the answers whole);
  capacity-spill  nearest first, the excess of a filling DC spilled to the next-nearest;
                  when every DC is full, the least loaded;
  capacity-shed   the same below total capacity; when every DC is full each region keeps
                  its nearest DC, whose backends refuse the excess at once.
geo and capacity-spill run on backends that queue beyond capacity (`overload: queue`, the
latency grows), capacity-shed on backends that shed (`overload: shed`: 503 at once).
Measured per step and DC: the demand that reached the DC against its capacity (the
backends' own counters through the authority's load feed, twice a second, each a 1 s
window: max and mean; at tens of requests per second a 1 s window's Poisson noise alone is
+-20%, so the readings judge the mean and the max is kept for the record),
the share of requests it got, the requests served per second, how many were refused and
how fast (the HTTP exchange of a refusal, without the user's DNS query, and what it waited
beyond its two round trips to the DC: the backend's own delay), latency percentiles of the
answered ones, and the answers' flaps (the authority's transitions of the DC in and out of
the answers).
"""
from __future__ import annotations

import dataclasses
import time

from experiments import dnsnet
from experiments.base import Context, Experiment, Param
from experiments.stats import percentile
from experiments.tolerance import Tol
from lab import unbound
from lab.dns_config import gslb_config
from topologies import population
from topologies.plan import build_plan
from topologies.system import InputError

SUMMARY_COLUMNS = ("variant", "policy", "demand", "backend_overload", "step", "step_start_s",
                   "offered_rps", "capacity_rps_total", "requests", "served_rps", "ok_pct",
                   "served_ok_pct", "refused_pct", "refused_p99_ms", "refused_wait_p99_ms",
                   "p50_ms", "p99_ms",
                   "dc", "dc_share", "dc_utilisation_max", "dc_utilisation_mean",
                   "answer_flaps")
POLICIES = {   # name -> (authority policy, overload when every DC is full, backends' mode)
    "geo": ("geo", "spill", "queue"),
    "capacity-spill": ("capacity", "spill", "queue"),
    "capacity-shed": ("capacity", "shed", "shed"),
}
DEMANDS = ("hot", "even")
FEED_LAG_S = 1.0      # the load feed's window: a step's first second still shows the last


def parse_variants(texts) -> list[tuple[str, str]]:
    """'policy:demand' -> (policy, demand); a bad one is a one-line InputError."""
    out = []
    for text in texts:
        policy, _, demand = str(text).partition(":")
        if policy not in POLICIES or demand not in DEMANDS:
            raise InputError(f"variants: '{text}' is not policy:demand with policy one of "
                             f"{', '.join(POLICIES)} and demand one of {', '.join(DEMANDS)}")
        out.append((policy, demand))
    return out


def region_weights(regions: list[str], demand: str, hot_share: float) -> dict[str, float]:
    if demand == "even" or len(regions) == 1:
        return {r: 1 / len(regions) for r in regions}
    rest = (1 - hot_share) / (len(regions) - 1)
    return {r: hot_share if i == 0 else rest for i, r in enumerate(regions)}


def with_demand(users: list, total_rps: float, weights: dict[str, float]) -> list:
    """Every user open loop, its region's share of `total_rps` split evenly over its users."""
    per_region = {r: sum(1 for u in users if u.region == r) for r in weights}
    return [dataclasses.replace(u, think_time_s=0.0, workload="search",
                                rate_rps=total_rps * weights[u.region] / per_region[u.region])
            for u in users]


def capacity_plan(plan, capacity_rps: float, mode: str, queue_s: float):
    """The plan with every DC at `capacity_rps`, enforced by its backends in `mode`."""
    scen = plan.scenario
    dcs = tuple(dataclasses.replace(d, capacity_rps=capacity_rps, overload=mode,
                                    overload_queue_s=queue_s) for d in scen.dcs)
    return build_plan(dataclasses.replace(scen, dcs=dcs))


def step_rows(rows: list[dict], samples: list[tuple], flips: list, t0: float, steps: list,
              step_s: float, capacity: float, dcs: list[str], to_dc: dict,
              one_way_ms: dict | None = None) -> list[dict]:
    """One summary row per (step, DC) of one variant (rows: its requests; samples: (epoch,
    dc, demand rps) from the load feed; flips: epochs of the DC's answer transitions;
    one_way_ms: (region, dc) -> the path's one-way delay, for how long a refusal waited
    beyond its two round trips: connect, then request and 503)."""
    out = []
    for k, frac in enumerate(steps):
        lo, hi = t0 + k * step_s, t0 + (k + 1) * step_s
        part = [r for r in rows if lo <= r["epoch"] < hi]
        ok = [r for r in part if r["ok"]]
        refused = [r for r in part if str(r["status"]) == "503"]
        # how fast a refusal came back: the HTTP exchange, without the user's DNS query
        refused_ms = [r["latency_ms"] - (r.get("resolve_ms") or 0.0) for r in refused]
        waited = [ms - 4 * (one_way_ms or {}).get((r.get("user_region"), r.get("dc")), 0.0)
                  for ms, r in zip(refused_ms, refused)]
        not_refused = [r for r in part if str(r["status"]) != "503"]
        lat = [r["latency_ms"] for r in ok]
        base = {"step": k, "step_start_s": round(k * step_s, 3),
                "offered_rps": round(frac * capacity * len(dcs), 2),
                "capacity_rps_total": round(capacity * len(dcs), 2), "requests": len(part),
                "served_rps": round(len(ok) / step_s, 2),
                "ok_pct": round(100 * len(ok) / len(part), 2) if part else None,
                "served_ok_pct": round(100 * sum(r["ok"] for r in not_refused)
                                       / len(not_refused), 2) if not_refused else None,
                "refused_pct": round(100 * len(refused) / len(part), 2) if part else None,
                "refused_p99_ms": percentile(refused_ms, 99),
                "refused_wait_p99_ms": percentile(waited, 99),
                "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}
        for dc in dcs:
            util = [rps / capacity for t, name, rps in samples
                    if name == dc and lo + FEED_LAG_S <= t < hi + 0.5]
            got = sum(1 for r in part if to_dc.get(r["dst"]) == dc)
            out.append({**base, "dc": dc,
                        "dc_share": round(got / len(part), 4) if part else None,
                        "dc_utilisation_max": round(max(util), 3) if util else None,
                        "dc_utilisation_mean": round(sum(util) / len(util), 3)
                        if util else None,
                        "answer_flaps": sum(1 for t, name in flips
                                            if name == dc and lo <= t < hi)})
    return out


def run(ctx: Context) -> list[dict]:
    p = ctx.params
    scen = ctx.plan.scenario
    dnsnet.population_scenario(scen, "global-overload")
    todo = parse_variants(p["variants"])
    steps = [float(x) for x in p["steps"]]
    if not steps or any(x <= 0 for x in steps):
        raise InputError("steps: give one or more fractions of the total capacity, each > 0")
    step_s, capacity, ttl = float(p["step_s"]), float(p["capacity_rps"]), int(p["ttl_s"])
    warmup = max(0.0, float(p["warmup_s"]))
    k = max(1, int(p["resolvers_per_region"]))
    # every user on its own region's first k resolvers, evenly
    own, users = population.on_own_resolvers(scen, k, ctx.seed)
    specs = [r for pool in own.values() for r in pool]
    regions = [r.name for r in scen.populations]
    duration = step_s * len(steps)
    dcs_all = [d.name for d in scen.dcs]
    summary, flaps_all = [], {}
    modes = list(dict.fromkeys(POLICIES[policy][2] for policy, _ in todo))
    with ctx.phase("global-overload: variants", len(todo)) as bar:
        for mode in modes:   # one network per backend mode: backends keep their limits
            plan = capacity_plan(ctx.plan, capacity, mode, float(p["queue_s"]))
            config = gslb_config(plan, policy="geo", ttl_s=ttl)
            to_dc = dnsnet.dc_of_address(config)
            dcs = [d.name for d in config.dcs]
            with ctx.open_net(plan_override=plan,
                              controller_apps=dnsnet.controller_apps(plan)) as live:
                _, authority = dnsnet.start_population_service(live, plan, config,
                                                               ctx.work_dir, ctx.seed)
                for policy, demand in [v for v in todo if POLICIES[v[0]][2] == mode]:
                    variant = f"{policy}-{demand}"
                    name, overload, _ = POLICIES[policy]
                    authority.set_policy(name, overload)
                    authority.set_ttl(ttl)
                    load = with_demand(users, capacity * len(dcs), region_weights(
                        regions, demand, float(p["hot_share"])))
                    samples: list = []
                    with unbound.instances(live, plan, specs, authority.ip, ctx.work_dir):
                        start_at, running = dnsnet.start_population(
                            live, load, warmup + duration, ctx.work_dir, seed=ctx.seed,
                            segments=[(warmup, steps[0])] * (warmup > 0)
                            + [(step_s, f) for f in steps])
                        t0 = start_at + warmup          # step 0 starts here
                        seen: dict = {}
                        while time.time() < t0 + duration + 0.5:
                            samples += [(float(d["time"]), dc, float(d["rps"])) for dc, d
                                        in dnsnet.new_load_readings(ctx.work_dir, dcs, seen)]
                            time.sleep(0.25)
                        rows = dnsnet.collect_population(live, running, warmup + duration)
                    state = authority.state()
                    flips = [(t, dc) for t, svc, dc, _ in state["transitions"]
                             if svc == "www" and t0 <= t < t0 + duration]
                    flaps_all[variant] = len(flips)
                    dnsnet.record_population(ctx, rows, t0, variant, policy=policy,
                                             demand=demand, ttl_s=ttl)
                    for row in step_rows(rows, samples, flips, t0, steps, step_s,
                                         capacity, dcs, to_dc, plan.one_way_ms):
                        summary.append({"variant": variant, "policy": policy,
                                        "demand": demand, "backend_overload": mode, **row})
                    bar.advance(1)
    ctx.extra_metadata["global_overload"] = {
        "hot_region": regions[0], "hot_region_nearest_dc": min(
            dcs_all, key=lambda d: ctx.plan.one_way_ms[(regions[0], d)]),
        "users": len(users), "resolvers_per_region": k, "capacity_rps_per_dc": capacity,
        "answer_flaps": flaps_all}
    return summary


TOLERANCES = {
    "dc_utilisation_max": Tol(abs=0.3, rel=0.3, why="a maximum of 1 s windows; answers move "
                              "in resolver-sized chunks"),
    "dc_utilisation_mean": Tol(abs=0.2, rel=0.25),
    "dc_share": Tol(abs=0.15, why="whole resolvers' users move together"),
    "served_rps": Tol(abs=5, rel=0.2),
    "ok_pct": Tol(abs=10), "served_ok_pct": Tol(abs=3), "refused_pct": Tol(abs=10),
    "p50_ms": Tol(abs=30, rel=0.5), "p99_ms": Tol(abs=300, rel=0.5),
    "refused_p99_ms": Tol(abs=100, rel=0.5), "refused_wait_p99_ms": Tol(abs=100, rel=0.5),
    "answer_flaps": Tol(abs=3, rel=0.5),
}


EXPERIMENT = Experiment(
    name="global-overload",
    summary="demand ramps from below to above the DCs' total capacity: where it goes and "
            "what users get under geo, capacity-spill and capacity-shed",
    claim="Locally no server may be overloaded and the global system must know each DC's "
          "capacity: a capacity-aware global balancer keeps every DC near its capacity by "
          "spilling the excess to the next-nearest while there is spare capacity anywhere, "
          "and beyond the total serves what fits and refuses the rest fast, instead of "
          "letting the DC nearest a hot region drown.",
    run=run,
    scenario="three-dc-pop",
    params=(Param("variants", ["geo:hot", "capacity-spill:hot", "capacity-shed:hot",
                               "geo:even", "capacity-spill:even", "capacity-shed:even"],
                  "policy:demand pairs", quick=["geo:hot", "capacity-spill:hot",
                                                "capacity-shed:hot"]),
            Param("steps", [0.5, 0.75, 1.0, 1.25, 1.5], "offered load per step, fractions "
                  "of the total capacity", quick=[0.6, 0.9, 1.3]),
            Param("step_s", 15.0, "seconds per step", quick=8.0),
            Param("warmup_s", 10.0, "seconds at the first step's rate before step 0, left "
                  "out of the summary (in records.csv with t_s < 0): the resolvers' first "
                  "answers were given before any load was seen", quick=8.0),
            Param("capacity_rps", 30.0, "capacity of each DC, requests/s (its backends "
                  "enforce it)"),
            Param("hot_share", 0.6, "share of the demand from the first region (hot)"),
            Param("queue_s", 0.5, "queueing backends: seconds of work that may wait"),
            Param("ttl_s", 5, "TTL of the answers"),
            Param("resolvers_per_region", 10, "the regions' own resolvers used")),
    summary_columns=SUMMARY_COLUMNS,
    order=74,
    expected_s={"quick": 175, "full": 660},
    key_columns=("variant", "step", "dc"),
    tolerances=TOLERANCES,
    renderer="experiments.report.overload:render_global_overload",
    # not in the quick suite yet: its capacity policy flips whole resolvers' users in and
    # out of a full DC (README "global-overload"); `lblab run global-overload --quick` runs
    suites=("full",),
)
