"""Grouping repetitions, confidence intervals, figures on disk, and the parts of a report
every experiment shares (summary table, sections). Run directories are read by
experiments/rundirs.py.

Everything here is a function of the files in the run directories (CSV and metadata.json)
and nothing else: no clock, no network, no randomness, so the same runs give the same
report byte for byte.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pandas.api.types import is_bool_dtype, is_numeric_dtype  # noqa: E402

from experiments.rundirs import RunData  # noqa: E402

CI_LEVEL = 0.95
# Two-sided 95% Student t quantiles by degrees of freedom (no scipy in the venv); for a df
# between table entries the next smaller df is used (a slightly wider, conservative CI).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042,
       40: 2.021, 60: 2.000, 120: 1.980}
Z95 = 1.960
BOOKKEEPING = ("run_id", "repetition", "_run", "_row")


class MissingColumns(Exception):
    def __init__(self, source: str, missing: list[str]):
        self.source, self.missing = source, missing
        super().__init__(f"{source} has no column(s) {', '.join(missing)}")


def require(df: pd.DataFrame, columns, source: str = "summary.csv") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingColumns(source, missing)


# ---------------------------------------------------------------------------------------
# statistics

def t95(df: int) -> float:
    if df < 1:
        return math.nan
    usable = [k for k in T95 if k <= df]
    return T95[max(usable)] if df <= max(T95) else Z95


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the t-based 95% CI, n) of the non-missing values; the half-width
    is NaN for fewer than two values."""
    data = [float(v) for v in values if v is not None and not _isnan(v)]
    n = len(data)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(data) / n
    if n < 2:
        return mean, math.nan, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in data) / (n - 1))
    return mean, t95(n - 1) * sd / math.sqrt(n), n


def _isnan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def num(value) -> float:
    """A CSV cell as a float; missing or not a number -> NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def truthy(series: pd.Series) -> pd.Series:
    """A CSV column of true/false (bool, or text) as bool; missing -> False."""
    if is_bool_dtype(series):
        return series.fillna(False).astype(bool)
    return series.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


# ---------------------------------------------------------------------------------------
# groups of repetitions

@dataclass
class Group:
    experiment: str
    runs: list[RunData]
    keys: tuple[str, ...]
    summary: pd.DataFrame       # every run's rows, with run_id / repetition / _run
    agg: pd.DataFrame           # one row per key: numeric means, <col>__ci, <col>__n
    numeric: list[str]          # the metric columns (averaged)
    label: str = ""             # distinguishes groups of the same experiment
    _records: pd.DataFrame | None = None

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def metadata(self) -> dict:
        return self.runs[0].metadata

    def param(self, name, default=None):
        return (self.metadata.get("parameters") or {}).get(name, default)

    def records(self) -> pd.DataFrame:
        """All runs' records.csv rows, with `_run` (index of the run in this group)."""
        if self._records is None:
            frames = []
            for i, run in enumerate(self.runs):
                rec = run.records
                if not rec.empty:
                    frames.append(rec.assign(_run=i))
            self._records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return self._records

    def ci(self, row, column: str) -> float:
        value = row.get(f"{column}__ci") if hasattr(row, "get") else None
        return math.nan if value is None else float(value)


def group_runs(runs: list[RunData]) -> list[Group]:
    """Runs -> groups of repetitions (same experiment, size, parameters, mechanisms), in
    suite order. Repetitions' summary rows are matched by the experiment's key columns,
    after its `comparable` view of the summary where it has one (as `lblab compare`
    matches two runs)."""
    from experiments.registry import comparable, key_columns, suite_rank
    buckets: dict[str, list[RunData]] = {}
    for run in runs:
        buckets.setdefault(run.group_key(), []).append(run)
    groups = []
    for members in buckets.values():
        members.sort(key=lambda r: (r.repetition, r.run_id))
        exp = members[0].experiment
        frames = [(comparable(exp, r.summary) if len(members) > 1 else r.summary)
                  .assign(run_id=r.run_id, repetition=r.repetition, _run=i)
                  for i, r in enumerate(members) if not r.summary.empty]
        summary = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        keys = key_columns(exp, list(summary.columns))
        if not keys and not summary.empty:
            summary["_row"] = summary.groupby("_run").cumcount()
            keys = ("_row",)
        agg, numeric = aggregate(summary, keys, len(members))
        groups.append(Group(experiment=exp, runs=members, keys=keys, summary=summary,
                            agg=agg, numeric=numeric))
    groups.sort(key=lambda g: (suite_rank(g.experiment), g.runs[0].run_id))
    by_exp: dict[str, list[Group]] = {}
    for g in groups:
        by_exp.setdefault(g.experiment, []).append(g)
    for same in by_exp.values():
        if len(same) > 1:
            for i, g in enumerate(same, 1):
                g.label = f"set {i} ({'quick' if g.metadata.get('quick') else 'full'})"
    return groups


