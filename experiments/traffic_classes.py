"""traffic-classes: searches and uploads at once; one policy for both names against a
policy per class.

The chapter: a search must be fast, a video upload may be a little slower but must succeed
in one go, so the best place for a request depends on its class. The scenario
(three-dc-pop: every user its own address, behind its region's own real resolvers, ECS on)
gets two service names: users who search resolve search.lblab.test, users who upload (a
POST of the scenario's `upload_kb`, acknowledged whole within `timeout_s` or failed)
resolve upload.lblab.test. Each region's demand, as fractions of `capacity_rps`: the
first (hot) region `hot_search` and `hot_upload`, the others `other_search` and
`other_upload`, open loop; every DC's backends enforce their capacity and refuse beyond it
(503).

Variants (one network each):
  wan       the WAN link from the hot region to its nearest DC carries `wan_mbps`, of which
            `cross_share` is taken by cross traffic (an iperf3 UDP stream from the region's
            host to a host of the DC, for the whole run); the DCs' capacity is
            `wan_capacity_factor` times `capacity_rps`, so only the link is tight;
  capacity  the hot region's search demand alone fills its nearest DC (hot_search of its
            capacity).
Each run: `warmup_s` of the load (its requests kept in records.csv with t_s < 0, left
out of the summary: the resolvers' first answers were given before any load was seen),
then `duration_s` measured.
Policies (set on the running authority before each run, resolver caches fresh):
  one        both names `capacity` (nearest DC with spare capacity, the excess spilled to
             the next-nearest), judged by the DC's whole load: one policy, as one name
             for every request would be;
  per-class  search `capacity` judged by the search load; upload `spare`: the DC with the
             most room (the scarcest of its spare capacity and the headroom of the WAN link
             from the client's region) within `max_distance_ms` one way.
Measured per (variant, policy, class, DC): requests and their outcome, latency of the
answered ones (from the user's first step: resolution included), each acknowledged
upload's goodput (its bytes over its HTTP exchange: without the client's start lag and
the user's DNS query), the share of the class each DC got,
what the authority's inputs said about each DC over the run (its demand over its capacity
and how full the WAN link from the hot region is, from the load feed), and which DC each
name's answer named for a hot-region user halfway through the run (dig at the authority
with the user's /24 as ECS): the reason the two names can differ.
"""
from __future__ import annotations

import dataclasses
import math
import random
import subprocess
import time

from experiments import dnsnet
from experiments.base import Context, Experiment, Param
from experiments.stats import percentile
from experiments.tolerance import Tol
from lab import dns, unbound
from lab.dns_config import gslb_config
from topologies import population
from topologies.plan import build_plan, population_host
from topologies.scenario_dns import DnsService
from topologies.system import InputError

SUMMARY_COLUMNS = ("variant", "class", "policy", "requests", "ok_pct", "latency_p50_ms",
                   "latency_p99_ms", "upload_goodput_mbps", "upload_ok_pct",
                   "hot_region_requests", "hot_region_ok_pct", "hot_region_p50_ms",
                   "dc", "dc_share", "dc_utilisation_mean", "wan_used_mean",
                   "answered_mid_run")
VARIANTS = ("wan", "capacity")
# policy -> {service: (policy, load key)}: None judges a class by its own load
POLICIES = {
    "one": {"search": ("capacity", "*"), "upload": ("capacity", "*")},
    "per-class": {"search": ("capacity", None), "upload": ("spare", None)},
}
CLASSES = ("search", "upload")
IPERF_PORT = 5201


def names(config) -> dict[str, str]:
    return {c: f"{c}.{config.zone}" for c in CLASSES}


def hot_path(plan) -> tuple[str, str]:
    """(the first region with a population, else the first region; its nearest DC)."""
    region = (plan.scenario.populations or plan.scenario.regions)[0].name
    dc = min((d.name for d in plan.scenario.dcs), key=lambda d: plan.one_way_ms[(region, d)])
    return region, dc


def variant_plan(plan, variant: str, p: dict):
    """The plan of one variant: two service names, every DC at its capacity (refusing
    beyond it), and for `wan` the hot region's link to its nearest DC at wan_mbps."""
    scen = plan.scenario
    capacity = float(p["capacity_rps"]) * (float(p["wan_capacity_factor"])
                                           if variant == "wan" else 1.0)
    dcs = tuple(dataclasses.replace(d, capacity_rps=capacity, overload="shed")
                for d in scen.dcs)
    links = scen.links
    if variant == "wan":
        region, dc = hot_path(plan)
        links = tuple(dataclasses.replace(link, bw_mbps=float(p["wan_mbps"]))
                      if {link.a, link.b} == {region, dc} else link for link in scen.links)
    services = (DnsService("search", "capacity", int(p["search_ttl_s"])),
                DnsService("upload", "spare", int(p["upload_ttl_s"]),
                           max_distance_ms=float(p["max_distance_ms"])))
    dns_ = dataclasses.replace(scen.dns, services=services)
    return build_plan(dataclasses.replace(scen, dcs=dcs, links=links, dns=dns_))


