"""gre-mtu: uploads and searches through a GRE VIP per MTU fix."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.report.core import (Group, Section, color, fmt, new_figure, num, require,
                                     verdict)

FIXED_MIN_UPLOAD_OK_PCT = 99.0     # with a fix, (almost) every large upload completes
SMALL_OK_MIN_PCT = 99.0            # no-fix: small requests still work
BROKEN_MAX_UPLOAD_OK_PCT = 50.0    # no-fix: large uploads fail (most of them)
FIX_VARIANTS = ("mss-clamp", "jumbo-underlay", "icmp-frag-needed")


def figure(agg: pd.DataFrame):
    require(agg, ("variant", "upload_ok_pct", "search_ok_pct"))
    fig = new_figure(11, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    names = [str(v) for v in agg["variant"]]
    x = np.arange(len(names))
    for off, col, label, c in ((-0.2, "upload_ok_pct", "uploads", color(0)),
                               (0.2, "search_ok_pct", "searches", color(1))):
        ci = agg.get(f"{col}__ci")
        ax1.bar(x + off, agg[col].astype(float), 0.4, label=label, color=c,
                yerr=None if ci is None else ci.fillna(0).astype(float), capsize=3)
    ax1.set_ylim(0, 119)
    ax1.set_xticks(x, names, rotation=20, ha="right")
    ax1.set_ylabel("% ok")
    ax1.set_title("completed uploads and searches")
    ax1.legend(fontsize=8, ncol=2, loc="upper center")
    if "upload_goodput_mbps" in agg.columns:
        ci = agg.get("upload_goodput_mbps__ci")
        ax2.bar(x, agg["upload_goodput_mbps"].astype(float),
                color=[color(i) for i in range(len(names))],
                yerr=None if ci is None else ci.fillna(0).astype(float), capsize=3)
        ax2.set_title("goodput of completed uploads")
        ax2.set_ylabel("Mbit/s")
    else:
        ax2.text(0.5, 0.5, "no upload_goodput_mbps column", ha="center",
                 transform=ax2.transAxes)
    ax2.set_xticks(x, names, rotation=20, ha="right")
    ax2.set_ylim(bottom=0)
    return fig


def readings(agg: pd.DataFrame) -> list[str]:
    require(agg, ("variant", "upload_ok_pct"))
    out = []
    for _, row in agg.iterrows():
        variant = str(row["variant"])
        up = num(row["upload_ok_pct"])
        search = num(row.get("search_ok_pct"))
        text = f"{variant}: {fmt(up)}% of uploads completed"
        if not math.isnan(search):
            text += f", {fmt(search)}% of searches"
        if "upload_goodput_mbps" in agg.columns and not math.isnan(num(row["upload_goodput_mbps"])):
            text += f", {fmt(row['upload_goodput_mbps'])} Mbit/s"
        if variant == "no-fix":
            ok = up <= BROKEN_MAX_UPLOAD_OK_PCT and (math.isnan(search) or
                                                     search >= SMALL_OK_MIN_PCT)
            text += (f" (expected: large uploads fail, small requests work) — {verdict(ok)}.")
        elif variant in FIX_VARIANTS:
            ok = up >= FIXED_MIN_UPLOAD_OK_PCT
            text += f" (expected ≥ {FIXED_MIN_UPLOAD_OK_PCT:g}%) — {verdict(ok)}."
        else:
            text += "."
        out.append(text)
    return out


def render(group: Group) -> Section:
    section = Section()
    section.attempt("gre-mtu figure", lambda: section.figure(
        "gre-mtu", figure(group.agg),
        "Per MTU variant: share of uploads and searches through the GRE VIP that completed, "
        "and goodput of the completed uploads."))
    section.attempt("reading", lambda: section.readings.extend(readings(group.agg)))
    return section