def metric_columns(summary: pd.DataFrame, keys) -> list[str]:
    return [c for c in summary.columns if c not in keys and c not in BOOKKEEPING
            and is_numeric_dtype(summary[c]) and not is_bool_dtype(summary[c])]


def aggregate(summary: pd.DataFrame, keys, n_runs: int) -> tuple[pd.DataFrame, list[str]]:
    """Per key: the mean of each numeric column over runs, its 95% CI half-width (`__ci`)
    and the number of values (`__n`); other columns keep their value when every run agrees
    and read "varies" otherwise. One run: the summary itself."""
    if summary.empty:
        return summary, []
    numeric = metric_columns(summary, keys)
    if n_runs <= 1:
        return summary.drop(columns=[c for c in BOOKKEEPING if c in summary.columns]), numeric
    other = [c for c in summary.columns if c not in keys and c not in numeric
             and c not in BOOKKEEPING]
    rows = []
    for key, part in summary.groupby(list(keys), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        for col in other:
            values = {str(v) for v in part[col].tolist()}
            row[col] = part[col].iloc[0] if len(values) == 1 else "varies"
        for col in numeric:
            mean, half, n = mean_ci(part[col].tolist())
            row[col], row[f"{col}__ci"], row[f"{col}__n"] = mean, half, n
        rows.append(row)
    order = []
    for col in summary.columns:
        if col in BOOKKEEPING:
            continue
        order.append(col)
        if col in numeric:
            order += [f"{col}__ci", f"{col}__n"]
    return pd.DataFrame(rows)[order], numeric


# ---------------------------------------------------------------------------------------
# formatting

def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "–"
    if x.is_integer() and abs(x) < 1e12:
        return str(int(x))
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def fmt_ci(mean, half) -> str:
    if half is None or _isnan(half) or _isnan(mean) or float(half) == 0:
        return fmt(mean)
    return f"{fmt(mean)} ± {fmt(half, 2)}"


def summary_table(group: Group, max_rows: int = 60) -> tuple[list[str], list[list[str]]]:
    agg = group.agg
    if agg.empty:
        return [], []
    cols = [c for c in agg.columns if not c.endswith("__ci") and not c.endswith("__n")
            and c not in BOOKKEEPING]
    rows = []
    for _, row in agg.head(max_rows).iterrows():
        cells = []
        for c in cols:
            if f"{c}__ci" in agg.columns:
                cells.append(fmt_ci(row[c], row[f"{c}__ci"]))
            else:
                cells.append(fmt(row[c]))
        rows.append(cells)
    return cols, rows


# ---------------------------------------------------------------------------------------
# figures

class FigureWriter:
    """Saves matplotlib figures as PNG under <out>/figures/ with stable bytes."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.fig_dir = self.out_dir / "figures"

    def save(self, fig: Figure, name: str) -> str:
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        FigureCanvasAgg(fig)
        path = self.fig_dir / f"{name}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
        tmp.replace(path)
        return f"figures/{path.name}"


def new_figure(width: float = 10, height: float = 4) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# ---------------------------------------------------------------------------------------
# what a renderer returns

@dataclass
class Section:
    figures: list[tuple[str, Figure, str]] = field(default_factory=list)  # name, fig, caption
    readings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def attempt(self, what: str, fn: Callable[[], None]) -> None:
        """Run one part of a renderer; a missing column or a failure becomes a note."""
        try:
            fn()
        except MissingColumns as exc:
            self.notes.append(f"{what}: not produced, {exc}.")
        except Exception as exc:  # a renderer bug must not cost the whole report
            self.notes.append(f"{what}: not produced ({type(exc).__name__}: {exc}).")

    def figure(self, name: str, fig: Figure | None, caption: str) -> None:
        if fig is not None:
            self.figures.append((name, fig, caption))


def verdict(ok: bool) -> str:
    return "consistent with the chapter" if ok else "**contradicts the chapter**"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
