"""dns-rr (per-DC share over time), dns-geo (nearest-DC share and latency per policy),
dns-failover (timeline of requests around the event); the population experiments' sections
are in experiments/report/dnspop.py."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.report.core import (Group, Section, color, fmt, new_figure, num,
                                     require, truthy, verdict)
from gslb.globalview import DETECT_TARGET_S

# dns-rr
RR_EVEN_MAX_DEV = 0.10       # random picks: every DC's share within 0.10 of 1/N
RR_HERD_MIN_STDDEV = 0.20    # first picks behind one resolver: share swings (stddev over bins)
# dns-geo
GEO_NEAREST_MIN_PCT = 90.0   # "gets its nearest DC": at least 90% of requests
# dns-failover
FAILOVER_SLACK_S = 1.0       # drain within detect + TTL + this much (request spacing, timers)


# ------------------------------------------------------------------ dns-rr

def dc_of_row(records: pd.DataFrame) -> pd.Series:
    """The DC a request went to: its dst_dc, or for failed requests (no reply naming a DC)
    the DC that answered for the same address elsewhere in the records."""
    dcs = records["dst_dc"].where(records["dst_dc"].notna(), "").astype(str)
    if "dst" in records.columns:
        known = records[dcs != ""]
        by_addr = known.groupby("dst")["dst_dc"].agg(lambda s: s.mode().iloc[0]).to_dict()
        fill = records["dst"].map(by_addr).fillna("")
        dcs = dcs.where(dcs != "", fill)
    return dcs


def share_over_time(records: pd.DataFrame, bin_s: float) -> pd.DataFrame:
    """Per variant and time bin, each DC's share of requests (first run only: repetitions
    would blur the timing that the figure is about)."""
    require(records, ("variant", "t_s", "dst_dc"), "records.csv")
    rec = records
    if "_run" in rec.columns:
        rec = rec[rec["_run"] == rec["_run"].min()]
    rec = rec[rec["t_s"].astype(float) >= 0]  # as the experiment bins: from its t0 on
    rec = rec.assign(dc=dc_of_row(rec), bin=(rec["t_s"].astype(float) // bin_s) * bin_s)
    rec = rec[rec["dc"] != ""]
    frames = []
    dcs = sorted(rec["dc"].unique())
    for variant, part in rec.groupby("variant", sort=False):
        # every DC in every bin of the variant, 0 where it got no request
        table = part.groupby(["bin", "dc"]).size().unstack("dc").reindex(columns=dcs)
        table = table.fillna(0)
        shares = table.div(table.sum(axis=1), axis=0)
        long = shares.stack().rename("share").reset_index()
        long["n"] = table.stack().to_numpy()
        frames.append(long.assign(variant=variant))
    if not frames:
        return pd.DataFrame(columns=["variant", "bin", "dc", "n", "share"])
    return pd.concat(frames, ignore_index=True)[["variant", "bin", "dc", "n", "share"]]


def rr_figure(shares: pd.DataFrame, bin_s: float):
    variants = list(dict.fromkeys(shares["variant"]))
    dcs = sorted(shares["dc"].unique())
    ncols = min(4, max(1, len(variants)))
    nrows = math.ceil(len(variants) / ncols)
    fig = new_figure(3.2 * ncols + 1, 2.4 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
                         ).ravel()
    for ax, variant in zip(axes, variants):
        part = shares[shares["variant"] == variant]
        for j, dc in enumerate(dcs):
            series = part[part["dc"] == dc].sort_values("bin")
            ax.plot(series["bin"] + bin_s / 2, series["share"], marker=".", color=color(j),
                    label=dc)
        ax.axhline(1 / len(dcs), color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(variant, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(variants):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, title="DC", title_fontsize=7)
    fig.supxlabel("time in variant (s)")
    fig.supylabel(f"share of requests per {bin_s:g} s bin")
    return fig


def rr_readings(agg: pd.DataFrame) -> list[str]:
    require(agg, ("variant", "dc", "share"))
    out = []
    n_dc = agg["dc"].nunique()
    even = 1 / n_dc if n_dc else math.nan
    picks = agg["pick"] if "pick" in agg.columns else agg["variant"].str.split("-").str[0]
    agg = agg.assign(_pick=picks.astype(str), _dev=(agg["share"].astype(float) - even).abs())
    rand = agg[agg["_pick"] == "random"]
    if len(rand):
        worst = rand.loc[rand["_dev"].idxmax()]
        ok = bool(worst["_dev"] <= RR_EVEN_MAX_DEV)
        out.append(f"Random pick: every DC's share within {fmt(worst['_dev'], 2)} of 1/N = "
                   f"{even:.2f} across {rand['variant'].nunique()} variant(s) (worst "
                   f"{worst['dc']} {fmt(worst['share'], 3)} in {worst['variant']}; bound "
                   f"{RR_EVEN_MAX_DEV:g}) — {verdict(ok)}.")
    first = agg[agg["_pick"] == "first"]
    if len(first):
        per = first.groupby("variant", sort=False).agg(
            top=("share", "max"),
            swing=("share_stddev_over_time", "max") if "share_stddev_over_time" in
            first.columns else ("share", "size"))
        herd = []
        for variant, row in per.iterrows():
            swing = num(row["swing"]) if "share_stddev_over_time" in first.columns else math.nan
            herding = row["top"] - even > RR_EVEN_MAX_DEV or \
                (not math.isnan(swing) and swing >= RR_HERD_MIN_STDDEV)
            herd.append(herding)
            out.append(f"First pick, {variant}: busiest DC {fmt(row['top'], 3)} of requests "
                       f"(1/N = {even:.2f})" + (f", share stddev over time up to {swing:.2f}"
                                                if not math.isnan(swing) else "")
                       + (": clients herd." if herding else ": no herd visible."))
        single = [h for v, h in zip(per.index, herd)
                  if "resolvers" not in first.columns or
                  num(first[first["variant"] == v]["resolvers"].iloc[0]) == 1]
        if single:
            out.append(f"Behind a single resolver, first-record clients "
                       f"{'herd' if all(single) else 'do not all herd'} onto one DC per TTL "
                       f"— {verdict(all(single))}.")
    return out


def render_rr(group: Group) -> Section:
    section = Section()
    bin_s = num(group.param("bin_s", 2.0)) or 2.0

    def fig():
        shares = share_over_time(group.records(), bin_s)
        section.figure("share-over-time", rr_figure(shares, bin_s),
                       f"Share of requests per DC in {bin_s:g} s bins, per variant "
                       f"(pick-TTL-resolvers; first run). Dotted: 1/N.")
    section.attempt("share-over-time figure", fig)
    section.attempt("reading", lambda: section.readings.extend(rr_readings(group.agg)))
    return section


# ------------------------------------------------------------------ dns-geo

def _geo_label(row) -> str:
    return f"{row['client_region']} via {row['resolver']}"


def geo_figure(agg: pd.DataFrame):
    require(agg, ("variant", "client_region", "resolver", "dc_chosen_pct_nearest",
                  "latency_p50_ms"))
    groups = list(dict.fromkeys(_geo_label(r) for _, r in agg.iterrows()))
    variants = list(dict.fromkeys(agg["variant"]))
    fig = new_figure(12, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(variants))
    labels = agg.apply(_geo_label, axis=1)
    for j, variant in enumerate(variants):
        part = agg[agg["variant"] == variant].assign(_g=labels[agg["variant"] == variant])
        part = part.set_index("_g").reindex(groups)
        off = (j - (len(variants) - 1) / 2) * width
        for ax, col in ((ax1, "dc_chosen_pct_nearest"), (ax2, "latency_p50_ms")):
            ci = part.get(f"{col}__ci")
            ax.bar(x + off, part[col].astype(float), width, label=variant, color=color(j),
                   yerr=None if ci is None else ci.fillna(0).astype(float), capsize=3)
    for ax in (ax1, ax2):
        ax.set_xticks(x, groups, rotation=25, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    ax1.axhline(GEO_NEAREST_MIN_PCT, color="grey", linestyle="--", linewidth=1)
    ax1.set_ylim(0, 105)
    ax1.set_ylabel("% of requests to the client's nearest DC")
    ax1.set_title("nearest DC chosen")
    ax2.set_ylabel("ms")
    ax2.set_title("search latency p50")
    return fig


def geo_readings(agg: pd.DataFrame) -> list[str]:
    require(agg, ("variant", "client_region", "resolver", "dc_chosen_pct_nearest"))
    out = []
    if "resolver_region" in agg.columns:
        far_mask = agg["resolver_region"].astype(str) != agg["client_region"].astype(str)
    else:
        far_mask = pd.Series(False, index=agg.index)
    policy = agg["policy"] if "policy" in agg.columns else agg["variant"].str.split("-").str[0]
    ecs = agg["ecs"] if "ecs" in agg.columns else agg["variant"].str.endswith("-ecs")
    ecs = truthy(ecs.astype(str))
    geo = policy.astype(str) == "geo"
    near = agg[~far_mask & geo]
    if len(near):
        low = near[near["dc_chosen_pct_nearest"].astype(float) < GEO_NEAREST_MIN_PCT]
        out.append(f"Clients behind a nearby resolver, policy geo: "
                   f"{len(near) - len(low)} of {len(near)} groups got their nearest DC for "
                   f"≥ {GEO_NEAREST_MIN_PCT:g}% of requests"
                   + (f" (lowest {fmt(low['dc_chosen_pct_nearest'].min())}%)" if len(low) else "")
                   + f" — {verdict(len(low) == 0)}.")
    far = agg[far_mask]
    if far.empty:
        out.append("No client used a distant resolver in this run: the ECS part of the claim "
                   "is not tested.")
        return out
    for (region, resolver), part in far.groupby(["client_region", "resolver"], sort=False):
        with_ecs = part[geo[part.index] & ecs[part.index]]
        without = part[geo[part.index] & ~ecs[part.index]]
        if with_ecs.empty or without.empty:
            continue
        e, n = with_ecs.iloc[0], without.iloc[0]
        pe, pn = num(e["dc_chosen_pct_nearest"]), num(n["dc_chosen_pct_nearest"])
        ok = pe >= GEO_NEAREST_MIN_PCT and pn < GEO_NEAREST_MIN_PCT
        text = (f"Clients of {region} behind distant {resolver}: nearest DC {fmt(pn)}% "
                f"without ECS, {fmt(pe)}% with ECS")
        if "latency_p50_ms" in part.columns:
            le, ln = num(e["latency_p50_ms"]), num(n["latency_p50_ms"])
            text += f"; median latency {fmt(ln)} → {fmt(le)} ms"
            ok = ok and le < ln
        out.append(f"{text} — {verdict(ok)}.")
    return out


def render_geo(group: Group) -> Section:
    section = Section()
    section.attempt("dns-geo figure", lambda: section.figure(
        "geo", geo_figure(group.agg),
        "Per client region and resolver: share of requests sent to the client's nearest DC "
        f"(dashed: {GEO_NEAREST_MIN_PCT:g}%) and median search latency, per policy."))
    section.attempt("reading", lambda: section.readings.extend(geo_readings(group.agg)))
    return section


# ------------------------------------------------------------------ dns-failover

def failover_figure(summary: pd.DataFrame, records: pd.DataFrame):
    require(summary, ("variant", "ttl_s", "detect_s", "drain_s"))
    require(records, ("variant", "t_s", "ok", "dst_dc"), "records.csv")
    rec = records
    if "_run" in rec.columns:
        rec = rec[rec["_run"] == rec["_run"].min()]
    first = summary
    if "_run" in first.columns:
        first = first[first["_run"] == first["_run"].min()]
    rec = rec.assign(dc=dc_of_row(rec).replace("", "(no answer)"))
    rows = list(first.iterrows())
    ncols = min(3, max(1, len(rows)))
    nrows = math.ceil(len(rows) / ncols)
    fig = new_figure(4.2 * ncols, 2.6 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    dcs = sorted(rec["dc"].unique())
    for ax, (_, row) in zip(axes, rows):
        name = f"{row['variant']}-ttl{fmt(row['ttl_s'])}"
        part = rec[rec["variant"] == name]
        if part.empty:
            part = rec[rec["variant"] == row["variant"]]
        ok = truthy(part["ok"])
        y = part["dc"].map({d: i for i, d in enumerate(dcs)})
        ax.scatter(part["t_s"][ok], y[ok], s=4, color="#2ca02c", label="ok")
        ax.scatter(part["t_s"][~ok], y[~ok], s=8, color="#d62728", marker="x", label="failed")
        event = num(part["event_t_s"].iloc[0]) if "event_t_s" in part.columns and len(part) \
            else math.nan
        if not math.isnan(event):
            ax.axvline(event, color="black", linewidth=1, label="event")
            for value, style, label in ((row["detect_s"], "--", "detected"),
                                        (row["drain_s"], ":", "last request to DC")):
                if not math.isnan(num(value)):
                    ax.axvline(event + num(value), color="grey", linestyle=style,
                               label=label)
            if not math.isnan(num(row["detect_s"])):
                ax.axvspan(event + num(row["detect_s"]),
                           event + num(row["detect_s"]) + num(row["ttl_s"]),
                           color="#1f77b4", alpha=0.08, label="TTL after detection")
        ax.set_yticks(range(len(dcs)), dcs, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("s", fontsize=8)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6, loc="upper right")
    return fig


def failover_readings(agg: pd.DataFrame) -> list[str]:
    require(agg, ("variant", "ttl_s", "detect_s", "drain_s"))
    out = []
    for _, row in agg.iterrows():
        name = f"{row['variant']} TTL {fmt(row['ttl_s'])} s"
        detect, drain, ttl = num(row["detect_s"]), num(row["drain_s"]), num(row["ttl_s"])
        failed = fmt(row.get("failed_requests")) if "failed_requests" in agg.columns else "?"
        if math.isnan(detect):
            out.append(f"{name}: the authority never dropped the DC from its answers — "
                       f"{verdict(False)}.")
            continue
        bound = detect + ttl + FAILOVER_SLACK_S
        ok = drain <= bound
        out.append(f"{name}: detected after {fmt(detect, 3)} s"
                   + (f" (target {DETECT_TARGET_S:g} s)" if detect > DETECT_TARGET_S else "")
                   + f", last request reached the DC {fmt(drain, 3)} s after the event "
                     f"(detect + TTL + {FAILOVER_SLACK_S:g} s slack = {fmt(bound, 3)} s), "
                     f"{failed} failed requests meanwhile — {verdict(ok)}.")
    if "failed_requests" in agg.columns and "variant" in agg.columns:
        by = agg.groupby("variant", sort=False)["failed_requests"].mean()
        if "fail" in by.index and "overload" in by.index:
            out.append(f"Failed requests between event and drain (mean over TTLs): "
                       f"fail {fmt(by['fail'])}, overload {fmt(by['overload'])}.")
    return out


def render_failover(group: Group) -> Section:
    section = Section()
    section.attempt("dns-failover timeline", lambda: section.figure(
        "timeline", failover_figure(group.summary, group.records()),
        "Requests over time per variant, by the DC they reached (green ok, red failed); "
        "black: the event, dashed: the authority stops naming the DC, dotted: the last "
        "request that still reached it; shaded: one TTL after detection (first run)."))
    section.attempt("reading", lambda: section.readings.extend(failover_readings(group.agg)))
    return section
