"""`lblab compare RUN_A RUN_B`: do two runs of one experiment (or two suites) agree within the
tolerances each experiment declares (experiments/tolerance.py)? Rows are matched by the
experiment's key columns (after its `comparable` view of the summary, where it has one),
suites' runs by (experiment, repetition)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from experiments import rundirs
from experiments.report.core import fmt
from experiments.rundirs import RunData
from experiments.tolerance import compared_metrics, tolerance_for, unit_of
from topologies.system import InputError


@dataclass
class Check:
    experiment: str
    row: str
    metric: str
    a: object
    b: object
    tolerance: str
    ok: bool

    @property
    def diff(self) -> str:
        try:
            d = abs(float(self.a) - float(self.b))
            return "–" if math.isnan(d) else fmt(d, 3)
        except (TypeError, ValueError):
            return "–"


def _row_key(row: dict, keys) -> str:
    return " ".join(f"{k}={fmt(row.get(k))}" for k in keys) or "(row)"


def compare_runs(a: RunData, b: RunData) -> tuple[list[Check], list[str]]:
    """Checks of every toleranced metric on every summary row, and notes on what makes the
    two runs not like for like (parameters, seeds, mechanisms)."""
    from experiments.registry import comparable, key_columns, tolerances
    exp = a.experiment
    notes = []
    if b.experiment != exp:
        raise InputError(f"cannot compare {a.path} ({exp}) with {b.path} ({b.experiment}): "
                         f"different experiments")
    for field_, what in (("parameters", "parameters"), ("quick", "size (quick/full)"),
                         ("seed", "seeds"), ("mechanisms", "mechanisms")):
        va, vb = a.metadata.get(field_), b.metadata.get(field_)
        if va != vb:
            if isinstance(va, dict) and isinstance(vb, dict):
                keys = sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))
                va = {k: va.get(k) for k in keys}
                vb = {k: vb.get(k) for k in keys}
            notes.append(f"{exp}: the runs differ in {what}: {va} vs {vb}")
    for run in (a, b):
        flags = run.fidelity
        if flags.get("cpu_starved"):
            notes.append(f"{exp}: run {run.run_id} was CPU-starved (min idle "
                         f"{run.metadata.get('min_cpu_idle_pct')}%)")
        if flags.get("link_delay_none"):
            notes.append(f"{exp}: run {run.run_id} had no link delay mechanism")
        if flags.get("calibration_off"):
            notes.append(f"{exp}: run {run.run_id}: {len(flags['calibration_off'])} WAN "
                         f"path(s) off their configured RTT at calibration")
    table = tolerances(exp)
    metrics = compared_metrics(table)
    if not metrics:
        notes.append(f"{exp}: no tolerances defined: nothing compared")
        return [], notes
    sa, sb = comparable(exp, a.summary), comparable(exp, b.summary)
    keys = key_columns(exp, list(sa.columns) or list(sb.columns))
    rows_a = _rows(sa, keys)
    rows_b = _rows(sb, keys)
    checks = []
    for key in list(rows_a) + [k for k in rows_b if k not in rows_a]:
        ra, rb = rows_a.get(key), rows_b.get(key)
        if ra is None or rb is None:
            checks.append(Check(exp, key, "(row)", "present" if ra else "missing",
                                "present" if rb else "missing", "row in both", False))
            continue
        for metric in metrics:
            tol = tolerance_for(table, metric, ra)
            if tol is None or (tol.abs is None and tol.rel is None):
                continue
            va, vb = ra.get(metric), rb.get(metric)
            if metric not in sa.columns and metric not in sb.columns:
                continue
            checks.append(Check(exp, key, metric, va, vb, tol.text(unit_of(metric)),
                                tol.agrees(va, vb)))
    return checks, notes


def _rows(df, keys) -> dict[str, dict]:
    out = {}
    for i, row in enumerate(df.to_dict("records")):
        key = _row_key(row, keys) if keys else f"row {i}"
        out[key] = row
    return out


def compare_paths(path_a: Path, path_b: Path) -> tuple[list[Check], list[str]]:
    a_suite, b_suite = rundirs.is_suite_dir(path_a), rundirs.is_suite_dir(path_b)
    if a_suite != b_suite:
        raise InputError("compare two run directories or two suite directories, not one of "
                         "each")
    if not a_suite:
        return compare_runs(rundirs.load_run(path_a), rundirs.load_run(path_b))
    runs_a = _suite_runs(path_a)
    runs_b = _suite_runs(path_b)
    checks, notes = [], []
    for key in list(runs_a) + [k for k in runs_b if k not in runs_a]:
        ra, rb = runs_a.get(key), runs_b.get(key)
        exp, rep = key
        if ra is None or rb is None:
            checks.append(Check(exp, f"repetition {rep}", "(run)",
                                "present" if ra else "missing", "present" if rb else "missing",
                                "run in both", False))
            continue
        c, n = compare_runs(ra, rb)
        if rep:
            for check in c:
                check.row = f"rep {rep}: {check.row}"
        checks += c
        notes += n
    return checks, notes


def _suite_runs(path: Path) -> dict[tuple[str, int], RunData]:
    inputs = rundirs.load_inputs([path])
    return {(r.experiment, r.repetition): r for r in inputs.runs}


def render_text(checks: list[Check], notes: list[str], failures_only: bool = False) -> str:
    shown = [c for c in checks if not c.ok] if failures_only else checks
    cols = ("experiment", "row", "metric", "A", "B", "|A-B|", "tolerance", "agree")
    rows = [(c.experiment, c.row, c.metric, fmt(c.a), fmt(c.b), c.diff, c.tolerance,
             "yes" if c.ok else "NO") for c in shown]
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(cols)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(cols, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    bad = sum(not c.ok for c in checks)
    lines.append("")
    lines += [f"note: {n}" for n in notes]
    lines.append(f"{len(checks) - bad} of {len(checks)} values agree within tolerance"
                 + (f"; {bad} do NOT" if bad else ""))
    return "\n".join(lines)
