"""Load lblab results into pandas for analysis.

    from experiments.analysis import load_run, load_runs
    run = load_run("results/vip-modes/20261127T035022-vip-modes-dae4")
    run.records.groupby("variant").latency_ms.describe()
    run.summary
    run.metadata["mechanisms"]

`load_runs("results/vip-modes")` concatenates every published run of an experiment (hidden
partial directories of interrupted runs are skipped), with a `run_id` column to tell them apart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Run:
    path: Path
    records: pd.DataFrame
    summary: pd.DataFrame
    metadata: dict

    @property
    def run_id(self) -> str:
        return self.metadata.get("run_id", self.path.name)


def load_run(path) -> Run:
    path = Path(path)
    missing = [n for n in ("records.csv", "summary.csv", "metadata.json")
               if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: not an lblab run directory (missing "
                                f"{', '.join(missing)})")
    records = pd.read_csv(path / "records.csv")
    if "ok" in records:
        records["ok"] = records["ok"].astype("boolean")
    return Run(path, records, pd.read_csv(path / "summary.csv"),
               json.loads((path / "metadata.json").read_text()))


def load_runs(experiment_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, summary) of every published run under results/<experiment>/."""
    runs = [load_run(p) for p in sorted(Path(experiment_dir).iterdir())
            if p.is_dir() and not p.name.startswith(".")]
    if not runs:
        raise FileNotFoundError(f"{experiment_dir}: no published runs")
    summaries = [r.summary.assign(run_id=r.run_id) for r in runs]
    return (pd.concat([r.records for r in runs], ignore_index=True),
            pd.concat(summaries, ignore_index=True))
