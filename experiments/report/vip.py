"""vip-modes (NAT vs DSR vs GRE: latency, goodput, reply bytes through the LB) and
vip-hashing (remapped keys and broken connections per algorithm and conntrack)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.report.core import (Group, Section, color, fmt, new_figure, num,
                                     require, truthy, verdict)

# vip-modes: what the chapter says of NAT and direct return, as bounds
DIRECT_RETURN_MAX_LB_SHARE = 0.05   # DSR (and GRE): almost no reply bytes cross the LB
NAT_MIN_LB_SHARE = 0.90             # NAT: (nearly) all of them do
MIN_OK_PCT = 99.0                   # below this a mode's request success is reported
DIRECT_RETURN_MODES = ("dsr", "gre")

# vip-hashing: Maglev moves about 1/N (maglev.py: the cascade), mod-N most keys
MAGLEV_MAX_REMAP_FACTOR = 1.15      # maglev remaps at most 1.15/N of the keys
MODN_MIN_REMAP = 0.5                # mod-N remaps at least half
MAGLEV_MAX_MEAN_SHARE = 1.10        # maglev's busiest backend vs the mean


def _ci(df: pd.DataFrame, col: str):
    name = f"{col}__ci"
    if name not in df.columns:
        return None
    return [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
            for v in df[name]]


def mode_of(row) -> str:
    mode = row.get("mode") if hasattr(row, "get") else None
    if isinstance(mode, str) and mode and mode != "varies":
        return mode
    return str(row["variant"]).split("-")[0]


# ------------------------------------------------------------------ vip-modes

def latency_cdf(records: pd.DataFrame, ax, workload: str = "search") -> bool:
    if records.empty or "workload" not in records.columns:
        ax.text(0.5, 0.5, "no records.csv", ha="center", transform=ax.transAxes)
        return False
    require(records, ("variant", "latency_ms", "ok"), "records.csv")
    part = records[(records["workload"] == workload) & truthy(records["ok"])]
    for i, (variant, rows) in enumerate(part.groupby("variant", sort=False)):
        lat = np.sort(rows["latency_ms"].dropna().to_numpy(dtype=float))
        if len(lat):
            ax.step(lat, np.arange(1, len(lat) + 1) / len(lat), where="post",
                    color=color(i), label=f"{variant} (n={len(lat)})")
    ax.set_xscale("log")
    ax.set_xlabel(f"{workload} latency (ms, log)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{workload} latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return True


def modes_figure(agg: pd.DataFrame, records: pd.DataFrame):
    require(agg, ("variant", "upload_goodput_mbps", "lb_reply_bytes_share"))
    fig = new_figure(13, 4)
    ax1, ax2, ax3 = fig.subplots(1, 3, width_ratios=(1.4, 1, 1))
    latency_cdf(records, ax1)
    x = np.arange(len(agg))
    names = [str(v) for v in agg["variant"]]
    ax2.bar(x, agg["upload_goodput_mbps"].astype(float), yerr=_ci(agg, "upload_goodput_mbps"),
            color=[color(i) for i in range(len(agg))], capsize=4)
    ax2.set_xticks(x, names)
    ax2.set_ylim(bottom=0)
    ax2.set_ylabel("Mbit/s")
    ax2.set_title("upload goodput")
    ax3.bar(x, agg["lb_reply_bytes_share"].astype(float),
            yerr=_ci(agg, "lb_reply_bytes_share"),
            color=[color(i) for i in range(len(agg))], capsize=4)
    ax3.axhline(DIRECT_RETURN_MAX_LB_SHARE, color="grey", linestyle="--", linewidth=1,
                label=f"{DIRECT_RETURN_MAX_LB_SHARE:g} (direct return bound)")
    ax3.set_ylim(0, 1.05)
    ax3.set_xticks(x, names)
    ax3.set_title("share of reply bytes through the LB")
    ax3.legend(fontsize=8)
    return fig


def modes_readings(agg: pd.DataFrame) -> list[str]:
    require(agg, ("variant", "lb_reply_bytes_share"))
    out = []
    verdicts = []
    for _, row in agg.iterrows():
        mode, share = mode_of(row), num(row["lb_reply_bytes_share"])
        if math.isnan(share):
            out.append(f"{row['variant']}: no reply bytes counted (lb_reply_bytes_share "
                       f"missing).")
            continue
        if mode in DIRECT_RETURN_MODES:
            ok = share <= DIRECT_RETURN_MAX_LB_SHARE
            verdicts.append(ok)
            out.append(f"{row['variant']}: {share:.1%} of reply bytes crossed the LB (bound "
                       f"{DIRECT_RETURN_MAX_LB_SHARE:.0%}): replies "
                       f"{'bypass' if ok else 'do not bypass'} the balancer — {verdict(ok)}.")
        elif mode == "nat":
            ok = share >= NAT_MIN_LB_SHARE
            verdicts.append(ok)
            out.append(f"{row['variant']}: {share:.1%} of reply bytes crossed the LB "
                       f"(expected ≥ {NAT_MIN_LB_SHARE:.0%} for NAT) — {verdict(ok)}.")
        else:
            out.append(f"{row['variant']}: {share:.1%} of reply bytes crossed the LB.")
    cols = [c for c in ("latency_p50_ms", "latency_p99_ms", "upload_goodput_mbps")
            if c in agg.columns]
    if cols:
        parts = []
        for _, row in agg.iterrows():
            bits = []
            if "latency_p50_ms" in cols:
                bits.append(f"p50 {fmt(row['latency_p50_ms'])} ms")
            if "latency_p99_ms" in cols:
                bits.append(f"p99 {fmt(row['latency_p99_ms'])} ms")
            if "upload_goodput_mbps" in cols:
                bits.append(f"upload {fmt(row['upload_goodput_mbps'])} Mbit/s")
            parts.append(f"{row['variant']} " + ", ".join(bits))
        out.append("Search latency and upload goodput: " + "; ".join(parts) + ".")
    for col, what in (("ok_pct", "search requests"), ("upload_ok_pct", "uploads")):
        if col in agg.columns:
            low = agg[agg[col].astype(float) < MIN_OK_PCT]
            for _, row in low.iterrows():
                out.append(f"{row['variant']}: only {fmt(row[col])}% of {what} succeeded.")
    return out


def render_modes(group: Group) -> Section:
    section = Section()
    section.attempt("vip-modes figure", lambda: section.figure(
        "modes", modes_figure(group.agg, group.records()),
        "Left: latency CDF of successful search requests per mode (all clients, all runs). "
        "Middle: upload goodput. Right: share of the backends' reply bytes handled by the "
        "LB's flows (NAT: all; DSR/GRE: none)."))
    section.attempt("reading", lambda: section.readings.extend(modes_readings(group.agg)))
    return section


# ------------------------------------------------------------------ vip-hashing

def _removal_rows(agg: pd.DataFrame) -> pd.DataFrame:
    if "change" in agg.columns:
        return agg[agg["change"] == "remove"]
    return agg


def hashing_figure(agg: pd.DataFrame):
    require(agg, ("variant", "remap_fraction", "broken_connections"))
    fig = new_figure(12, 4)
    ax1, ax2 = fig.subplots(1, 2)
    variants = list(dict.fromkeys(agg["variant"]))
    x = np.arange(len(variants))
    changes = list(dict.fromkeys(agg["change"])) if "change" in agg.columns else ["change"]
    width = 0.8 / len(changes)
    for j, change in enumerate(changes):
        part = agg[agg["change"] == change] if "change" in agg.columns else agg
        part = part.set_index("variant").reindex(variants).reset_index()
        ax1.bar(x + (j - (len(changes) - 1) / 2) * width, part["remap_fraction"].astype(float),
                width, yerr=_ci(part, "remap_fraction"), label=str(change), color=color(j),
                capsize=3)
    if "backends_before" in agg.columns:
        rem = _removal_rows(agg)
        n = num(rem["backends_before"].iloc[0]) if len(rem) else math.nan
        if not math.isnan(n) and n > 0:
            ax1.axhline(1 / n, color="grey", linestyle="--", linewidth=1,
                        label=f"1/N = 1/{n:g}")
    ax1.set_xticks(x, variants, rotation=30, ha="right")
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("fraction of flow keys remapped")
    ax1.set_title("remapped keys per pool change")
    ax1.legend(fontsize=8)
    one = agg.drop_duplicates("variant").set_index("variant").reindex(variants).reset_index()
    ax2.bar(x - 0.2, one["broken_connections"].astype(float), 0.4,
            yerr=_ci(one, "broken_connections"), label="to surviving backends",
            color="#d62728", capsize=3)
    if "broken_on_removed_backend" in one.columns:
        ax2.bar(x + 0.2, one["broken_on_removed_backend"].astype(float), 0.4,
                yerr=_ci(one, "broken_on_removed_backend"), label="to the removed backend",
                color="#7f7f7f", capsize=3)
    if "live_connections" in one.columns:
        ax2.set_title(f"broken connections (of {fmt(one['live_connections'].max())} live)")
    else:
        ax2.set_title("broken connections")
    ax2.set_xticks(x, variants, rotation=30, ha="right")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8)
    return fig


def _flag(value) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def hashing_readings(agg: pd.DataFrame) -> list[str]:
    require(agg, ("variant", "remap_fraction"))
    out = []
    rem = _removal_rows(agg)
    algo_col = "algorithm" if "algorithm" in agg.columns else None
    for _, row in rem.iterrows():
        algo = row[algo_col] if algo_col else str(row["variant"]).split("-")[0]
        r = num(row["remap_fraction"])
        n = num(row.get("backends_before"))
        n_after = num(row.get("backends_after"))
        change = f"N went {fmt(n)}→{fmt(n_after)}" if not math.isnan(n) else "the pool changed"
        if math.isnan(r):
            continue
        if algo == "maglev" and not math.isnan(n):
            bound = MAGLEV_MAX_REMAP_FACTOR / n
            out.append(f"{row['variant']}: maglev remapped {r:.1%} of keys when {change} "
                       f"(1/N = {1 / n:.1%}, bound {bound:.1%}) — {verdict(r <= bound)}.")
        elif algo == "modn":
            out.append(f"{row['variant']}: mod-N remapped {r:.1%} of keys when {change} "
                       f"(expected ≥ {MODN_MIN_REMAP:.0%}) — {verdict(r >= MODN_MIN_REMAP)}.")
        else:
            out.append(f"{row['variant']}: {algo} remapped {r:.1%} of keys when {change} "
                       f"(its table follows connection counts, not a hash: no claim).")
    if "broken_connections" in agg.columns and "conntrack" in agg.columns:
        per = agg.drop_duplicates("variant")
        ct = per[[_flag(v) is True for v in per["conntrack"]]]
        noct = per[[_flag(v) is False for v in per["conntrack"]]]
        live = fmt(per["live_connections"].max()) if "live_connections" in per.columns else "?"
        if len(ct):
            broken = {r["variant"]: num(r["broken_connections"]) for _, r in ct.iterrows()}
            total = sum(v for v in broken.values() if not math.isnan(v))
            out.append("With connection tracking on, connections to surviving backends broken: "
                       + ", ".join(f"{k} {fmt(v)}" for k, v in broken.items())
                       + f" (of {live} live each) — {verdict(total == 0)}.")
        if len(noct):
            out.append("Without connection tracking: "
                       + ", ".join(f"{r['variant']} broke {fmt(r['broken_connections'])}"
                                   for _, r in noct.iterrows())
                       + f" of {live} connections to surviving backends (a hash that moves "
                         "keys moves live connections).")
    if "max_mean_share" in agg.columns and algo_col:
        mag = agg[agg[algo_col] == "maglev"].drop_duplicates("variant")
        for _, row in mag.iterrows():
            share = num(row["max_mean_share"])
            if not math.isnan(share):
                out.append(f"{row['variant']}: busiest backend gets {share:.2f}× the mean "
                           f"share of keys (bound {MAGLEV_MAX_MEAN_SHARE:.2f}) — "
                           f"{verdict(share <= MAGLEV_MAX_MEAN_SHARE)}.")
    return out


def render_hashing(group: Group) -> Section:
    section = Section()
    section.attempt("vip-hashing figure", lambda: section.figure(
        "hashing", hashing_figure(group.agg),
        "Left: share of synthetic flow keys whose backend changed when one backend was "
        "removed and when it was added back (dashed: 1/N). Right: long-lived connections "
        "that broke."))
    section.attempt("reading", lambda: section.readings.extend(hashing_readings(group.agg)))
    return section
