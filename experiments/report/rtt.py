"""rtt-matrix: configured vs measured RTT per (client region, DC or resolver)."""
from __future__ import annotations

import math

import pandas as pd

from experiments.report.core import (Group, Section, color, fmt, new_figure, require,
                                     verdict)
from lab import fidelity

# every WAN path's measured RTT within the relay's accuracy of the configured one
RTT_MAX_ERROR_MS = fidelity.RTT_TOLERANCE_MS
RTT_COLUMNS = ("src", "dst", "configured_rtt_ms", "measured_rtt_ms")


def _ci(df: pd.DataFrame, col: str) -> list[float]:
    name = f"{col}__ci"
    if name not in df.columns:
        return [0.0] * len(df)
    return [0.0 if v is None or math.isnan(v) else float(v) for v in df[name]]


def figure(agg: pd.DataFrame):
    require(agg, RTT_COLUMNS)
    df = agg.reset_index(drop=True)
    fig = new_figure(11, 4.5)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=(1, 1.3))
    kinds = list(dict.fromkeys(df["dst_kind"])) if "dst_kind" in df.columns else ["path"]
    for i, kind in enumerate(kinds):
        part = df[df["dst_kind"] == kind] if "dst_kind" in df.columns else df
        ax1.errorbar(part["configured_rtt_ms"], part["measured_rtt_ms"],
                     yerr=_ci(part, "measured_rtt_ms"), fmt="o", color=color(i),
                     label=str(kind), capsize=3)
    top = max(float(df["configured_rtt_ms"].max()), float(df["measured_rtt_ms"].max()), 1.0)
    ax1.plot([0, top], [0, top], "--", color="grey", linewidth=1, label="measured = configured")
    ax1.set_xlabel("configured RTT (ms)")
    ax1.set_ylabel("measured median RTT (ms)")
    ax1.set_title("RTT: configured vs measured")
    ax1.legend(fontsize=8)
    labels = [f"{s}→{d}" for s, d in zip(df["src"], df["dst"])]
    err = (df["measured_rtt_ms"] - df["configured_rtt_ms"]).tolist()
    colors = ["#2ca02c" if not math.isnan(e) and abs(e) <= RTT_MAX_ERROR_MS else "#d62728"
              for e in err]
    ax2.barh(range(len(df)), err, xerr=_ci(df, "measured_rtt_ms"), color=colors)
    ax2.axvspan(-RTT_MAX_ERROR_MS, RTT_MAX_ERROR_MS, color="#2ca02c", alpha=0.12,
                label=f"±{RTT_MAX_ERROR_MS:g} ms")
    ax2.set_yticks(range(len(df)), labels, fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("measured − configured (ms)")
    ax2.set_title("error per path")
    ax2.legend(fontsize=8)
    return fig


def readings(agg: pd.DataFrame, link_delay: str | None) -> list[str]:
    require(agg, RTT_COLUMNS)
    df = agg.dropna(subset=["measured_rtt_ms"])
    out = []
    unmeasured = len(agg) - len(df)
    if unmeasured:
        out.append(f"{unmeasured} of {len(agg)} paths had no reply at all.")
    if df.empty:
        return out + ["No path was measured: the run shows nothing about the WAN."]
    # Pairs inside one site (configured 0: a client and its own region's resolver) cross no
    # WAN link: their RTT is the site switch's own latency, which nothing configures.
    lan = df[df["configured_rtt_ms"] == 0]
    df = df[df["configured_rtt_ms"] > 0]
    if len(lan):
        lan_text = (f"{len(lan)} same-site pair(s) (no WAN link, nothing configured) measure "
                    f"{fmt(lan['measured_rtt_ms'].min())}–{fmt(lan['measured_rtt_ms'].max())}"
                    f" ms: the LAN switches' own latency.")
    if df.empty:
        return out + ([lan_text] if len(lan) else [])
    err = (df["measured_rtt_ms"] - df["configured_rtt_ms"])
    worst_i = err.abs().idxmax()
    worst = df.loc[worst_i]
    worst_text = (f"worst {worst['src']}→{worst['dst']}: measured "
                  f"{fmt(worst['measured_rtt_ms'])} ms vs configured "
                  f"{fmt(worst['configured_rtt_ms'])} ms ({err[worst_i]:+.2f} ms)")
    within = int((err.abs() <= RTT_MAX_ERROR_MS).sum())
    if link_delay == "none":
        out.append(f"Link delay mechanism `none`: the scenario's delays were not applied "
                   f"(measured RTTs are {fmt(df['measured_rtt_ms'].min())}–"
                   f"{fmt(df['measured_rtt_ms'].max())} ms for configured "
                   f"{fmt(df['configured_rtt_ms'].min())}–{fmt(df['configured_rtt_ms'].max())}"
                   f" ms); this run cannot support any latency claim.")
    else:
        out.append(f"{within} of {len(df)} WAN paths within {RTT_MAX_ERROR_MS:g} ms of their "
                   f"configured RTT ({worst_text}): "
                   f"{verdict(within == len(df))} (the emulated WAN "
                   f"{'applies' if within == len(df) else 'does not apply'} the scenario's "
                   f"delays to that accuracy).")
        if within < len(df):
            over = df[err > RTT_MAX_ERROR_MS]
            if len(over):
                out.append(f"{len(over)} path(s) are slower than configured by more than "
                           f"{RTT_MAX_ERROR_MS:g} ms (median excess "
                           f"{fmt((over['measured_rtt_ms'] - over['configured_rtt_ms']).median())}"
                           f" ms): queueing or CPU starvation adds delay.")
    if len(lan):
        out.append(lan_text)
    if "loss_pct" in df.columns:
        lossy = df[df["loss_pct"].fillna(0) > 0]
        if len(lossy):
            out.append(f"Loss on {len(lossy)} path(s), up to {fmt(lossy['loss_pct'].max())}%.")
        else:
            out.append("No ping was lost.")
    return out


def render(group: Group) -> Section:
    section = Section()
    link_delay = (group.metadata.get("mechanisms") or {}).get("link_delay")
    section.attempt("RTT figure", lambda: section.figure(
        "rtt", figure(group.agg),
        "Left: measured median RTT against the scenario's configured RTT (on the dashed "
        "line = exact). Right: error per path; green within "
        f"±{RTT_MAX_ERROR_MS:g} ms."))
    section.attempt("reading", lambda: section.readings.extend(
        readings(group.agg, link_delay)))
    return section
