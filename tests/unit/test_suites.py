"""Suites: order, time estimate, manifest, failures and Ctrl-C (with a fake runner)."""
from __future__ import annotations

import importlib
import json

import pytest

from experiments import registry, suites, tolerance
from experiments.base import Experiment
from experiments.results import RunDir, write_csv, write_json
from report_helpers import rtt_rows


def test_plan_order_known_first_then_by_name():
    names = ["dns-geo", "zeta", "rtt-matrix", "alpha", "vip-modes"]
    assert suites.plan_order(names) == ["rtt-matrix", "vip-modes", "dns-geo", "alpha", "zeta"]


def test_remaining_estimate_scales_with_progress():
    entries = [{"status": "ok", "expected_s": 10, "duration_s": 20},
               {"status": "pending", "expected_s": 30},
               {"status": "pending", "expected_s": 10}]
    assert suites.remaining_estimate(entries, "quick") == pytest.approx(80)
    entries[0]["duration_s"] = 1000  # clamped: one slow experiment does not explode it
    assert suites.remaining_estimate(entries, "quick") == pytest.approx(120)
    assert suites.fmt_duration(75) == "1m15s" and suites.fmt_duration(9) == "9s"


def test_quick_suite_fits_the_budget():
    # the quick suite must stay under 20 minutes on 2 cores; the estimates leave room
    assert sum(e.expected("quick") for e in registry.experiments().values()
               if "quick" in e.suites) < 18 * 60


def test_every_experiment_declares_its_facts():
    exps = registry.experiments()
    assert list(exps) == ["rtt-matrix", "vip-modes", "vip-hashing", "lb-tier", "gre-mtu",
                          "dns-rr", "dns-rr-pop", "dns-geo", "dns-geo-pop", "dns-failover",
                          "dns-failover-pop", "global-overload", "traffic-classes"]
    for exp in exps.values():
        assert exp.order is not None and set(exp.expected_s) == {"quick", "full"}
        assert exp.key_columns and exp.tolerances and exp.claim
        module, _, function = exp.renderer.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), exp.renderer
        assert set(tolerance.compared_metrics(exp.tolerances)) <= set(exp.summary_columns)


def test_tolerances():
    def tol_for(exp, metric, row=None):
        return tolerance.tolerance_for(registry.tolerances(exp), metric, row)
    tol = tol_for("rtt-matrix", "measured_rtt_ms")
    assert tol.agrees(80.0, 80.9) and not tol.agrees(6.0, 7.5)
    assert tol.agrees(150.0, 152.5)  # 2 % of a long path
    assert tolerance.Tol(abs=0).agrees(None, float("nan"))
    assert not tolerance.Tol(abs=1).agrees(None, 1.0)
    lease = tol_for("vip-hashing", "remap_fraction", {"algorithm": "leastload"})
    plain = tol_for("vip-hashing", "remap_fraction", {"algorithm": "maglev"})
    assert lease.abs == 0.35 and plain.abs == 0.02
    assert tol_for("dns-rr", "share", {"pick": "first"}).abs == 0.35
    assert tol_for("nope", "x") is None
    table = registry.tolerances_markdown()
    assert "| rtt-matrix | `measured_rtt_ms` | all | ±1 ms or ±2 % |" in table
    assert "| vip-hashing | `remap_fraction` | algorithm=leastload | ±0.35 |" in table


def fake_experiment(name, behaviour):
    def run(ctx):
        raise AssertionError("not called: the runner is faked")
    real = registry.find(name)
    return Experiment(name=name, summary=name, claim=f"{name} claim", run=run,
                      order=real.order if real else None,
                      suites=("full",) if behaviour == "full-only" else ("quick", "full"))


