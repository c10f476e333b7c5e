"""Load lblab results into pandas for analysis.

    from experiments.analysis import load_run, load_runs
    run = load_run("results/vip-modes/20261127T035022-vip-modes-dae4")
    run.records.groupby("variant").latency_ms.describe()
    run.summary
    run.metadata["mechanisms"]

`load_runs("results/vip-modes")` concatenates every published run of an experiment (hidden
partial directories of interrupted runs are skipped), with a `run_id` column to tell them
apart. Runs load exactly as the report reads them (experiments/rundirs.py).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.rundirs import RunData, load_run, published_runs

__all__ = ["RunData", "load_run", "load_runs"]


def load_runs(experiment_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, summary) of every published run under results/<experiment>/."""
    runs = published_runs(experiment_dir)
    summaries = [r.summary.assign(run_id=r.run_id) for r in runs]
    return (pd.concat([r.records for r in runs], ignore_index=True),
            pd.concat(summaries, ignore_index=True))
