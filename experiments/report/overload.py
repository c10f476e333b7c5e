"""The global-overload section: served against offered load per policy, each DC's demand
against its capacity step by step, and readings that check the chapter's claims from the
numbers (a capacity-aware balancer keeps DCs near capacity below the total; beyond it, it
serves what fits and refuses the rest fast)."""
from __future__ import annotations

import pandas as pd

from experiments.report.core import (Group, Section, color, fmt, new_figure, num, require,
                                     verdict)

SPILL_MAX_UTILISATION = 1.1     # "no DC above 110% of its capacity" below the total
SHED_SERVED_OK_PCT = 99.0       # "the requests that are served succeed at least 99%"
SHED_FAST_MS = 100.0            # "the rest fail fast (under 100 ms)"


def _steps(agg: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, step): the step's totals (the same on every DC's row)."""
    require(agg, ("variant", "policy", "step", "offered_rps", "capacity_rps_total",
                  "served_rps", "served_ok_pct", "refused_pct", "refused_p99_ms",
                  "refused_wait_p99_ms", "p50_ms",
                  "dc_utilisation_mean", "dc_utilisation_max"))
    return agg.drop_duplicates(["variant", "step"])


def overload_figure(agg: pd.DataFrame):
    steps = _steps(agg)
    require(agg, ("dc", "dc_utilisation_max"))
    variants = list(dict.fromkeys(agg["variant"].astype(str)))
    fig = new_figure(12, 3.8)
    axes = fig.subplots(1, 1 + len(variants), squeeze=False)[0]
    ax = axes[0]
    for j, (variant, part) in enumerate(steps.groupby("variant", sort=False)):
        ax.plot(part["offered_rps"].astype(float), part["served_rps"].astype(float),
                marker="o", color=color(j), label=str(variant))
    top = float(steps["offered_rps"].astype(float).max())
    total = float(steps["capacity_rps_total"].astype(float).max())
    ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1)
    ax.axhline(total, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("offered, requests/s")
    ax.set_ylabel("served, requests/s")
    ax.set_title("served vs offered")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for ax, variant in zip(axes[1:], variants):
        part = agg[agg["variant"].astype(str) == variant]
        for j, (dc, rows) in enumerate(part.groupby("dc", sort=False)):
            x = rows["step_start_s"].astype(float)
            ax.plot(x, rows["dc_utilisation_mean"].astype(float), marker="o", color=color(j),
                    label=str(dc))
            ax.plot(x, rows["dc_utilisation_max"].astype(float), marker=".", color=color(j),
                    linestyle=":", linewidth=1)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(variant, fontsize=9)
        ax.set_xlabel("step start, s")
        ax.set_ylabel("demand / capacity (step mean; dotted: max 1 s)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return fig


def overload_readings(agg: pd.DataFrame, metadata: dict | None = None) -> list[str]:
    steps = _steps(agg)
    nearest = ((metadata or {}).get("global_overload") or {}).get("hot_region_nearest_dc")
    out = []
    for variant, part in agg.groupby("variant", sort=False):
        policy = str(part["policy"].iloc[0])
        below = part[part["offered_rps"].astype(float)
                     < part["capacity_rps_total"].astype(float)]
        peak = below.loc[below["dc_utilisation_mean"].astype(float).idxmax()] \
            if len(below) and below["dc_utilisation_mean"].notna().any() else None
        if policy == "capacity-spill" and peak is not None:
            ok = num(peak["dc_utilisation_mean"]) <= SPILL_MAX_UTILISATION
            out.append(f"{variant}: below the total capacity the busiest DC ran at "
                       f"{fmt(100 * num(peak['dc_utilisation_mean']), 3)}% of its capacity "
                       f"on average over a step ({peak['dc']}, step {int(peak['step'])}; "
                       f"highest 1 s window {fmt(100 * num(peak['dc_utilisation_max']), 3)}%"
                       f"; at most {SPILL_MAX_UTILISATION:.0%} expected) — {verdict(ok)}.")
        elif policy == "geo" and peak is not None:
            over = num(peak["dc_utilisation_mean"]) > SPILL_MAX_UTILISATION
            which = ("" if not nearest else " (the hot region's nearest DC)"
                     if peak["dc"] == nearest else
                     f" (not the hot region's nearest, {nearest}: once {nearest} was full "
                     "geo sent the whole region on to the next)")
            out.append(f"{variant}: below the total capacity {peak['dc']}{which} still ran at "
                       f"{fmt(100 * num(peak['dc_utilisation_mean']), 3)}% of its capacity "
                       f"on average over a step: "
                       + ("a DC overloads, as the chapter expects of a balancer that does "
                          "not spread by capacity."
                          if over else "no DC went past 110% under geo in this run, which "
                          "the chapter does not lead one to expect (whole regions move "
                          "off a full DC at once here)."))
        above = steps[(steps["variant"] == variant) & (steps["offered_rps"].astype(float)
                                                       > steps["capacity_rps_total"]
                                                       .astype(float))]
        for _, r in above.iterrows():
            served_ok, fast = num(r["served_ok_pct"]), num(r["refused_wait_p99_ms"])
            text = (f"{variant}, step {int(r['step'])} ({fmt(r['offered_rps'], 3)} offered "
                    f"of {fmt(r['capacity_rps_total'], 3)}): served {fmt(r['served_rps'], 3)}"
                    f"/s, {fmt(served_ok, 4)}% of the requests not refused succeeded, "
                    f"{fmt(r['refused_pct'], 3)}% refused (p99 {fmt(r['refused_p99_ms'], 3)}"
                    f" ms, of which {fmt(fast, 3)} ms beyond the two round trips to the DC), "
                    f"answered p50 {fmt(r['p50_ms'], 3)} ms")
            if policy == "capacity-shed":
                ok = served_ok >= SHED_SERVED_OK_PCT and (fast != fast or fast < SHED_FAST_MS)
                text += (f" — served requests succeed (>= {SHED_SERVED_OK_PCT:g}%) and the "
                         f"rest fail fast (< {SHED_FAST_MS:g} ms beyond the round trips): "
                         f"{verdict(ok)}.")
            else:
                text += "."
            out.append(text)
    return out


def render_global_overload(group: Group) -> Section:
    section = Section()
    section.attempt("figure", lambda: section.figure(
        "global-overload", overload_figure(group.agg),
        "Left: requests served per second against requests offered, per policy (dotted: "
        "all served; dashed: the DCs' total capacity). Right, per variant: each DC's demand "
        "(what reached its backends, from the load feed) over its capacity, step by step: "
        "the step's mean (solid) and its highest 1 s window (dotted)."))
    section.attempt("reading", lambda: section.readings.extend(
        overload_readings(group.agg, group.metadata)))
    return section
