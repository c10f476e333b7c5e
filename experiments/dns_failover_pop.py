"""dns-failover-pop: a DC fails under a population; what it costs users depends on what
their machines do with the answers.

The scenario (three-dc-pop) holds 2,100 users (each its own address) behind their
regions' own resolvers (real unbound, ECS on). Per variant (policy x stub behaviour, fresh
caches, the DC healthy at the start) every user runs the same Poisson requests; after
`before_s` the DC nearest to the first region is killed (every backend's server stops).
  policy all   every healthy DC's VIP, rotated: a user whose pick fails can try another;
  policy geo   one answer, the user's nearest DC: nothing else to try until DNS changes.
  random/first one address, no retry (what most code that calls connect() once does);
  retry-next   the answers in order; after a refused, reset or unanswered connection
               (`retry_delay_s`) the next, as browsers do.
Measured in the window from the event until detection + TTL + 1 s (after it every cached
answer has moved on): failed_pct of the requests scheduled in it, last_failure_s (the last
failed request's start after the event, against bound_s = detect_s + TTL), and the latency
the failure added: the window's percentiles of answered requests minus the same
percentiles before the event. Expected: `all` + `retry-next` loses latency, not requests
(under 1% fail); `geo` loses requests to the failed DC until detection plus TTL, whatever
the behaviour; `all` + one address loses about the failed DC's share of requests until its
answers age out.
"""
from __future__ import annotations

import time

from experiments import dnsnet
from experiments.base import Context, Experiment, Param
from experiments.stats import percentile
from experiments.tolerance import Tol
from experiments.workloads.control import start_http_backends
from gslb.globalview import DETECT_TARGET_S
from lab import dns, unbound
from lab.dns_config import gslb_config
from topologies import population
from topologies.scenario import BEHAVIOURS
from topologies.system import InputError, stop_processes

SUMMARY_COLUMNS = ("variant", "policy", "behaviour", "ttl_s", "dc", "users", "detect_s",
                   "bound_s", "requests_window", "failed_window", "failed_pct",
                   "failed_to_dc", "last_failure_s", "within_bound", "retried_pct",
                   "latency_p50_before_ms", "latency_p99_before_ms",
                   "latency_p50_window_ms", "latency_p99_window_ms",
                   "added_latency_p50_ms", "added_latency_p99_ms")
DETECT_BUDGET_S = 3 * DETECT_TARGET_S   # as dns-failover: a slow detection is measured


def parse_variants(texts: list) -> list[tuple[str, str]]:
    """'policy:behaviour' -> (policy, behaviour); a bad one is a one-line InputError."""
    out = []
    for text in texts:
        policy, _, behaviour = str(text).partition(":")
        if policy not in ("all", "geo") or behaviour not in BEHAVIOURS:
            raise InputError(f"variants: '{text}' is not policy:behaviour with policy all or "
                             f"geo and behaviour one of {', '.join(BEHAVIOURS)}")
        out.append((policy, behaviour))
    return out


def window_summary(rows: list[dict], event: float, detect_s: float | None, ttl: int,
                   dc_vips: set[str]) -> dict:
    """The failure's cost to users, from one variant's rows (epoch = scheduled start)."""
    bound = None if detect_s is None else round(detect_s + ttl, 3)
    end = event + (bound if bound is not None else DETECT_BUDGET_S + ttl) + 1.0
    before = [r for r in rows if r["epoch"] < event]
    window = [r for r in rows if event <= r["epoch"] < end]
    failed = [r for r in window if not r["ok"]]
    ok_before = [r["latency_ms"] for r in before if r["ok"]]
    ok_window = [r["latency_ms"] for r in window if r["ok"]]
    last = max((r["epoch"] for r in rows if not r["ok"] and r["epoch"] >= event),
               default=None)
    last_s = None if last is None else round(last - event, 3)

    def added(p: float):
        a, b = percentile(ok_window, p), percentile(ok_before, p)
        return None if a is None or b is None else round(a - b, 3)

    return {
        "detect_s": detect_s, "bound_s": bound, "requests_window": len(window),
        "failed_window": len(failed),
        "failed_pct": round(100 * len(failed) / len(window), 2) if window else None,
        "failed_to_dc": sum(1 for r in failed if r["dst"] in dc_vips),
        "last_failure_s": last_s,
        "within_bound": None if bound is None else (last_s or 0.0) <= bound + 1.0,
        "retried_pct": round(100 * sum(1 for r in window if r["tries"] > 1) / len(window), 2)
        if window else None,
        "latency_p50_before_ms": percentile(ok_before, 50),
        "latency_p99_before_ms": percentile(ok_before, 99),
        "latency_p50_window_ms": percentile(ok_window, 50),
        "latency_p99_window_ms": percentile(ok_window, 99),
        "added_latency_p50_ms": added(50), "added_latency_p99_ms": added(99)}