@pytest.fixture
def fake_world(tmp_path, monkeypatch):
    behaviour = {"rtt-matrix": "ok", "vip-modes": "fail", "vip-hashing": "ok",
                 "dns-rr": "ok", "global-overload": "full-only"}
    calls = []
    exps = {n: fake_experiment(n, b) for n, b in behaviour.items()}
    monkeypatch.setattr("experiments.registry.experiments", lambda: exps)

    def fake_run(exp, *, quick, seed, out_root, overrides, repetition, log, extra_metadata):
        calls.append((exp.name, seed, repetition))
        what = behaviour[exp.name]
        assert what != "full-only" or not quick, "a full-only experiment ran in a quick suite"
        if what == "fail":
            raise RuntimeError("controller did not connect\nsecond line")
        if what == "interrupt":
            raise KeyboardInterrupt
        run_id = f"20260101T000000-{exp.name}-{seed}{repetition}"
        rd = RunDir(out_root, exp.name, run_id)
        write_csv(rd.path("summary.csv"), rtt_rows() if exp.name == "rtt-matrix"
                  else [{"variant": "a", "value": seed}])
        write_csv(rd.path("records.csv"), [])
        write_json(rd.path("metadata.json"), {
            "run_id": run_id, "experiment": exp.name, "quick": quick, "seed": seed,
            "repetition": repetition, "parameters": {}, "claim": exp.claim,
            "mechanisms": {"link_delay": "relay"}, **extra_metadata})
        return rd.publish()

    monkeypatch.setattr("experiments.runner.run_experiment", fake_run)
    monkeypatch.setattr("experiments.runner.git_info", lambda: {"commit": "x", "dirty": False})
    return tmp_path, behaviour, calls


def test_suite_runs_all_records_failures_and_builds_report(fake_world):
    root, behaviour, calls = fake_world
    lines = []
    suite_dir, code = suites.run_suite("quick", seed=7, out_root=root, log=lines.append)
    assert code == 1
    assert [c[0] for c in calls] == ["rtt-matrix", "vip-modes", "vip-hashing", "dns-rr"]
    manifest = json.loads((suite_dir / "manifest.json").read_text())
    status = {e["experiment"]: e["status"] for e in manifest["runs"]}
    assert status == {"rtt-matrix": "ok", "vip-modes": "failed", "vip-hashing": "ok",
                      "dns-rr": "ok"}
    failed = next(e for e in manifest["runs"] if e["status"] == "failed")
    assert failed["error"] == "RuntimeError: controller did not connect second line"
    assert (suite_dir / "errors" / "vip-modes-0.log").exists()
    assert manifest["status"] == "failed" and manifest["report"] == "report.md"
    ok = next(e for e in manifest["runs"] if e["experiment"] == "rtt-matrix")
    assert ok["run_dir"].startswith("../../rtt-matrix/")
    assert (suite_dir / ok["run_dir"] / "summary.csv").exists()
    text = (suite_dir / "report.md").read_text()
    assert "controller did not connect" in text and "## rtt-matrix" in text
    assert any("[2/4] vip-modes" in line for line in lines)
    assert any("left" in line for line in lines)


def test_suite_interrupt_keeps_finished_runs(fake_world):
    root, behaviour, calls = fake_world
    behaviour["vip-hashing"] = "interrupt"
    suite_dir, code = suites.run_suite("quick", out_root=root, log=lambda *_: None)
    assert code == 130
    manifest = json.loads((suite_dir / "manifest.json").read_text())
    status = [e["status"] for e in manifest["runs"]]
    assert status == ["ok", "failed", "interrupted", "not-run"]
    assert manifest["status"] == "interrupted"
    assert "## rtt-matrix" in (suite_dir / "report.md").read_text()


def test_full_suite_repetitions_seeds_and_ci(fake_world):
    root, behaviour, calls = fake_world
    behaviour["vip-modes"] = "ok"
    suite_dir, code = suites.run_suite("full", seed=10, out_root=root, log=lambda *_: None)
    assert code == 0
    assert [c for c in calls if c[0] == "dns-rr"] == [("dns-rr", 10, 0), ("dns-rr", 11, 1),
                                                     ("dns-rr", 12, 2)]
    text = (suite_dir / "report.md").read_text()
    assert "Means over 3 runs (seeds 10, 11, 12)" in text
    assert "| a | 11 ± 2.5 |" in text  # mean of 10, 11, 12 with a t-based 95% CI