def with_classes(users: list, p: dict, seed: int) -> list:
    """Every user open loop, searching or uploading: per region `upload_users` of them
    (at random, seeded) upload; each class's demand split evenly over its users."""
    base = float(p["capacity_rps"])
    regions = list(dict.fromkeys(u.region for u in users))
    out = []
    for i, region in enumerate(regions):
        mine = [u for u in users if u.region == region]
        if len(mine) < 2:
            raise InputError(f"traffic-classes: region {region} has {len(mine)} user(s); "
                             "it needs two or more (some search, some upload)")
        rng = random.Random(f"lblab-traffic-classes:{seed}:{region}")
        n_up = max(1, min(len(mine) - 1, round(len(mine) * float(p["upload_users"]))))
        up = set(rng.sample(range(len(mine)), n_up))
        kind = "hot" if i == 0 else "other"
        rate = {"search": float(p[f"{kind}_search"]) * base / (len(mine) - n_up),
                "upload": float(p[f"{kind}_upload"]) * base / n_up}
        for j, u in enumerate(mine):
            workload = "upload" if j in up else "search"
            out.append(dataclasses.replace(u, workload=workload, rate_rps=rate[workload],
                                           think_time_s=0.0))
    return out


def _exchange_ms(row: dict) -> float:
    """A request's HTTP exchange: its latency without the client's start lag and the
    user's DNS query."""
    return row["latency_ms"] - (row.get("resolve_ms") or 0.0) - (row.get("start_lag_ms")
                                                                 or 0.0)


def summary_rows(rows: list[dict], samples: list[tuple], to_dc: dict, dcs: list[str],
                 hot: str, t0: float, duration: float, capacity: float,
                 mid_run: dict[str, str]) -> list[dict]:
    """One row per (class, DC) of one run (rows: its requests; samples: (epoch, dc,
    demand rps, share of the hot region's WAN link into the DC in use or None))."""
    out = []
    window = [s for s in samples if t0 + 1.0 <= s[0] < t0 + duration + 0.5]
    for cls in CLASSES:
        part = [r for r in rows if r["workload"] == cls]
        ok = [r for r in part if r["ok"]]
        hot_rows = [r for r in part if r["user_region"] == hot]
        hot_ok = [r for r in hot_rows if r["ok"]]
        goodput = [8 * r["bytes"] / _exchange_ms(r) / 1e3 for r in ok if _exchange_ms(r) > 0]
        base = {"class": cls, "requests": len(part),
                "ok_pct": round(100 * len(ok) / len(part), 2) if part else None,
                "latency_p50_ms": percentile([r["latency_ms"] for r in ok], 50),
                "latency_p99_ms": percentile([r["latency_ms"] for r in ok], 99),
                "upload_goodput_mbps": percentile(goodput, 50) if cls == "upload" else None,
                "upload_ok_pct": (round(100 * len(ok) / len(part), 2) if part else None)
                if cls == "upload" else None,
                "hot_region_requests": len(hot_rows),
                "hot_region_ok_pct": round(100 * len(hot_ok) / len(hot_rows), 2)
                if hot_rows else None,
                "hot_region_p50_ms": percentile([r["latency_ms"] for r in hot_ok], 50)}
        for dc in dcs:
            util = [rps / capacity for _, name, rps, _ in window if name == dc]
            wan = [used for _, name, _, used in window if name == dc and used is not None]
            got = sum(1 for r in part if to_dc.get(r["dst"]) == dc)
            out.append({**base, "dc": dc,
                        "dc_share": round(got / len(part), 4) if part else None,
                        "dc_utilisation_mean": round(sum(util) / len(util), 3)
                        if util else None,
                        "wan_used_mean": round(sum(wan) / len(wan), 3) if wan else None,
                        "answered_mid_run": mid_run.get(cls) == dc})
    return out


def _sample(reading: dict, dc: str, hot: str) -> tuple:
    """(epoch, dc, demand rps, share of the hot region's WAN link into the DC in use or
    None) of one load-feed reading."""
    link = (reading.get("wan") or {}).get(hot)
    return (float(reading["time"]), dc, float(reading["rps"]),
            float(link["used"]) if link else None)


