"""A run directory loads into pandas with the schema columns and typed ok flags."""
from __future__ import annotations

import pytest

from experiments.analysis import load_run, load_runs
from experiments.results import RECORD_COLUMNS, RunDir, write_csv, write_json
from topologies.system import InputError


def make_run(root, run_id):
    rd = RunDir(root, "demo", run_id)
    write_csv(rd.path("records.csv"), [{"run_id": run_id, "latency_ms": 1.5, "ok": True},
                                       {"run_id": run_id, "latency_ms": None, "ok": False,
                                        "error": "timeout"}], RECORD_COLUMNS)
    write_csv(rd.path("summary.csv"), [{"variant": "a", "ok_pct": 50.0}])
    write_json(rd.path("metadata.json"), {"run_id": run_id, "mechanisms": {"link_delay": "x"}})
    return rd.publish()


def test_load_run_and_runs(tmp_path):
    path = make_run(tmp_path, "r1")
    make_run(tmp_path, "r2")
    RunDir(tmp_path, "demo", "r3")  # an interrupted run: hidden partial dir, never loaded
    run = load_run(path)
    assert list(run.records.columns[:len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert run.records["ok"].tolist() == [True, False]
    assert run.metadata["mechanisms"]["link_delay"] == "x"
    records, summary = load_runs(tmp_path / "demo")
    assert sorted(summary.run_id) == ["r1", "r2"] and len(records) == 4


def test_not_a_run_dir(tmp_path):
    with pytest.raises(InputError, match="not an lblab run directory"):
        load_run(tmp_path)
