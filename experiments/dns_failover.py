"""dns-failover: how long a failed (or overloaded) DC keeps receiving users after DNS knows.

Policy geo, ECS on, every client resolving through its region's real unbound before each
request. Mid-run the DC nearest to the first region is
  fail      killed (every backend's server stops: connections are refused), or
  overload  driven past its capacity by extra traffic sent straight to its address from
            another region (capacity is lowered for this variant so a few dozen requests/s
            exceed it; the load the authority sees is the DC's real request rate).
Measured per TTL: detect_s, from the event until the authority's own answer for that region
stops naming the DC (its prober or its load feed noticed); drain_s, from the event until the
last request the clients sent to the DC (resolver caches keep the old answer until the TTL
runs out); failed_requests between the event and the drain. Expected: drain_s <= detect_s
+ TTL (about; the resolver's cached copy may have been fetched just before detection), and
failed requests ~ rate x drain_s for `fail`, ~0 for `overload`.
"""
from __future__ import annotations

import subprocess
import sys
import time

from experiments import dnsnet
from experiments.base import Context, Experiment, Param
from experiments.tolerance import Tol
from experiments.workloads.control import start_http_backends
from gslb.globalview import DETECT_TARGET_S
from lab import dns, unbound
from lab.dns_config import gslb_config, resolver_of
from topologies.system import stop_processes

SUMMARY_COLUMNS = ("variant", "ttl_s", "detect_s", "drain_s", "failed_requests",
                   "dc", "client_region", "requests_to_dc_after_event", "requests_after_event",
                   "ttl_left_at_event_s", "bound_s", "within_bound", "capacity_rps",
                   "extra_rps")
# How long the run waits for detection after the event: three times the design target
# (gslb.globalview.DETECT_TARGET_S), so a slow detection is measured, not cut off.
DETECT_BUDGET_S = 3 * DETECT_TARGET_S


def run(ctx: Context) -> list[dict]:
    plan, p = ctx.plan, ctx.params
    region = plan.scenario.regions[0]
    base = gslb_config(plan, policy="geo")
    dc = base.nearest_dc(region.name)
    capacity = p["overload_capacity_rps"]
    config = gslb_config(plan, policy="geo", capacity_rps={dc: capacity})
    vip = str(config.dc(dc).vip)
    subnet = str(region.subnet)
    # the extra traffic for `overload` comes from a client of another region, straight at
    # the DC's address (not through DNS, so it keeps coming whatever DNS answers)
    other = next(c.name for c in plan.by_role("client") if c.site != region.name)
    variants = [(v, t) for v in p["variants"] for t in p["ttls"]]
    summary = []
    with ctx.open_net(controller_apps=dnsnet.controller_apps(plan)) as live:
        svc = dnsnet.start_dns_service(live, plan, config, ctx.work_dir, ecs=True,
                                        seed=ctx.seed)
        with ctx.phase("dns-failover: variants", len(variants)) as bar:
            for kind, ttl in variants:
                summary.append(one_variant(ctx, live, plan, svc, config, kind, int(ttl), dc,
                                           vip, subnet, region.name, other))
                bar.advance(1)
    for row in summary:
        if row["detect_s"] is not None and row["detect_s"] > DETECT_TARGET_S:
            ctx.warn(f"{row['variant']}: detection took {row['detect_s']} s "
                     f"(> {DETECT_TARGET_S:g} s)")
    return summary


