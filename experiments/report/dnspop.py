"""The population experiments' sections: dns-rr-pop (the herd against the number of
resolvers), dns-geo-pop (the nearest-DC share against the share behind a far public
resolver, without and with ECS), dns-failover-pop (failed requests and added latency per
policy and stub behaviour)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.report.core import (Group, Section, color, fmt, new_figure, num,
                                     require, truthy, verdict)


# ------------------------------------------------------------------ dns-rr-pop

def pop_variants(agg: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: pick, spread, resolvers, the herd number, and the sampling-noise
    bound a balanced variant stays under (`noise_bound`: the busiest of N DCs at 3 binomial
    standard deviations above 1/N in a bin of the variant's mean size, over 1/N)."""
    require(agg, ("variant", "pick", "resolver_skew", "resolvers", "share_max_mean_over_time",
                  "requests", "bins"))
    n_dc = max(1, agg.groupby("variant")["variant"].size().max())
    rows = []
    for variant, part in agg.groupby("variant", sort=False):
        first = part.iloc[0]
        per_bin = num(part["requests"].astype(float).sum()) / max(1.0, num(first["bins"]))
        p = 1 / n_dc
        bound = (p + 3 * math.sqrt(p * (1 - p) / per_bin)) * n_dc if per_bin > 0 else math.nan
        rows.append({"variant": variant, "pick": str(first["pick"]),
                     "spread": str(first["resolver_skew"]), "resolvers": int(first["resolvers"]),
                     "herd": num(first["share_max_mean_over_time"]), "per_bin": per_bin,
                     "noise_bound": bound, "n_dc": n_dc})
    return pd.DataFrame(rows)


