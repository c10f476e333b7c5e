"""dns-rr (per-DC share over time), dns-rr-pop (the herd against the number of resolvers),
dns-geo-pop, dns-failover-pop (failed requests and added latency per behaviour), dns-geo (nearest-DC share and latency per policy),
dns-failover (timeline of requests around the event)."""
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
