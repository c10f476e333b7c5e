"""Report core: statistics, grouping of repetitions, header, determinism, robustness."""
from __future__ import annotations

import math

import pytest

from experiments.report import build_report
from experiments.report.core import aggregate, fmt, fmt_ci, group_runs, mean_ci, t95
from experiments.rundirs import load_inputs, load_run
from report_helpers import make_run, make_suite, rtt_rows
from topologies.system import InputError


def test_mean_ci_student_t():
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)
    assert math.isnan(mean_ci([5.0])[1])
    assert mean_ci([None, float("nan")])[2] == 0
    assert t95(11) == 2.228 and t95(1000) == 1.96


def test_fmt():
    assert fmt(None) == "–" and fmt(float("nan")) == "–"
    assert fmt(3.0) == "3" and fmt(0.13131) == "0.1313" and fmt(20000.4) == "20000"
    assert fmt_ci(2.0, 0.5) == "2 ± 0.5" and fmt_ci(2.0, 0.0) == "2"


def test_aggregate_repetitions(tmp_path):
    runs = [load_run(make_run(tmp_path, "rtt-matrix", rtt_rows(off), seed=s, repetition=s - 1))
            for s, off in ((1, 0.2), (2, 0.4), (3, 0.6))]
    (group,) = group_runs(runs)
    assert group.n_runs == 3 and group.keys == ("src", "dst")
    row = group.agg.iloc[0]
    assert row["measured_rtt_ms"] == pytest.approx(6.4)
    assert row["measured_rtt_ms__ci"] == pytest.approx(4.303 * 0.2 / math.sqrt(3), rel=1e-3)
    assert row["link_delay"] == "relay"
    # the table keeps the experiment's column order
    assert list(group.agg.columns)[:3] == ["src", "dst", "configured_rtt_ms"]


def test_runs_with_other_parameters_or_mechanisms_are_not_pooled(tmp_path):
    a = make_run(tmp_path, "rtt-matrix", rtt_rows(), seed=1)
    b = make_run(tmp_path, "rtt-matrix", rtt_rows(), seed=2, parameters={"x": 2})
    c = make_run(tmp_path, "rtt-matrix", rtt_rows(), seed=3,
                 mechanisms={"link_delay": "none"})
    groups = group_runs([load_run(p) for p in (a, b, c)])
    assert len(groups) == 3 and all(g.label for g in groups)


def test_unknown_key_columns_use_row_position(tmp_path):
    rows = [{"a": 1.0}, {"a": 2.0}]
    runs = [load_run(make_run(tmp_path, "mystery", rows, seed=s)) for s in (1, 2)]
    (group,) = group_runs(runs)
    assert group.keys == ("_row",) and len(group.agg) == 2


def test_aggregate_single_run_is_the_summary(tmp_path):
    run = load_run(make_run(tmp_path, "rtt-matrix", rtt_rows()))
    (group,) = group_runs([run])
    assert not [c for c in group.agg.columns if c.endswith("__ci")]
    assert aggregate(group.summary.iloc[0:0], ("src",), 1)[1] == []


def test_report_single_run_written_beside_it(tmp_path):
    run = make_run(tmp_path, "rtt-matrix", rtt_rows())
    md = build_report([run])
    assert md == tmp_path / "rtt-matrix" / "report.md"
    text = md.read_text()
    assert "the rtt-matrix claim" in text
    assert "figures/rtt-matrix-rtt.png" in text
    assert (md.parent / "figures" / "rtt-matrix-rtt.png").stat().st_size > 1000
    html = md.with_suffix(".html").read_text()
    assert '<img src="figures/rtt-matrix-rtt.png"' in html and "<style>" in html
    assert "Mechanisms: OVS datapath **userspace**, link delay **relay**" in text
    assert "kernel 6.1.0-test, x86_64, 2 CPUs" in text and "abc123def456" in text


def test_report_is_deterministic(tmp_path):
    runs = [make_run(tmp_path, "rtt-matrix", rtt_rows(o), seed=s, repetition=s - 1)
            for s, o in ((1, 0.1), (2, 0.5))]
    out1, out2 = tmp_path / "r1", tmp_path / "r2"
    build_report(runs, out1)
    build_report(runs, out2)
    for name in ("report.md", "report.html", "figures/rtt-matrix-rtt.png"):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name
    assert "±" in (out1 / "report.md").read_text()


def test_fidelity_warnings(tmp_path):
    run = make_run(tmp_path, "rtt-matrix", rtt_rows(), cpu_starved=True, min_cpu_idle_pct=3.0,
                   cpu_starved_share_pct=40.0,
                   mechanisms={"link_delay": "none", "ovs_datapath": "userspace"},
                   calibration=[[{"link": "na-ap1", "configured_rtt_ms": 150.0,
                                  "measured_rtt_ms": 205.1, "error_ms": 55.1},
                                 {"link": "na-us1", "configured_rtt_ms": 6.0,
                                  "measured_rtt_ms": 6.1, "error_ms": 0.1}]])
    text = build_report([run]).read_text()
    assert "CPU-starved (CPU idle below 20% for 40% of the run, lowest 3%" in text
    assert "link delay mechanism `none`" in text
    assert "calibration: 1 of 2 WAN paths off by more than 1 ms (worst link na-ap1" in text


def test_unknown_experiment_gets_claim_and_table(tmp_path):
    run = make_run(tmp_path, "mystery", [{"variant": "a", "value": 1.5}])
    text = build_report([run]).read_text()
    assert "the mystery claim" in text and "No renderer for `mystery`" in text
    assert "| a | 1.5 |" in text


def test_missing_columns_become_a_note(tmp_path):
    run = make_run(tmp_path, "vip-modes", [{"variant": "nat", "ok_pct": 100.0}])
    text = build_report([run]).read_text()
    assert "no column(s)" in text and "lb_reply_bytes_share" in text
    assert "| nat | 100 |" in text


def test_missing_summary_and_empty_summary(tmp_path):
    a = make_run(tmp_path, "rtt-matrix", None)
    text = build_report([a]).read_text()
    assert "has no summary.csv" in text


def test_suite_dir_report_lists_failures(tmp_path):
    ok = make_run(tmp_path, "rtt-matrix", rtt_rows())
    suite = make_suite(tmp_path, [
        {"experiment": "rtt-matrix", "repetition": 0, "status": "ok", "duration_s": 12.0,
         "run_dir": f"../../rtt-matrix/{ok.name}"},
        {"experiment": "vip-modes", "repetition": 0, "status": "failed", "duration_s": 3.0,
         "run_dir": None, "error": "RuntimeError: boom"},
        {"experiment": "dns-rr", "repetition": 0, "status": "not-run", "run_dir": None}],
        status="interrupted")
    md = build_report([suite])
    assert md.parent == suite
    text = md.read_text()
    assert "status **interrupted**" in text
    assert "No results: failed — RuntimeError: boom." in text
    assert "No results: not-run." in text
    assert (suite / "figures" / "rtt-matrix-rtt.png").exists()


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError):
        load_inputs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither a suite"):
        load_inputs([tmp_path / "empty"])
    with pytest.raises(InputError):
        load_inputs([])
