"""Result files of a run: tidy CSV with a fixed schema, and metadata JSON, written atomically.

`records.csv` has one row per measured event (request, flow, query, probe) with at least
RECORD_COLUMNS, in that order, then any experiment-specific columns. Every file is written to a
temporary name and renamed, and the whole run directory is assembled under a hidden name and
renamed into place at the end, so a reader never sees a half-written file or run.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from topologies.state import write_atomic

RECORD_COLUMNS = ("run_id", "experiment", "variant", "repetition", "t_s", "src", "src_region",
                  "dst", "dst_dc", "vip", "backend", "workload", "latency_ms", "bytes", "ok",
                  "error")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def csv_text(rows: Iterable[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def columns_of(rows: list[dict], leading: Sequence[str]) -> list[str]:
    """The leading schema columns, then every other key seen, in first-seen order."""
    cols = list(leading)
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


def write_csv(path: Path, rows: list[dict], leading: Sequence[str] = ()) -> None:
    write_atomic(path, csv_text(rows, columns_of(rows, leading)))


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class RunDir:
    """results/<experiment>/<run-id>/, assembled in a hidden sibling and published at the end."""

    def __init__(self, root: Path, experiment: str, run_id: str):
        self.final = Path(root) / experiment / run_id
        self.work = Path(root) / experiment / f".{run_id}.partial"
        self.work.mkdir(parents=True, exist_ok=False)

    def path(self, name: str) -> Path:
        return self.work / name

    def publish(self) -> Path:
        os.replace(self.work, self.final)
        return self.final

    def discard(self, keep_logs_in: Path | None = None) -> Path | None:
        """Remove the unfinished run (no half-written results). Its *.log files (controller,
        authority, ...) explain the failure, so they are moved to `keep_logs_in` first if
        given; returns that folder if anything was kept."""
        kept = None
        logs = sorted(self.work.rglob("*.log")) if self.work.is_dir() else []
        if keep_logs_in is not None and logs:
            shutil.rmtree(keep_logs_in, ignore_errors=True)
            for f in logs:
                dest = Path(keep_logs_in) / f.relative_to(self.work)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(f), dest)
            kept = Path(keep_logs_in)
        shutil.rmtree(self.work, ignore_errors=True)
        return kept
