"""lb-tier: broken and moved connections per algorithm, event and ECMP variant; a timeline of
one LB failure with per-LB traffic; detection times and requests lost."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.report.core import (Group, Section, color, fmt, new_figure, num,
                                     require, truthy, verdict)

ALGORITHMS = ("leastload", "modn", "maglev")
EVENTS = ("fail", "return", "add", "fail-remove")
LEASTLOAD_MIN_BROKEN_SHARE = 0.5    # state only: at least half of the moved connections break
MODN_MIN_BROKEN_SHARE = 0.5         # mod N, pool changed: most moved connections break
SHARE_MAX_MEAN = 1.2                # the K LBs carry flows within 1.2 of an even share
DETECT_TARGET_S = 3.0               # LB failure to route withdrawn (BFD here)
TIMELINE_BIN_S = 0.25


def _rows(agg: pd.DataFrame, **match) -> pd.DataFrame:
    part = agg
    for key, value in match.items():
        if key in part.columns:
            part = part[part[key] == value]
    return part


def broken_figure(agg: pd.DataFrame):
    require(agg, ("ecmp", "algorithm", "event", "broken_connections", "moved_connections"))
    modes = list(dict.fromkeys(agg["ecmp"]))
    fig = new_figure(6 * len(modes), 4)
    axes = fig.subplots(1, len(modes), squeeze=False)[0]
    for ax, mode in zip(axes, modes):
        part = agg[agg["ecmp"] == mode]
        events = [e for e in EVENTS if e in set(part["event"])]
        algos = [a for a in ALGORITHMS if a in set(part["algorithm"])]
        x = np.arange(len(events))
        width = 0.8 / max(len(algos), 1)
        for j, algo in enumerate(algos):
            rows = part[part["algorithm"] == algo].set_index("event").reindex(events)
            offset = x + (j - (len(algos) - 1) / 2) * width
            c = color(ALGORITHMS.index(algo))      # one colour per algorithm in every panel
            ax.bar(offset, rows["moved_connections"].astype(float), width, color="none",
                   edgecolor=c, linewidth=1.2)
            ax.bar(offset, rows["broken_connections"].astype(float), width, color=c,
                   label=algo)
        ax.set_xticks(x, events)
        ax.set_ylabel("connections")
        ax.set_title(f"ECMP {mode}: broken (filled) of moved (outline)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    return fig


def timeline_figure(records: pd.DataFrame, variant: str, detect_s: float):
    require(records, ("variant", "workload", "lb", "t_s"), "records.csv")
    part = records[(records["variant"] == variant) & (records["workload"] == "search")]
    part = part.dropna(subset=["lb"])
    fig = new_figure(10, 3.5)
    ax = fig.subplots()
    if part.empty:
        ax.text(0.5, 0.5, "no per-LB records", ha="center", transform=ax.transAxes)
        return fig
    lo, hi = math.floor(part["t_s"].min()), math.ceil(part["t_s"].max())
    bins = np.arange(lo, hi + TIMELINE_BIN_S, TIMELINE_BIN_S)
    for i, (lb, rows) in enumerate(part.groupby("lb")):
        counts, edges = np.histogram(rows["t_s"].astype(float), bins=bins)
        ax.step(edges[:-1], counts / TIMELINE_BIN_S, where="post", color=color(i),
                label=f"LB {int(lb)}")
    bad = part[~truthy(part["ok"]) | (part["latency_ms"].astype(float) >= 1000)]
    if len(bad):
        ax.plot(bad["t_s"].astype(float), [0] * len(bad), "x", color="#d62728",
                label="failed or retransmitted request")
    ax.axvline(0, color="black", linewidth=1, label="LB fails")
    if not math.isnan(detect_s):
        ax.axvline(detect_s, color="grey", linestyle="--", linewidth=1,
                   label=f"route withdrawn (+{detect_s:.2f} s)")
    ax.set_xlabel("seconds from the event")
    ax.set_ylabel("new search connections per s")
    ax.set_title(f"{variant}: the LB that learned each new connection")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _maglev_explained(r) -> bool:
    """No broken connection, or (a pool change in the event) only moved ones that Maglev's
    own new table sent elsewhere, and no more of them than its remapped share of the
    surviving backends' entries explains (binomial, 3 standard deviations + 1): Maglev is
    not minimally disruptive, a pool change also remaps a few other entries."""
    broken = num(r["broken_connections"])
    if broken == 0:
        return True
    rehashed, moved = num(r.get("moved_rehashed")), num(r["moved_connections"])
    share = num(r.get("remapped_share"))
    if math.isnan(rehashed) or math.isnan(share):
        return False
    expected = moved * share
    bound = expected + 3 * math.sqrt(expected * (1 - share)) + 1
    return broken <= rehashed <= bound


def _maglev_remapped(mag: pd.DataFrame) -> str:
    if "moved_rehashed" not in mag.columns:
        return ""
    rows = [(r["event"], num(r["moved_rehashed"]), num(r["moved_connections"]),
             num(r.get("remapped_share"))) for _, r in mag.iterrows()
            if num(r.get("moved_rehashed")) > 0]
    if not rows:
        return " (no moved connection was sent to another backend)"
    return (", except where Maglev's own table for the changed pool moved the entry: "
            + ", ".join(f"{e} {fmt(n)} of {fmt(m)} moved connections sent elsewhere "
                        "(the new table remapped "
                        + ("an unknown share" if math.isnan(share) else f"{share:.2%}")
                        + " of the surviving backends' entries)" for e, n, m, share in rows)
            + "; consistent hashing moves about 1/N, not exactly the removed backend's share")


def readings(agg: pd.DataFrame, records: pd.DataFrame, bfd: str = "100 x 5") -> list[str]:
    require(agg, ("ecmp", "algorithm", "event", "broken_connections", "moved_connections"))
    out = []
    live = fmt(agg["live_connections"].max()) if "live_connections" in agg.columns else "?"
    for mode in dict.fromkeys(agg["ecmp"]):
        mag = _rows(agg, ecmp=mode, algorithm="maglev")
        if len(mag):
            broken = {r["event"]: num(r["broken_connections"]) for _, r in mag.iterrows()}
            explained = {r["event"]: _maglev_explained(r) for _, r in mag.iterrows()}
            out.append(f"ECMP {mode}, maglev: connections to surviving backends broken per "
                       "event: " + ", ".join(f"{e} {fmt(v)}" for e, v in broken.items())
                       + f" (of {live} live) — {verdict(all(explained.values()))}"
                       ": every LB computes the same table, so a moved connection finds its "
                       "backend on any LB" + _maglev_remapped(mag) + ".")
        for algo, events, bound, why in (
                ("leastload", ("fail", "fail-remove"), LEASTLOAD_MIN_BROKEN_SHARE,
                 "its choice is the LB's own state, not reproducible on another LB"),
                ("modn", ("fail-remove",), MODN_MIN_BROKEN_SHARE,
                 "mod N of a changed pool sends a moved connection elsewhere")):
            for event in events:
                for _, r in _rows(agg, ecmp=mode, algorithm=algo, event=event).iterrows():
                    moved, broken = num(r["moved_connections"]), num(r.get("broken_moved"))
                    if math.isnan(broken):
                        broken = num(r["broken_connections"])
                    if not moved:
                        out.append(f"ECMP {mode}, {algo}, {event}: no connection moved "
                                   "between LBs, so nothing to break (no claim tested).")
                        continue
                    share = broken / moved
                    out.append(f"ECMP {mode}, {algo}, {event}: {fmt(broken)} of {fmt(moved)} "
                               f"moved connections broke ({share:.0%}; expected ≥ "
                               f"{bound:.0%}: {why}) — {verdict(share >= bound)}.")
        modn_fail = _rows(agg, ecmp=mode, algorithm="modn", event="fail")
        for _, r in modn_fail.iterrows():
            b = num(r["broken_connections"])
            out.append(f"ECMP {mode}, modn, fail: {fmt(b)} broken with "
                       f"{fmt(r['moved_connections'])} moved — the pool did not change, so "
                       f"mod N agrees on every LB — {verdict(b == 0)}.")
    out += _ecmp_readings(agg) + _detect_readings(agg, bfd) + _request_readings(agg)
    out += _share_readings(agg, records)
    if "tables_agree" in agg.columns:
        hashed = agg[agg["algorithm"].isin(("modn", "maglev"))]
        ok = truthy(hashed["tables_agree"]).all() if len(hashed) else True
        out.append("The LBs' installed bucket tables were identical before every modn and "
                   f"maglev variant — {verdict(bool(ok))} (leastload's differ, as expected).")
    if "disagreement_ms" in agg.columns:
        dis = agg.dropna(subset=["disagreement_ms"])
        if len(dis):
            out.append("Pool change applied to all LBs as one operation: the LBs disagreed "
                       "for at most " + ", ".join(
                           f"{fmt(num(r['disagreement_ms']), 4)} ms ({r['ecmp']}, "
                           f"{r['algorithm']})" for _, r in dis.iterrows())
                       + " (first flow mod sent to the last LB's barrier reply).")
    rows = [(num(r["broken_moved"]), num(r["moved_rehashed"])) for _, r in agg.iterrows()] \
        if {"broken_moved", "moved_rehashed"} <= set(agg.columns) else []
    rows = [(b, h) for b, h in rows if not (math.isnan(b) or math.isnan(h))]
    if rows:
        same = sum(b == h for b, h in rows)
        out.append(f"Moved connections that broke vs moved connections the LB they reached sent "
                   f"to another backend (from the LBs' learned entries): equal in {same} of "
                   f"{len(rows)} variants, {fmt(sum(b for b, _ in rows))} vs "
                   f"{fmt(sum(h for _, h in rows))} in all — a moved connection breaks when, "
                   "and only when, the new LB does not reproduce its backend"
                   + (" — consistent with the chapter." if same == len(rows) else
                      "; where they differ, something other than the choice broke "
                      "connections (in-flight loss, resets) or a broken one was re-learned."))
    if "removal_lead_s" in agg.columns:
        lead = [num(x) for x in agg["removal_lead_s"].dropna()]
        if lead:
            out.append(f"fail-remove: the backend left {fmt(min(lead), 3)}-{fmt(max(lead), 3)} s "
                       "before LB 1 failed (once every LB held the new table), "
                       + ("within the same second as the issue's case asks." if max(lead) <= 1.0
                          else "**more than a second**: not the case the experiment means."))
    return out


def _ecmp_readings(agg: pd.DataFrame) -> list[str]:
    out = []
    if "moved_from_surviving" in agg.columns:
        for mode in dict.fromkeys(agg["ecmp"]):
            rows = _rows(agg, ecmp=mode, event="fail")
            if len(rows):
                n = rows["moved_from_surviving"].astype(float)
                out.append(f"ECMP {mode}, LB fails: {n.mean():.1f} connections per variant "
                           "moved although their LB still served (mean over "
                           f"{len(rows)} variants; hash-threshold re-cuts the hash space, a "
                           "resilient group moves only the failed LB's buckets).")
    for event in ("fail", "add"):
        ht = _rows(agg, ecmp="hash-threshold", event=event)
        rs = _rows(agg, ecmp="resilient", event=event)
        both = set(ht["algorithm"]) & set(rs["algorithm"]) if len(ht) and len(rs) else set()
        ht, rs = ht[ht["algorithm"].isin(both)], rs[rs["algorithm"].isin(both)]
        if len(ht) and len(rs):
            a, b = ht["moved_connections"].astype(float).mean(), \
                rs["moved_connections"].astype(float).mean()
            out.append(f"Event {event}: connections moved between LBs, mean over "
                       f"{', '.join(sorted(both))}: "
                       f"hash-threshold {a:.1f}, resilient {b:.1f} — a resilient nexthop group "
                       f"moves only what it must — {verdict(b <= a)}.")
    return out


def _detect_readings(agg: pd.DataFrame, bfd: str = "100 x 5") -> list[str]:
    out = []
    if "route_changes" in agg.columns:
        flapped = agg[agg["route_changes"].astype(float) > 1]
        out.append(f"Route changes without an event (a BFD or BGP session flapping): "
                   f"{len(flapped)} of {len(agg)} variants"
                   + (f" ({', '.join(flapped['variant'])}: their numbers mix the event with "
                      "a flap)" if len(flapped) else "") + ".")
    for event, what in (("fail", "LB failure to route withdrawn"),
                        ("return", "LB back to route restored"),
                        ("add", "new LB to route added")):
        rows = agg[agg["event"].isin((event, f"{event}-remove") if event == "fail"
                                     else (event,))]
        vals = rows["detect_s"].astype(float).dropna() if "detect_s" in rows else []
        if len(vals):
            line = (f"{what}: {vals.median():.2f} s median, {vals.max():.2f} s max over "
                    f"{len(vals)} variants")
            if event == "fail":
                line += (f" (BFD {bfd.replace(' x ', ' ms × ')}; target ≤ "
                         f"{DETECT_TARGET_S:g} s) — "
                         f"{verdict(vals.max() <= DETECT_TARGET_S)}")
            out.append(line + ".")
    return out


def _request_readings(agg: pd.DataFrame) -> list[str]:
    rows = agg[agg["event"] == "fail"]
    if not len(rows) or "failed_requests" not in rows:
        return []
    failed = rows["failed_requests"].astype(float).sum()
    before = rows["failed_before_withdrawal"].astype(float).sum() \
        if "failed_before_withdrawal" in rows else math.nan
    slow = rows["slow_requests"].astype(float).sum() if "slow_requests" in rows else math.nan
    total = rows["requests"].astype(float).sum()
    mag = _rows(rows, algorithm="maglev")
    mag_after = (mag["failed_requests"].astype(float) -
                 mag["failed_before_withdrawal"].astype(float)).sum() if len(mag) else 0
    return [f"Search requests in the LB-failure variants (event fail): {fmt(failed)} of "
            f"{fmt(total)} failed, "
            f"{fmt(before)} of them sent before the route was withdrawn (in flight on the "
            f"failed LB); {fmt(slow)} more succeeded after a TCP retransmission (≥ 1 s). "
            f"With maglev, {fmt(mag_after)} failed after withdrawal — "
            f"{verdict(mag_after == 0)}."]


def _share_readings(agg: pd.DataFrame, records: pd.DataFrame) -> list[str]:
    out = []
    if "lb_share_max_mean" in agg.columns:
        vals = agg["lb_share_max_mean"].astype(float).dropna()
        if len(vals):
            out.append(f"Flows per LB before each event (busiest LB vs the mean): median "
                       f"{vals.median():.2f}, max {vals.max():.2f} over {len(vals)} variants "
                       f"of a few hundred flows each.")
    if not records.empty and "workload" in records.columns:
        flows = records[(records["workload"] == "lb_flows")]
        full = flows.groupby("variant").filter(lambda g: len(g) == 3) if len(flows) else flows
        if len(full):
            per_lb = full.groupby("lb")["flows"].sum()
            share = per_lb.max() / per_lb.mean()
            out.append(f"Pooled over every variant with 3 LBs: {fmt(int(per_lb.sum()))} flows, "
                       f"busiest LB {share:.2f}× the mean (bound {SHARE_MAX_MEAN}) — "
                       f"{verdict(share <= SHARE_MAX_MEAN)}.")
    return out


def render(group: Group) -> Section:
    section = Section()
    agg = group.agg
    section.attempt("lb-tier figure", lambda: section.figure(
        "lb-tier", broken_figure(agg),
        "Long-lived connections moved between LBs by an event (outline) and broken among "
        "them and the rest (filled; to backends that still exist), per algorithm, event and "
        "ECMP variant."))

    def timeline():
        rows = _rows(agg, ecmp="hash-threshold", algorithm="maglev", event="fail")
        if not len(rows):
            rows = _rows(agg, event="fail")
        if not len(rows):
            return
        row = rows.iloc[0]
        section.figure("lb-tier-timeline",
                       timeline_figure(group.records(), row["variant"], num(row["detect_s"])),
                       "New search connections per LB around one LB failure, by scheduled "
                       "start, counted from the LB that learned each (a connection whose SYN "
                       "went into the failed LB before withdrawal is learned where its "
                       "retransmission went); crosses: requests that failed or waited for a "
                       "retransmission.")
    section.attempt("lb-tier timeline", timeline)
    bfd = (group.metadata.get("lb_tier") or {}).get("bfd_ms", "100 x 5")
    section.attempt("reading", lambda: section.readings.extend(
        readings(agg, group.records(), bfd)))
    return section
