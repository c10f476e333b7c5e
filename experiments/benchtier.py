"""`make bench`: the LB tier (scenario lb-tier: three LBs behind ECMP and BGP), measured in
one network: how evenly the router's ECMP hash spreads flows over the LBs (baseline: the
spread a perfectly uniform random choice gives the same number of flows), how long an LB
failure takes to leave the router's route (baseline: BFD's configured detection time), and
how many connections to surviving backends break when an LB fails and a backend leaves
within the same second, with maglev (baseline: mod N, side by side in the same run)."""
from __future__ import annotations

import random
import statistics
from pathlib import Path
from types import SimpleNamespace

from experiments.bench import Row, detect_mechanisms
from topologies.state import new_run_id

SHARE_RATE, SHARE_SECONDS = 30.0, 5.0      # search requests per client: ~900 flows in all
DETECT_REPEATS = 5


def uniform_share(flows: int, lbs: int, trials: int = 2000, seed: int = 1) -> float:
    """Median busiest/mean of `flows` flows thrown uniformly at random over `lbs` LBs."""
    rng = random.Random(seed)
    out = []
    for _ in range(trials):
        counts = [0] * lbs
        for _ in range(flows):
            counts[rng.randrange(lbs)] += 1
        out.append(max(counts) / (flows / lbs))
    return statistics.median(out)


def bench_lb_tier() -> list[Row]:
    from experiments import lb_tier
    from experiments.vip_hashing import table_size
    from experiments.vipclient import for_live
    from experiments.workloads import control
    from lab import bird
    from lab.net import LiveNet
    from topologies import scenario
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("lb-tier"))
    mech = detect_mechanisms()
    run_id = new_run_id("bench-tier")
    work = Path("/tmp") / f"lblab-{run_id}"
    dc = plan.scenario.dcs[0]
    vip = str(dc.vip)
    clients = plan.by_role("client")
    backends = plan.hosts_in(dc.name, "backend")
    ips = {int(h.ip) for h in backends}
    with LiveNet(plan, mech, run_id, work, log=lambda *_: 0, calibrate_links=False) as live:
        control.start_http_backends(live, plan, dcs=[dc.name])
        live.start_health_checks()
        api = for_live(live)
        tier = lb_tier.Tier(live, dc.name)
        # ECMP spread: many short flows, counted in the LBs' learned entries
        api.change(dc.name, algorithm="maglev", conntrack=True)
        tier.wait_tables(1, table_size("maglev", len(ips)), ips)
        tier.clear_connections(1)
        procs = [control.start_search(live, c.name, vip, SHARE_RATE, SHARE_SECONDS, i + 1)
                 for i, c in enumerate(clients)]
        for proc in procs:
            control.finish_search(proc)
        counts = {k: 0 for k in lb_tier.ALL_LBS}
        for found in tier.entries(1).values():
            counts[lb_tier.carrier(found, False)] += 1
        share = lb_tier.share_max_mean(counts)
        # detection: LB failure to route withdrawn, repeatedly
        detect = []
        for _ in range(DETECT_REPEATS):
            t = live.tier.fail_lb(dc.name, lb_tier.FAILED_LB)
            detect.append(live.tier.wait_nexthops(dc.name, lb_tier.ALL_LBS -
                                                  {lb_tier.FAILED_LB}) - t)
            live.tier.restore_lb(dc.name, lb_tier.FAILED_LB)
            live.tier.wait_nexthops(dc.name, lb_tier.ALL_LBS, 20)
        # event (d), maglev vs mod N
        ctx = SimpleNamespace(params={"connections": 36, "search_rate": 10.0, "before_s": 1.5,
                                      "after_s": 3.5}, seed=1, record=lambda **_: None,
                              warn=lambda text: warnings.append(text))
        warnings: list[str] = []
        broken = {}
        for algorithm in ("modn", "maglev"):
            api.change(dc.name, algorithm=algorithm, conntrack=True)
            row = lb_tier.one_variant(ctx, live, api, tier, dc, vip, 1, clients, backends[-1],
                                      ips, "hash-threshold", algorithm, "fail-remove")
            broken[algorithm] = row
            tier.ensure(lb_tier.ALL_LBS)
    total = sum(counts.values())
    bfd_s = bird.BFD_INTERVAL_MS * bird.BFD_MULTIPLIER / 1000
    mag, modn = broken["maglev"], broken["modn"]
    remapped = "an unknown share" if mag["remapped_share"] is None else \
        f"{mag['remapped_share']:.2%}"
    return [
        Row("lb_tier_ecmp_share_max_mean", share, "ratio",
            baseline=uniform_share(total, len(counts)), target=1.2,
            note=f"{total} flows over 3 LBs (fib_multipath_hash_policy=1), busiest/mean, "
                 f"counted in the LBs' learned entries; baseline uniform random, same count"),
        Row("lb_tier_detect_s", statistics.median(detect), "s", baseline=bfd_s, target=3,
            note=f"LB switch stops forwarding -> router's route without it (netlink event); "
                 f"median of {DETECT_REPEATS}, max {max(detect):.3f}; baseline BFD "
                 f"{bird.BFD_INTERVAL_MS} ms x {bird.BFD_MULTIPLIER}"),
        Row("lb_tier_broken_maglev", mag["broken_connections"], "connections",
            baseline=modn["broken_connections"], target=0,
            note=f"a backend leaves, then (every LB has the new table) an LB fails; "
                 f"{mag['live_connections']} "
                 f"{'(' + '; '.join(warnings) + ') ' if warnings else ''}"
                 f"connections, {mag['moved_connections']} moved (maglev; "
                 f"{mag['moved_rehashed']} of them sent to another backend by Maglev's own "
                 f"table, which remapped {remapped} of the surviving backends' entries), "
                 f"{modn['moved_connections']} moved (baseline mod N, same run); removed "
                 f"backend's own not counted")]