def start_cross_traffic(live, plan, p: dict, seconds: float) -> list:
    """An iperf3 UDP stream of cross_share x wan_mbps from the hot region's host to a
    host of its nearest DC, for `seconds`; returns its processes."""
    region, dc = hot_path(plan)
    server = plan.hosts_in(dc, "backend")[-1]
    client = population_host(region)
    srv = live.spawn(server.name, ["iperf3", "-s", "-p", str(IPERF_PORT), "-B",
                                   str(server.ip)], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    try:
        live.wait_until(server.name, f"ss -Hltn 'sport = :{IPERF_PORT}' | grep -q .",
                        f"iperf3 server on {server.name}", 10)
        mbps = float(p["cross_share"]) * float(p["wan_mbps"])
        cli = live.spawn(client, ["iperf3", "-c", str(server.ip), "-p", str(IPERF_PORT),
                                  "-u", "-b", f"{mbps:g}M", "-l", "1200", "-t",
                                  f"{math.ceil(seconds)}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except BaseException:
        _stop([srv])
        raise
    return [cli, srv]


def _stop(procs: list) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def answers_now(live, authority, config, subnet: str) -> dict[str, str]:
    """Which DC each name's answer names now for a user of `subnet` (dig at the authority,
    from its own host, with the user's /24 as ECS: what a resolver forwarding the user's
    subnet gets, without crossing a congested link)."""
    to_dc = dnsnet.dc_of_address(config)
    out = {}
    for cls, name in names(config).items():
        got = dns.dig(live, authority.host, authority.ip, name, subnet=subnet)
        out[cls] = to_dc.get(got[0], got[0]) if got else ""
    return out


def run(ctx: Context) -> list[dict]:
    p = ctx.params
    scen = ctx.plan.scenario
    dnsnet.population_scenario(scen, "traffic-classes")
    variants = [str(v) for v in p["variants"]]
    policies = [str(v) for v in p["policies"]]
    bad = [v for v in variants if v not in VARIANTS] + [v for v in policies
                                                        if v not in POLICIES]
    if bad or not variants or not policies:
        raise InputError(f"traffic-classes: variants are {', '.join(VARIANTS)} and policies "
                         f"{', '.join(POLICIES)}" + (f"; got {bad[0]!r}" if bad else ""))
    if len(scen.populations) < 2:
        raise InputError("traffic-classes needs populations in two regions or more")
    duration, warmup = float(p["duration_s"]), float(p["warmup_s"])
    k = max(1, int(p["resolvers_per_region"]))
    own, users = population.on_own_resolvers(scen, k, ctx.seed)
    specs = [r for pool in own.values() for r in pool]
    load = with_classes(users, p, ctx.seed)
    hot, near = hot_path(ctx.plan)
    hot_subnet = str(next(u.subnet for u in users if u.region == hot))
    summary, mid_all = [], {}
    with ctx.phase("traffic-classes: runs", len(variants) * len(policies)) as bar:
        for variant in variants:
            plan = variant_plan(ctx.plan, variant, p)
            config = gslb_config(plan)
            to_dc, dcs = dnsnet.dc_of_address(config), [d.name for d in config.dcs]
            capacity = config.dcs[0].capacity_rps
            with ctx.open_net(plan_override=plan,
                              controller_apps=dnsnet.controller_apps(plan)) as live:
                _, authority = dnsnet.start_population_service(live, plan, config,
                                                               ctx.work_dir, ctx.seed)
                for policy in policies:
                    for cls, (name, key) in POLICIES[policy].items():
                        authority.set_service_policy(cls, name, key)
                    lead = 3.0 if variant == "wan" else 1.5
                    cross: list = []
                    samples: list = []
                    try:
                        with unbound.instances(live, plan, specs, authority.ip, ctx.work_dir):
                            if variant == "wan":   # from now to past the population's end
                                cross = start_cross_traffic(live, plan, p,
                                                            lead + warmup + duration + 2)
                            start_at, running = dnsnet.start_population(
                                live, load, warmup + duration, ctx.work_dir, seed=ctx.seed,
                                start_in_s=lead, timeout_s=float(p["timeout_s"]),
                                name=names(config)["search"],
                                upload_name=names(config)["upload"])
                            seen: dict = {}
                            mid = None
                            t0 = start_at + warmup     # measured from here
                            while time.time() < t0 + duration + 0.5:
                                samples += [_sample(d, dc, hot) for dc, d in
                                            dnsnet.new_load_readings(ctx.work_dir, dcs, seen)]
                                if mid is None and time.time() >= t0 + duration / 2:
                                    mid = answers_now(live, authority, config, hot_subnet)
                                time.sleep(0.25)
                            rows = dnsnet.collect_population(live, running,
                                                             warmup + duration,
                                                             float(p["timeout_s"]))
                    finally:
                        _stop(cross)
                    run_name = f"{variant}-{policy}"
                    mid_all[run_name] = mid or {}
                    dnsnet.record_population(ctx, rows, t0, run_name, policy=policy,
                                             traffic_variant=variant)
                    measured = [r for r in rows if r["epoch"] >= t0]
                    for row in summary_rows(measured, samples, to_dc, dcs, hot, t0,
                                            duration, capacity, mid or {}):
                        summary.append({"variant": variant, "policy": policy, **row})
                    bar.advance(1)
    ctx.extra_metadata["traffic_classes"] = {
        "users": len(users), "resolvers_per_region": k, "hot_region": hot,
        "hot_region_nearest_dc": near, "answers_mid_run": mid_all,
        "answers_mid_run_for": hot_subnet,
        "upload_bytes": load[0].upload_kb * 1024 if load else None}
    return summary


TOLERANCES = {
    "ok_pct": Tol(abs=5), "upload_ok_pct": Tol(abs=8), "hot_region_ok_pct": Tol(abs=8),
    "latency_p50_ms": Tol(abs=30, rel=0.5), "latency_p99_ms": Tol(abs=500, rel=0.5),
    "hot_region_p50_ms": Tol(abs=30, rel=0.5),
    "upload_goodput_mbps": Tol(abs=2, rel=0.5),
    "dc_share": Tol(abs=0.15, why="whole resolvers' users move together"),
    "dc_utilisation_mean": Tol(abs=0.2, rel=0.25), "wan_used_mean": Tol(abs=0.15),
}


EXPERIMENT = Experiment(
    name="traffic-classes",
    summary="searches and uploads at once, the nearest DC's WAN link congested or the DC "
            "near capacity: one policy for both names against a policy per class",
    claim="The best placement depends on the traffic: a search must be fast, an upload may "
          "be a little slower but must succeed in one go. Sending searches to the nearest "
          "DC with capacity and uploads to the DC with the most room (spare capacity and WAN "
          "headroom) within a latency bound keeps search latency low and raises upload "
          "success, against one policy for both.",
    run=run,
    scenario="three-dc-pop",
    params=(Param("variants", list(VARIANTS), "what is tight near the hot region: its WAN "
                  "link (wan) or its nearest DC (capacity)"),
            Param("policies", list(POLICIES), "one policy for both names, or per class"),
            Param("warmup_s", 10.0, "seconds of each run before the measured part (the "
                  "resolvers' first answers, the capacity policy's shares settling); its "
                  "requests are in records.csv with t_s < 0"),
            Param("duration_s", 40.0, "measured seconds per run", quick=15.0),
            Param("capacity_rps", 30.0, "capacity of each DC, requests/s (the wan variant "
                  "multiplies it by wan_capacity_factor); demand is in fractions of it"),
            Param("wan_capacity_factor", 3.0, "the wan variant's DC capacity factor"),
            Param("hot_search", 1.0, "the hot region's searches, fraction of capacity_rps"),
            Param("hot_upload", 0.2, "the hot region's uploads, fraction of capacity_rps"),
            Param("other_search", 0.2, "each other region's searches, fraction"),
            Param("other_upload", 0.05, "each other region's uploads, fraction"),
            Param("upload_users", 0.3, "share of each region's users who upload"),
            Param("wan_mbps", 20.0, "wan variant: the hot region's link to its nearest DC"),
            Param("cross_share", 0.8, "wan variant: share of that link the cross traffic "
                  "takes"),
            Param("max_distance_ms", 50.0, "the upload policy's latency bound, one way"),
            Param("search_ttl_s", 5, "TTL of search.lblab.test"),
            Param("upload_ttl_s", 10, "TTL of upload.lblab.test"),
            Param("timeout_s", 5.0, "a request's deadline: an upload not acknowledged "
                  "whole by then failed"),
            Param("resolvers_per_region", 10, "the regions' own resolvers used")),
    summary_columns=SUMMARY_COLUMNS,
    order=76,
    expected_s={"quick": 170, "full": 380},
    key_columns=("variant", "class", "policy", "dc"),
    tolerances=TOLERANCES,
    renderer="experiments.report.classes:render_traffic_classes",
)
