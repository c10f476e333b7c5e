"""The traffic-classes section: per variant, search latency and upload success under one
policy for both names and under a policy per class, where each class went, and readings
that check the chapter's claim from the numbers (per-class placement keeps searches fast
and raises upload success)."""
from __future__ import annotations

import pandas as pd

from experiments.report.core import (Group, Section, color, fmt, new_figure, num, require,
                                     verdict)

SEARCH_P50_SLACK = 1.10    # "at no more than 10% higher search p50"
SAME_PCT = 1.0             # upload success within a point: no difference


def _classes(agg: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, class, policy): the class's totals (the same on every DC)."""
    require(agg, ("variant", "class", "policy", "dc", "requests", "ok_pct",
                  "latency_p50_ms", "upload_ok_pct", "dc_share"))
    return agg.drop_duplicates(["variant", "class", "policy"])


def classes_figure(agg: pd.DataFrame):
    per = _classes(agg)
    variants = list(dict.fromkeys(per["variant"].astype(str)))
    policies = list(dict.fromkeys(per["policy"].astype(str)))
    dcs = list(dict.fromkeys(agg["dc"].astype(str)))
    fig = new_figure(12, 3.6 * len(variants))
    axes = fig.subplots(len(variants), 3, squeeze=False)
    for row, variant in zip(axes, variants):
        part = per[per["variant"].astype(str) == variant]
        for ax, cls, column, label in (
                (row[0], "search", "latency_p50_ms", "search p50, ms"),
                (row[1], "upload", "upload_ok_pct", "uploads acknowledged, %")):
            values = [num(part[(part["class"] == cls) & (part["policy"] == p)][column]
                          .max()) for p in policies]
            ax.bar(range(len(policies)), values, color=[color(i) for i in
                                                        range(len(policies))])
            ax.set_xticks(range(len(policies)), policies)
            ax.set_title(f"{variant}: {label}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        ax = row[2]
        bars = [(cls, p) for cls in ("search", "upload") for p in policies]
        bottom = [0.0] * len(bars)
        for j, dc in enumerate(dcs):
            share = []
            for cls, p in bars:
                got = agg[(agg["variant"].astype(str) == variant) & (agg["class"] == cls)
                          & (agg["policy"] == p) & (agg["dc"].astype(str) == dc)]["dc_share"]
                share.append(num(got.max()) if len(got) else 0.0)
            ax.bar(range(len(bars)), share, bottom=bottom, color=color(j), label=dc)
            bottom = [b + (s if s == s else 0.0) for b, s in zip(bottom, share)]
        ax.set_xticks(range(len(bars)), [f"{c}\n{p}" for c, p in bars], fontsize=7)
        ax.set_title(f"{variant}: share of each class per DC", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def _one(per: pd.DataFrame, variant: str, cls: str, policy: str):
    got = per[(per["variant"].astype(str) == variant) & (per["class"] == cls)
              & (per["policy"] == policy)]
    return None if got.empty else got.iloc[0]


def classes_readings(agg: pd.DataFrame, metadata: dict | None = None) -> list[str]:
    per = _classes(agg)
    out = []
    for variant in dict.fromkeys(per["variant"].astype(str)):
        s1, sp = (_one(per, variant, "search", p) for p in ("one", "per-class"))
        u1, up = (_one(per, variant, "upload", p) for p in ("one", "per-class"))
        if any(x is None for x in (s1, sp, u1, up)):
            continue
        p50_1, p50_p = num(s1["latency_p50_ms"]), num(sp["latency_p50_ms"])
        ok_1, ok_p = num(u1["upload_ok_pct"]), num(up["upload_ok_pct"])
        fast = p50_p <= SEARCH_P50_SLACK * p50_1
        higher, same = ok_p > ok_1 + SAME_PCT, abs(ok_p - ok_1) <= SAME_PCT
        text = (f"{variant}: uploads acknowledged {fmt(ok_1, 4)}% with one policy, "
                f"{fmt(ok_p, 4)}% per class (goodput p50 {fmt(u1['upload_goodput_mbps'], 3)}"
                f" and {fmt(up['upload_goodput_mbps'], 3)} Mbit/s); search p50 "
                f"{fmt(p50_1, 3)} and {fmt(p50_p, 3)} ms (p99 {fmt(s1['latency_p99_ms'], 3)} "
                f"and {fmt(sp['latency_p99_ms'], 3)} ms)")
        if higher and fast:
            text += (f" — per-class placement raises upload success at no more than "
                     f"{SEARCH_P50_SLACK - 1:.0%} higher search p50: {verdict(True)}.")
        elif same and fast:
            text += (" — upload success is the same either way in this variant: what is "
                     "tight is the DC's capacity, which one capacity-aware policy for both "
                     "names already sees and keeps; per class, search p50 is "
                     + ("lower" if p50_p < p50_1 else "no higher")
                     + f": {verdict(True)} as far as it goes.")
        else:
            text += (" — per-class placement " + ("did not raise upload success"
                                                   if not (higher or same) else
                                                   f"raised search p50 by more than "
                                                   f"{SEARCH_P50_SLACK - 1:.0%}")
                     + f" in this run: {verdict(False)}.")
        out.append(text)
        mid = ((metadata or {}).get("traffic_classes", {}).get("answers_mid_run", {})
               .get(f"{variant}-per-class", {}))
        if mid.get("search") and mid.get("upload"):
            rows = agg[(agg["variant"].astype(str) == variant)
                       & (agg["policy"] == "per-class") & (agg["class"] == "search")]
            why = "; ".join(
                f"{r['dc']} at {fmt(100 * num(r['dc_utilisation_mean']), 3)}% of its "
                f"capacity, hot region's link {fmt(100 * num(r['wan_used_mean']), 3)}% used"
                for _, r in rows.iterrows())
            same = "the same DC" if mid["search"] == mid["upload"] else "different DCs"
            out.append(f"{variant}, per class, halfway through: a hot-region user (its /24 "
                       f"as ECS) was answered {mid['search']} for search and "
                       f"{mid['upload']} for upload ({same}); the authority's inputs over "
                       f"the run: {why}.")
    return out


def render_traffic_classes(group: Group) -> Section:
    section = Section()
    section.attempt("figure", lambda: section.figure(
        "traffic-classes", classes_figure(group.agg),
        "Per variant: search p50 (answered searches, resolution included) and the share "
        "of uploads acknowledged whole within the deadline, under one policy for both "
        "names and under a policy per class; right, where each class's requests went."))
    section.attempt("reading", lambda: section.readings.extend(
        classes_readings(group.agg, group.metadata)))
    return section


