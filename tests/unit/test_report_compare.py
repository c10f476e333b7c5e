"""`lblab compare`: two runs (or suites) within the reproducibility tolerances, or not."""
from __future__ import annotations

from experiments.cli import main
from experiments.report.compare import compare_paths, render_text
from report_helpers import hashing_rows, make_run, make_suite, rtt_rows


def test_runs_within_tolerance(tmp_path, capsys):
    a = make_run(tmp_path, "rtt-matrix", rtt_rows(0.2), seed=1)
    b = make_run(tmp_path, "rtt-matrix", rtt_rows(0.9), seed=1, repetition=1)
    checks, notes = compare_paths(a, b)
    assert checks and all(c.ok for c in checks)
    assert {c.metric for c in checks} == {"configured_rtt_ms", "measured_rtt_ms", "loss_pct"}
    assert main(["compare", str(a), str(b)]) == 0
    assert "12 of 12 values agree" in capsys.readouterr().out


def test_runs_outside_tolerance_exit_1(tmp_path, capsys):
    a = make_run(tmp_path, "rtt-matrix", rtt_rows(0.2), seed=1)
    b = make_run(tmp_path, "rtt-matrix", rtt_rows(1.5), seed=2)
    checks, notes = compare_paths(a, b)
    bad = [c for c in checks if not c.ok]
    assert {c.row for c in bad} == {"src=na dst=us1", "src=eu dst=us1"}  # 6 ms paths only
    assert any("differ in seeds" in n for n in notes)
    assert main(["compare", "--failures-only", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "NO" in out and "src=na dst=eu1" not in out


def test_missing_row_and_qualified_tolerance(tmp_path):
    rows_b = hashing_rows()
    for row in rows_b:
        if row["algorithm"] == "leastload":
            row["remap_fraction"] = 0.8  # within leastload's 0.15
    a = make_run(tmp_path, "vip-hashing", hashing_rows(), seed=1)
    b = make_run(tmp_path, "vip-hashing", rows_b[:-1], seed=1, repetition=1)
    checks, _ = compare_paths(a, b)
    bad = [c for c in checks if not c.ok]
    assert [(c.row, c.metric) for c in bad] == [("variant=leastload-ct change=add", "(row)")]
    assert "1 do NOT" in render_text(checks, [])


def test_suites_pair_runs_by_experiment(tmp_path, capsys):
    roots = []
    for side, offset in (("a", 0.2), ("b", 0.3)):
        root = tmp_path / side
        run = make_run(root, "rtt-matrix", rtt_rows(offset))
        extra = make_run(root, "vip-hashing", hashing_rows())
        entries = [{"experiment": "rtt-matrix", "repetition": 0, "status": "ok",
                    "run_dir": f"../../rtt-matrix/{run.name}"}]
        if side == "a":
            entries.append({"experiment": "vip-hashing", "repetition": 0, "status": "ok",
                            "run_dir": f"../../vip-hashing/{extra.name}"})
        roots.append(make_suite(root, entries))
    checks, _ = compare_paths(*roots)
    bad = [c for c in checks if not c.ok]
    assert [(c.experiment, c.metric, c.b) for c in bad] == [("vip-hashing", "(run)",
                                                             "missing")]
    assert main(["compare", str(roots[0]), str(roots[1])]) == 1


def test_mixed_or_wrong_inputs_are_input_errors(tmp_path, capsys):
    a = make_run(tmp_path, "rtt-matrix", rtt_rows())
    b = make_run(tmp_path, "vip-hashing", hashing_rows())
    assert main(["compare", str(a), str(b)]) == 2
    assert "different experiments" in capsys.readouterr().err
    assert main(["compare", str(a)]) == 2
    assert main(["compare", "--tolerances"]) == 0
    assert "| dns-failover | `detect_s` |" in capsys.readouterr().out


def test_cli_report_and_run_arguments(tmp_path, capsys):
    a = make_run(tmp_path, "rtt-matrix", rtt_rows())
    assert main(["report", str(a), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").exists()
    assert main(["run"]) == 2
    assert main(["run", "rtt-matrix", "--suite", "quick"]) == 2
    assert main(["run", "--suite", "quick", "--set", "pings=3"]) == 2
    assert "runner keys only" in capsys.readouterr().err