def one_variant(ctx, live, plan, svc, config, kind, ttl, dc, vip, subnet, region, other
                ) -> dict:
    p = ctx.params
    variant = f"{kind}-ttl{ttl}"
    # a clean start: DC healthy and idle in the authority's eyes, fresh resolver caches
    svc.authority.set_ttl(ttl)
    dns.wait_answer(svc.authority, subnet, lambda a: a == [vip], timeout_s=20,
                       what=f"{variant}: {dc} back in answers")
    unbound.stop_resolvers(svc.resolvers)
    svc.resolvers = unbound.start_resolvers(live, plan, svc.authority.ip, ctx.work_dir,
                                           ecs=True)
    jobs = dnsnet.default_jobs(plan, svc.resolvers, p["rate"], "random", ctx.seed)
    duration = p["before_s"] + ttl + DETECT_BUDGET_S + p["after_s"]
    start_at, running = dnsnet.start_clients(live, jobs, duration, ctx.work_dir)
    time.sleep(max(0.0, start_at + p["before_s"] - time.time()))

    watcher = plan.by_role("client")[0].name
    res_ip = svc.resolvers[resolver_of(plan, watcher).name].ip
    ttl_left = cached_ttl(live, watcher, res_ip, config.service_fqdn)
    extra = None
    event = time.time()
    if kind == "fail":
        stop_processes(svc.backends[dc])
    else:
        remaining = duration - p["before_s"]
        extra = live.spawn(other, [sys.executable, "-m", "experiments.workloads.search",
                                   "--host", vip, "--rate", str(p["overload_extra_rps"]),
                                   "--duration", f"{remaining:.1f}", "--timeout", "2",
                                   "--out", "/dev/null"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        gone = dns.wait_answer(svc.authority, subnet, lambda a: bool(a) and vip not in a,
                                  timeout_s=DETECT_BUDGET_S + 4,
                                  what=f"{variant}: {dc} out of answers")
        detect_s = round(gone - event, 3)
    except Exception as exc:
        ctx.warn(str(exc))
        detect_s = None
    rows = dnsnet.collect_clients(running, duration)
    if extra is not None:
        stop_processes([extra])
    dnsnet.record_rows(ctx, rows, start_at, plan, variant, ttl_s=ttl, event_t_s=round(
        event - start_at, 3))
    if kind == "fail":  # bring the DC back for the next variant
        svc.backends[dc] = start_http_backends(live, plan, dcs=[dc])[dc]

    after = [r for r in rows if r["epoch"] >= event]
    to_dc = [r for r in after if r["dst"] == vip]
    drain_s = round(max(r["epoch"] for r in to_dc) - event, 3) if to_dc else 0.0
    last = event + drain_s
    failed = sum(1 for r in after if not r["ok"] and r["epoch"] <= last + 1e-6)
    bound = None if detect_s is None else round(detect_s + ttl, 3)
    return {"variant": kind, "ttl_s": ttl, "detect_s": detect_s, "drain_s": drain_s,
            "failed_requests": failed, "dc": dc, "client_region": region,
            "requests_to_dc_after_event": len(to_dc), "requests_after_event": len(after),
            "ttl_left_at_event_s": ttl_left, "bound_s": bound,
            "within_bound": None if bound is None else drain_s <= bound + 1.0,
            "capacity_rps": config.dc(dc).capacity_rps,
            "extra_rps": p["overload_extra_rps"] if kind == "overload" else 0}


def cached_ttl(live, host: str, resolver_ip: str, name: str) -> int | None:
    """The TTL the resolver's cached answer for `name` has left, seen from a client of it."""
    got = dns.parse_dig(live.node(host).cmd(f"dig +noall +answer +time=1 +tries=1 "
                                           f"@{resolver_ip} {name} A"))
    return got.answers[0][1] if got.answers else None


# Reproducibility tolerances (experiments/tolerance.py; README table).
TOLERANCES = {
    "detect_s": Tol(abs=1.0),
    "drain_s": Tol(abs=2.0, rel=0.25),
    "failed_requests": Tol(abs=10, rel=0.5),
}


EXPERIMENT = Experiment(
    name="dns-failover",
    summary="a DC fails or overloads mid-run: detection, drain time and failed requests per TTL",
    claim="DNS steers users away from a failed or full DC only as fast as health detection "
          "plus the TTL cached in resolvers: until then new requests keep reaching it.",
    run=run,
    scenario="two-dc",
    params=(Param("variants", ["fail", "overload"], "events: fail, overload"),
            Param("ttls", [5, 30, 60], "TTLs, seconds", quick=[5, 10]),
            Param("rate", 10.0, "requests per second per client"),
            Param("before_s", 4.0, "seconds of traffic before the event", quick=3.0),
            Param("after_s", 4.0, "seconds of traffic after detect budget + TTL",
                  quick=2.0),
            Param("overload_capacity_rps", 40.0, "capacity of the DC in the overload "
                  "variant (and the whole run), requests/s"),
            Param("overload_extra_rps", 60.0, "extra requests/s sent straight to the DC "
                  "to overload it")),
    summary_columns=SUMMARY_COLUMNS,
    order=70,
    expected_s={"quick": 95, "full": 295},
    key_columns=("variant", "ttl_s"),
    tolerances=TOLERANCES,
    renderer="experiments.report.dns:render_failover",
)