def run(ctx: Context) -> list[dict]:
    plan, p = ctx.plan, ctx.params
    scen = plan.scenario
    dnsnet.population_scenario(scen, "dns-failover-pop")
    todo = parse_variants(list(p["variants"]))
    ttl = int(p["ttl_s"])
    region = scen.populations[0]
    config = gslb_config(plan, policy="geo", ttl_s=ttl)
    dc = config.nearest_dc(region.name)
    vip = str(config.dc(dc).vip)
    subnet = str(region.subnet)
    k = max(1, int(p["resolvers_per_region"]))
    # every user on its own region's first k resolvers, evenly
    own, users = population.on_own_resolvers(scen, k, ctx.seed)
    specs = [r for pool in own.values() for r in pool]
    duration = p["before_s"] + ttl + DETECT_BUDGET_S + p["after_s"]
    summary = []
    with ctx.open_net(controller_apps=dnsnet.controller_apps(plan)) as live:
        backends, authority = dnsnet.start_population_service(live, plan, config,
                                                              ctx.work_dir, ctx.seed)
        seen: dict = {}
        with ctx.phase("dns-failover-pop: variants", len(todo)) as bar:
            for policy, behaviour in todo:
                variant = f"{policy}-{behaviour}"
                authority.set_policy(policy)
                authority.set_ttl(ttl)
                dns.wait_answer(authority, subnet, lambda a: vip in a, timeout_s=20,
                                what=f"{variant}: {dc} back in answers")
                with unbound.instances(live, plan, specs, authority.ip, ctx.work_dir):
                    start_at, running = dnsnet.start_population(
                        live, population.with_behaviour(users, behaviour), duration,
                        ctx.work_dir, rate=p["rate"] or None, seed=ctx.seed,
                        retry_delay_s=p["retry_delay_s"] or None)
                    time.sleep(max(0.0, start_at + p["before_s"] - time.time()))
                    event = time.time()
                    stop_processes(backends[dc])
                    try:
                        gone = dns.wait_answer(authority, subnet,
                                               lambda a: bool(a) and vip not in a,
                                               timeout_s=DETECT_BUDGET_S + 4,
                                               what=f"{variant}: {dc} out of answers")
                        detect_s = round(gone - event, 3)
                    except Exception as exc:   # measured as missing, the run goes on
                        ctx.warn(str(exc))
                        detect_s = None
                    rows = dnsnet.collect_population(live, running, duration)
                backends[dc] = start_http_backends(live, plan, dcs=[dc])[dc]
                dnsnet.record_population(ctx, rows, start_at, variant, ttl_s=ttl,
                                         policy=policy, event_t_s=round(event - start_at, 3))
                dnsnet.check_addresses(ctx, variant, [r for r in rows if r["epoch"] < event],
                                       seen)
                summary.append({"variant": variant, "policy": policy, "behaviour": behaviour,
                                "ttl_s": ttl, "dc": dc, "users": len(users),
                                **window_summary(rows, event, detect_s, ttl, {vip})})
                bar.advance(1)
        ctx.extra_metadata["population"] = {
            "users": len(users), "resolvers_per_region": {r: len(v) for r, v in own.items()},
            "failed_dc": dc, "local_routes": dict(live.population_blocks),
            "addresses_seen_before_failure": seen}
    return summary


TOLERANCES = {
    "failed_pct": Tol(abs=3, rel=0.5, why="hundreds of requests in the window; how many "
                      "fall before the answers move depends on the TTL left at the event"),
    "added_latency_p50_ms": Tol(abs=20, rel=0.5),
    "added_latency_p99_ms": Tol(abs=300, rel=0.5, why="retries wait retry_delay_s (1 s)"),
    "detect_s": Tol(abs=1.0),
    "retried_pct": Tol(abs=5, rel=0.5),
}


EXPERIMENT = Experiment(
    name="dns-failover-pop",
    summary="a DC fails under 2,100 users: failed requests and added latency per policy and "
            "stub behaviour",
    claim="What a DC failure costs users depends on what their machines do with several "
          "answers: with every DC in the answer and clients that try the next address, "
          "users lose latency, not requests; with a single geo answer requests fail until "
          "health detection plus the TTL move the answers.",
    run=run,
    scenario="three-dc-pop",
    params=(Param("variants", ["all:random", "all:first", "all:retry-next", "geo:first",
                               "geo:retry-next"],
                  "policy:behaviour pairs", quick=["all:first", "all:retry-next",
                                                   "geo:retry-next"]),
            Param("ttl_s", 10, "TTL of the answers", quick=5),
            Param("resolvers_per_region", 10, "the regions' own resolvers used", quick=4),
            Param("rate", 0.0, "requests per second per user, open loop (0: each "
                  "user's own request process from the scenario)"),
            Param("retry_delay_s", 0.0, "retry-next: seconds before the next "
                  "address (0: the scenario's retry_delay_s)"),
            Param("before_s", 4.0, "seconds of traffic before the failure", quick=3.0),
            Param("after_s", 3.0, "seconds of traffic after detect budget + TTL",
                  quick=1.0)),
    summary_columns=SUMMARY_COLUMNS,
    order=72,
    expected_s={"quick": 75, "full": 200},
    key_columns=("variant",),
    tolerances=TOLERANCES,
    renderer="experiments.report.dnspop:render_failover_pop",
)
