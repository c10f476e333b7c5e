"""Reports built from run directories alone: `lblab report RUN_DIR...` (report.md,
report.html, figures/*.png) and `lblab compare RUN_A RUN_B` (the tolerances each experiment
declares, experiments/tolerance.py).

Layout: core (repetitions and confidence intervals, tables, figure files), doc
(markdown/HTML), build (header and chapters), compare, and one module per experiment family
(rtt, vip, gre, dns) with pure functions DataFrame -> Figure / readings; each experiment
names its renderer (Experiment.renderer). Run directories are read by experiments/rundirs.py.
"""
from __future__ import annotations


def build_report(paths, out_dir=None):
    from experiments.report.build import build_report as _build
    return _build(paths, out_dir)


def load_run(path):
    """A run directory -> RunData: .metadata (dict), .summary and .records (DataFrames)."""
    from experiments.rundirs import load_run as _load
    return _load(path)
