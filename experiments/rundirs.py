"""Reading run directories back: one loader for the report, `lblab compare` and pandas users.

A run directory (results/<experiment>/<run-id>/) holds metadata.json, summary.csv and
records.csv (experiments/results.py writes them). Only metadata.json makes a directory a
run: a missing summary becomes an empty table and a note, missing records an empty table.
`ok` columns of records are typed (nullable boolean), CSVs that hold only a header load as
empty tables. A suite directory (results/suite/<id>/) lists its runs in manifest.json;
hidden `.<run-id>.partial` directories of interrupted runs are never runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lab import fidelity
from topologies.system import InputError


@dataclass
class RunData:
    path: Path
    metadata: dict
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    _records: pd.DataFrame | None = None

    @property
    def experiment(self) -> str:
        return self.metadata.get("experiment") or self.path.parent.name

    @property
    def run_id(self) -> str:
        return self.metadata.get("run_id") or self.path.name

    @property
    def repetition(self) -> int:
        return int(self.metadata.get("repetition") or 0)

    @property
    def records(self) -> pd.DataFrame:
        """records.csv (read on first use: it is the large file)."""
        if self._records is None:
            path = self.path / "records.csv"
            records = read_csv(path) if path.exists() else pd.DataFrame()
            if "ok" in records:
                records["ok"] = records["ok"].astype("boolean")
            self._records = records
        return self._records

    @property
    def fidelity(self) -> dict:
        """The runner's fidelity flags (metadata `fidelity`, lab/fidelity.py). Runs made
        before the runner recorded them get the same flags derived from the same metadata
        with the same thresholds."""
        if "fidelity" in self.metadata:
            return self.metadata["fidelity"]
        m = self.metadata
        entries = [e for net in (m.get("calibration") or []) for e in (net or [])
                   if isinstance(e, dict)]
        flags = fidelity.flags((m.get("mechanisms") or {}).get("link_delay"), entries,
                               m.get("cpu_starved_share_pct"))
        flags["cpu_starved"] = bool(m.get("cpu_starved"))
        return flags

    def group_key(self) -> str:
        """Runs with the same experiment, size and parameters are repetitions of each other."""
        mech = self.metadata.get("mechanisms") or {}
        return json.dumps([self.experiment, bool(self.metadata.get("quick")),
                           self.metadata.get("parameters", {}),
                           (self.metadata.get("scenario") or {}).get("name"),
                           mech.get("ovs_datapath"), mech.get("link_delay"),
                           mech.get("gre_decap")], sort_keys=True, default=str)


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "metadata.json").is_file()


def is_suite_dir(path: Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def load_run(path) -> RunData:
    """A run directory -> RunData (DataFrames from its CSVs, metadata as a dict)."""
    path = Path(path)
    if not is_run_dir(path):
        raise InputError(f"{path}: not an lblab run directory (no metadata.json)")
    try:
        metadata = json.loads((path / "metadata.json").read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}/metadata.json: not valid JSON ({exc})") from None
    notes = []
    summary_path = path / "summary.csv"
    if summary_path.exists():
        summary = read_csv(summary_path)
    else:
        summary = pd.DataFrame()
        notes.append(f"run {path.name} has no summary.csv")
    return RunData(path=path, metadata=metadata, summary=summary, notes=notes)


def published_runs(experiment_dir) -> list[RunData]:
    """Every published run under results/<experiment>/, oldest first."""
    runs = [load_run(p) for p in sorted(Path(experiment_dir).iterdir())
            if p.is_dir() and not p.name.startswith(".") and is_run_dir(p)]
    if not runs:
        raise InputError(f"{experiment_dir}: no published runs")
    return runs


@dataclass
class Inputs:
    runs: list[RunData]
    manifest: dict | None
    suite_dir: Path | None
    out_dir: Path
    notes: list[str]


def load_inputs(paths, out_dir: Path | None = None) -> Inputs:
    """Suite directories and/or run directories -> their runs. Reports are written to the
    suite directory (first one given), else to the parent of the first run directory."""
    runs: list[RunData] = []
    notes: list[str] = []
    manifest = suite_dir = None
    seen: set[Path] = set()
    if not paths:
        raise InputError("lblab report: give at least one suite or run directory")
    for raw in paths:
        path = Path(raw)
        if is_suite_dir(path):
            m = json.loads((path / "manifest.json").read_text())
            if manifest is None:
                manifest, suite_dir = m, path
            for entry in m.get("runs", []):
                if not entry.get("run_dir"):
                    continue
                run_path = (path / entry["run_dir"]).resolve()
                if not is_run_dir(run_path):
                    notes.append(f"{entry['experiment']} run {entry['run_dir']} listed in "
                                 f"the manifest is missing")
                    continue
                if run_path not in seen:
                    seen.add(run_path)
                    runs.append(load_run(run_path))
        elif is_run_dir(path):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                runs.append(load_run(path))
        elif path.is_dir():
            raise InputError(f"{path}: neither a suite directory (manifest.json) nor a run "
                             f"directory (metadata.json)")
        else:
            raise InputError(f"{path}: no such directory")
    if out_dir is None:
        if suite_dir is not None:
            out_dir = suite_dir
        else:
            out_dir = Path(paths[0]).parent
    return Inputs(runs=runs, manifest=manifest, suite_dir=suite_dir, out_dir=Path(out_dir),
                  notes=notes)
