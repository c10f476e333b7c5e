"""Reproducibility tolerances: when two runs of one experiment agree (`lblab compare`).

Each experiment declares its tolerances per summary metric in its own module
(`Experiment.tolerances`). A key "metric[column=value]" applies to the rows whose `column`
equals `value` and takes precedence over the plain "metric"; metrics not listed are not
compared. Calibrated for two quick suites on one 2-core machine: the noisy parts (tail
latencies, counts that depend on kernel-chosen source ports or on scheduling) get wide
bounds on purpose, the deterministic ones (hash tables from seeded keys) tight ones.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Tol:
    """Two values agree when |a - b| <= abs, or <= rel * max(|a|, |b|) (either suffices).
    Both missing agree; one missing does not. Neither abs nor rel: listed (with why) but not
    compared."""
    abs: float | None = None
    rel: float | None = None
    why: str = ""

    def agrees(self, a, b) -> bool:
        if self.abs is None and self.rel is None:
            return True
        a_missing, b_missing = _missing(a), _missing(b)
        if a_missing or b_missing:
            return a_missing and b_missing
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return str(a) == str(b)
        diff = abs(a - b)
        if self.abs is not None and diff <= self.abs + 1e-9:
            return True
        return self.rel is not None and diff <= self.rel * max(abs(a), abs(b)) + 1e-9

    def text(self, unit: str = "") -> str:
        parts = []
        if self.abs is not None:
            parts.append("exact" if self.abs == 0 else f"±{self.abs:g}{unit}")
        if self.rel is not None:
            parts.append(f"±{self.rel * 100:g} %")
        return " or ".join(parts) or "not compared"


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


UNITS = {"_ms": " ms", "_s": " s", "_pct": " pp", "_mbps": " Mbit/s"}


def unit_of(metric: str) -> str:
    for suffix, unit in UNITS.items():
        if metric.split("[")[0].endswith(suffix):
            return unit
    return ""


_QUALIFIED = re.compile(r"^(?P<metric>[^\[]+)\[(?P<col>[^=\]]+)=(?P<value>[^\]]*)\]$")


def tolerance_for(table: Mapping[str, Tol], metric: str, row: dict | None = None
                  ) -> Tol | None:
    """The tolerance of `metric` for one summary row, from an experiment's table."""
    for key, tol in table.items():
        m = _QUALIFIED.match(key)
        if m and m["metric"] == metric and row is not None and \
                _text(row.get(m["col"])) == m["value"]:
            return tol
    return table.get(metric)


def compared_metrics(table: Mapping[str, Tol]) -> list[str]:
    out = []
    for key in table:
        metric = key.split("[")[0]
        if metric not in out:
            out.append(metric)
    return out


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def markdown(tables: Iterable[tuple[str, Mapping[str, Tol]]]) -> str:
    """(experiment, tolerances) pairs as a markdown table (quoted by the README)."""
    lines = ["| experiment | metric | rows | two runs agree when they differ by at most | why |",
             "|---|---|---|---|---|"]
    for exp, table in tables:
        for key, tol in table.items():
            m = _QUALIFIED.match(key)
            metric, rows = (m["metric"], f"{m['col']}={m['value']}") if m else (key, "all")
            lines.append(f"| {exp} | `{metric}` | {rows} | {tol.text(unit_of(metric))} | "
                         f"{tol.why} |")
    return "\n".join(lines) + "\n"