def pop_figure(per: pd.DataFrame):
    fig = new_figure(6.4, 3.8)
    ax = fig.subplots()
    for j, ((pick, spread), part) in enumerate(per.groupby(["pick", "spread"], sort=False)):
        part = part.sort_values("resolvers")
        ax.plot(part["resolvers"], part["herd"], marker="o", color=color(j),
                linestyle="-" if spread == "uniform" else "--", label=f"{pick}, {spread}")
    n_dc = int(per["n_dc"].max())
    ax.axhline(1, color="grey", linestyle=":", linewidth=1)
    ax.axhline(n_dc, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_ylim(0.8, n_dc + 0.2)
    ax.set_xlabel("resolvers the users are spread over")
    ax.set_ylabel("busiest DC's share, worst bin, x N")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _span(values: pd.Series) -> str:
    lo, hi = fmt(values.min(), 3), fmt(values.max(), 3)
    return lo if lo == hi else f"{lo}-{hi}"


def pop_readings(per: pd.DataFrame) -> list[str]:
    out = []
    n_dc = int(per["n_dc"].max())
    rand = per[per["pick"] == "random"]
    if len(rand):
        over = rand[rand["herd"] > rand["noise_bound"]]
        out.append(f"Random pick: the busiest DC's worst-bin share is "
                   f"{_span(rand['herd'])} x the even share over {len(rand)} variant(s) "
                   f"(sampling noise alone reaches {_span(rand['noise_bound'])} at these "
                   f"bin sizes) — {verdict(over.empty)}"
                   + (f"; above the noise in {', '.join(over['variant'])}" if len(over) else "")
                   + ".")
    first = per[(per["pick"] == "first") & (per["spread"] == "uniform")].sort_values(
        "resolvers")
    if len(first):
        steps = ", ".join(f"{fmt(r['herd'], 3)} at {r['resolvers']}"
                          for _, r in first.iterrows())
        out.append(f"First pick, users spread evenly: the herd number is {steps} resolver(s) "
                   f"(1 = balanced, {n_dc} = every user on one DC).")
        one = first[first["resolvers"] == 1]
        if len(one):
            r = one.iloc[0]
            out.append(f"Behind one resolver, first-record users herd onto one DC per TTL "
                       f"({fmt(r['herd'], 3)}, noise bound {fmt(r['noise_bound'], 3)}) — "
                       f"{verdict(r['herd'] > r['noise_bound'])}.")
        if first["resolvers"].nunique() > 1:
            herd = first["herd"].to_numpy(dtype=float)
            shrinks = bool(herd[-1] < herd[0] and all(b <= a + 0.1 for a, b in
                                                      zip(herd, herd[1:])))
            out.append(f"More resolvers, smaller herd: {fmt(herd[0], 3)} at "
                       f"{first['resolvers'].iloc[0]} to {fmt(herd[-1], 3)} at "
                       f"{first['resolvers'].iloc[-1]} — {verdict(shrinks)}.")
    for _, z in per[(per["pick"] == "first") & (per["spread"] != "uniform")].iterrows():
        even = first[first["resolvers"] == z["resolvers"]]
        if len(even):
            e = even.iloc[0]
            out.append(f"First pick at {z['resolvers']} resolvers: {z['spread']} spread "
                       f"{fmt(z['herd'], 3)} against uniform {fmt(e['herd'], 3)}: a few "
                       "resolvers holding most users keep "
                       + ("more of the herd" if z["herd"] > e["herd"] else
                          "no more of the herd (not what the chapter leads one to expect)")
                       + ".")
    return out


def render_rr_pop(group: Group) -> Section:
    section = Section()

    def fig():
        section.figure("herd", pop_figure(pop_variants(group.agg)),
                       "The herd number (the busiest DC's share in the worst time bin, "
                       "over the even share 1/N) against the number of resolvers the same "
                       "users are spread over, per stub behaviour and spread. Dotted: 1 "
                       "(balanced) and N (everyone on one DC).")
    section.attempt("herd figure", fig)
    section.attempt("reading", lambda: section.readings.extend(
        pop_readings(pop_variants(group.agg))))
    pop = group.metadata.get("population") or {}
    mem = pop.get("resolver_memory") or {}
    if mem:
        starts = [s["start_s"] for s in pop.get("resolver_start", [])
                  if s.get("resolvers") == mem.get("resolvers")]
        section.notes.append(
            f"{pop.get('users')} users; {mem['resolvers']} unbound resolvers took "
            f"{fmt(mem['rss_mb'], 4)} MB resident ({fmt(mem['pss_mb'], 4)} MB proportional)"
            + (f" and {fmt(max(starts), 3)} s to start and answer" if starts else "") + ".")
    seen = pop.get("addresses_seen") or {}
    if seen:
        ok = sum(v["requests_ok"] for v in seen.values())
        same = sum(v["backend_saw_user_ip"] for v in seen.values())
        section.notes.append(f"Backends saw the user's own address in {same} of {ok} "
                             "answered requests.")
    return section


# ------------------------------------------------------------------ dns-geo-pop

GEO_POP_ECS_MIN_PCT = 95.0   # with ECS, users behind the public resolver: nearest DC


def _overall(agg: pd.DataFrame) -> pd.DataFrame:
    require(agg, ("variant", "public_share", "ecs", "resolver_kind", "user_region",
                  "dc_chosen_pct_nearest", "user_latency_p90_ms"))
    rows = agg[(agg["resolver_kind"].astype(str) == "all") &
               (agg["user_region"].astype(str) == "all")]
    return rows.assign(_ecs=truthy(rows["ecs"].astype(str)),
                       _share=rows["public_share"].astype(float))


def geo_pop_figure(agg: pd.DataFrame):
    rows = _overall(agg)
    fig = new_figure(11, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    base = rows[rows["_share"] == 0]
    for j, (ecs, label) in enumerate(((False, "without ECS"), (True, "with ECS"))):
        part = pd.concat([base, rows[(rows["_share"] > 0) & (rows["_ecs"] == ecs)]])
        part = part.sort_values("_share")
        ax1.plot(part["_share"] * 100, part["dc_chosen_pct_nearest"].astype(float),
                 marker="o", color=color(j), label=label)
        ax2.plot(part["_share"] * 100, part["user_latency_p90_ms"].astype(float),
                 marker="o", color=color(j), label=label)
    ax1.set_ylim(0, 105)
    ax1.set_ylabel("% of requests to the user's nearest DC")
    ax2.set_ylabel("ms (each user's median, p90 over users)")
    for ax in (ax1, ax2):
        ax.set_xlabel("% of users behind the far public resolver")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_title("nearest DC, all users")
    ax2.set_title("latency incl. DNS, p90 of users")
    return fig


def geo_pop_readings(agg: pd.DataFrame) -> list[str]:
    out = []
    pub = agg[(agg["resolver_kind"].astype(str) == "public") &
              (agg["user_region"].astype(str) == "all")]
    pub = pub.assign(_ecs=truthy(pub["ecs"].astype(str)))
    for _, r in pub[pub["_ecs"]].iterrows():
        pct = num(r["dc_chosen_pct_nearest"])
        out.append(f"{r['variant']}: users behind the public resolver with ECS reached their "
                   f"nearest DC in {fmt(pct, 3)}% of requests (at least "
                   f"{GEO_POP_ECS_MIN_PCT:g}% expected) — {verdict(pct >= GEO_POP_ECS_MIN_PCT)}.")
    for _, r in pub[~pub["_ecs"]].iterrows():
        at_site = num(r["dc_chosen_pct_public_site"])
        out.append(f"{r['variant']}: without ECS {fmt(at_site, 3)}% of their requests went to "
                   f"the public resolver's nearest DC, whatever the user's region (its "
                   f"location, not theirs) — {verdict(at_site >= GEO_POP_ECS_MIN_PCT)}.")
    if "latency_p50_ms" in agg.columns:
        own = agg[(agg["resolver_kind"].astype(str) == "own") &
                  (agg["user_region"].astype(str) == "all")].set_index("variant")
        for _, r in pub[pub["_ecs"]].iterrows():
            if r["variant"] in own.index:
                out.append(f"{r['variant']}: even with ECS the public resolver's users "
                           f"waited {fmt(r['latency_p50_ms'], 3)} ms at the median against "
                           f"{fmt(own.loc[r['variant'], 'latency_p50_ms'], 3)} ms behind "
                           "their own region's resolvers: every query still crosses to the "
                           "far resolver.")
    rows = _overall(agg)
    base = rows[rows["_share"] == 0]
    far = rows[(rows["_share"] > 0) & ~rows["_ecs"]].sort_values("_share")
    if len(base) and len(far):
        steps = ", ".join(f"{fmt(r['dc_chosen_pct_nearest'], 3)}% at "
                          f"{fmt(100 * r['_share'], 3)}%" for _, r in far.iterrows())
        falls = bool(far["dc_chosen_pct_nearest"].astype(float).iloc[-1]
                     < num(base["dc_chosen_pct_nearest"].iloc[0]) - 5)
        out.append(f"All users reaching their nearest DC: "
                   f"{fmt(base['dc_chosen_pct_nearest'].iloc[0], 3)}% with nobody behind the "
                   f"public resolver, {steps} behind it without ECS — the share falls with "
                   f"the users behind the middleman: {verdict(falls)}.")
    return out


def render_geo_pop(group: Group) -> Section:
    section = Section()
    section.attempt("figure", lambda: section.figure(
        "geo-pop", geo_pop_figure(group.agg),
        "Left: share of all users' requests that reached the user's nearest DC against "
        "the share of users behind the far public resolver, without and with ECS. Right: "
        "latency (including the user's DNS query), each user's median, p90 over users."))
    section.attempt("reading", lambda: section.readings.extend(geo_pop_readings(group.agg)))
    return section


# ------------------------------------------------------------------ dns-failover-pop

FAILOVER_POP_RETRY_MAX_PCT = 1.0   # all + retry-next: "latency, not requests"


def failover_pop_figure(agg: pd.DataFrame):
    require(agg, ("variant", "failed_pct", "added_latency_p50_ms", "added_latency_p99_ms"))
    fig = new_figure(11, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(agg))
    labels = list(agg["variant"].astype(str))
    ax1.bar(x, agg["failed_pct"].astype(float), color=[color(i) for i in range(len(agg))])
    ax1.set_ylabel("% failed, event to detect + TTL + 1 s")
    ax1.set_title("failed requests")
    width = 0.38
    ax2.bar(x - width / 2, agg["added_latency_p50_ms"].astype(float), width, label="p50",
            color=color(0))
    ax2.bar(x + width / 2, agg["added_latency_p99_ms"].astype(float), width, label="p99",
            color=color(1))
    ax2.set_ylabel("ms added (window minus before the failure)")
    ax2.set_title("latency added to answered requests")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return fig


def failover_pop_readings(agg: pd.DataFrame) -> list[str]:
    require(agg, ("variant", "policy", "behaviour", "failed_pct", "last_failure_s",
                  "bound_s", "added_latency_p99_ms"))
    out = []
    for _, r in agg.iterrows():
        policy, behaviour = str(r["policy"]), str(r["behaviour"])
        failed, added = num(r["failed_pct"]), num(r["added_latency_p99_ms"])
        last, bound = num(r["last_failure_s"]), num(r["bound_s"])
        if policy == "all" and behaviour == "retry-next":
            ok = failed < FAILOVER_POP_RETRY_MAX_PCT
            out.append(f"{r['variant']}: {fmt(failed, 3)}% of requests failed (under "
                       f"{FAILOVER_POP_RETRY_MAX_PCT:g}% expected) and the p99 latency grew by "
                       f"{fmt(added, 4)} ms: the users lost latency, not requests — "
                       f"{verdict(ok)}.")
        elif policy == "geo":
            ok = failed > 0 and (math.isnan(last) or math.isnan(bound) or last <= bound + 1)
            out.append(f"{r['variant']}: one answer, nothing to retry: {fmt(failed, 3)}% of "
                       f"requests failed, the last {fmt(last, 3)} s after the failure "
                       f"(detection + TTL = {fmt(bound, 3)} s) — {verdict(ok)}.")
        else:
            out.append(f"{r['variant']}: one address per request: {fmt(failed, 3)}% failed "
                       f"until the failed DC left the cached answers (last failure "
                       f"{fmt(last, 3)} s after it; detection + TTL = {fmt(bound, 3)} s).")
    return out


def render_failover_pop(group: Group) -> Section:
    section = Section()
    section.attempt("figure", lambda: section.figure(
        "failover-pop", failover_pop_figure(group.agg),
        "A DC fails under 2,100 users: left, the share of requests that failed from the "
        "failure until detection + TTL + 1 s, per policy and stub behaviour; right, the "
        "latency that window added to answered requests (p50, p99)."))
    section.attempt("reading",
                    lambda: section.readings.extend(failover_pop_readings(group.agg)))
    return section
