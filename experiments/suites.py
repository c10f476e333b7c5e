"""Suites: every registered experiment, in a defined order, as one run with one report.

    lblab run --suite quick     every experiment with its --quick parameters, once
    lblab run --suite full      every experiment with its full parameters, REPETITIONS times

Repetitions are run by the runner, not by the experiments: repetition r of an experiment is
one ordinary run with seed `seed + r` (metadata: `repetition`, `repetitions`, `base_seed`),
published as its own run directory results/<experiment>/<run-id>/. One run directory per
repetition because (1) each is published atomically on its own, so Ctrl-C during
repetition 3 keeps repetitions 1 and 2; (2) each carries its own metadata (CPU starvation,
calibration), so a fidelity warning names the repetition it concerns; (3) summary.csv keeps
the experiment's schema, and `lblab compare` works on any two of them. The report groups
the run directories of one experiment (same parameters) and shows mean +- 95% CI across
them.

A suite writes results/suite/<suite-run-id>/manifest.json (updated after each experiment,
atomically) listing every planned run with its status (pending, ok, failed, interrupted,
not-run), run directory, duration and error, then builds report.md / report.html there.

What the suite needs to know of each experiment (its place, its expected duration) the
experiment declares itself (experiments/base.py, collected by experiments/registry.py).
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from experiments.base import DEFAULT_EXPECTED_S


@dataclass(frozen=True)
class Suite:
    name: str
    quick: bool
    repetitions: int
    description: str


SUITES = {
    "quick": Suite("quick", quick=True, repetitions=1,
                   description="every experiment at reduced size, once (the default of "
                               "`make run`; under 20 minutes on 2 cores)"),
    "full": Suite("full", quick=False, repetitions=3,
                  description="every experiment with its full parameters, 3 repetitions "
                              "(seeds seed..seed+2); the report shows 95% confidence "
                              "intervals"),
}


def expected_s(suite: str, experiment: str) -> float:
    from experiments.registry import find
    exp = find(experiment)
    return exp.expected(suite) if exp is not None else DEFAULT_EXPECTED_S


# ---------------------------------------------------------------------------------------
# Running a suite

def plan_order(names) -> list[str]:
    """Experiment names in suite order (experiments/registry.py: suite_rank)."""
    from experiments.registry import suite_rank
    return sorted(names, key=suite_rank)


def remaining_estimate(entries: list[dict], suite: str) -> float:
    """Seconds left: the expected durations of the runs not done yet, scaled by how the
    finished ones compared with their expectation (clamped to 0.5..3)."""
    done = [e for e in entries if e["status"] in ("ok", "failed")]
    todo = [e for e in entries if e["status"] == "pending"]
    expected_done = sum(e["expected_s"] for e in done)
    actual_done = sum(e.get("duration_s") or 0 for e in done)
    scale = min(3.0, max(0.5, actual_done / expected_done)) if expected_done > 0 else 1.0
    return sum(e["expected_s"] for e in todo) * scale


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_suite(name: str, *, seed: int = 1, out_root: Path | None = None,
              overrides: list[str] = (), repetitions: int | None = None,
              only: list[str] | None = None, log=print) -> tuple[Path, int]:
    """Run every registered experiment of the suite; returns (suite dir, exit code:
    0 all ok, 1 some failed, 130 interrupted). The report is built in every case."""
    from experiments.registry import experiments
    from experiments.results import write_json
    from experiments.runner import git_info, run_experiment, sigterm_as_interrupt
    from topologies.system import REPO_ROOT
    from topologies.state import new_run_id

    suite = SUITES[name]
    reps = repetitions or suite.repetitions
    registry = experiments()
    names = [n for n in plan_order(registry)
             if (n in only if only else name in registry[n].suites)]
    out_root = Path(out_root or REPO_ROOT / "results")
    suite_id = new_run_id(f"suite-{name}")
    suite_dir = out_root / "suite" / suite_id
    suite_dir.mkdir(parents=True)
    entries = [{"experiment": n, "repetition": r, "seed": seed + r, "status": "pending",
                "run_id": None, "run_dir": None, "duration_s": None,
                "expected_s": expected_s(name, n), "error": None}
               for n in names for r in range(reps)]
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    manifest = {"kind": "lblab-suite", "suite": name, "suite_run_id": suite_id,
                "quick": suite.quick, "repetitions": reps, "seed": seed,
                "command_line": sys.argv, "git": git_info(),
                "started_utc": started.isoformat(), "ended_utc": None, "duration_s": None,
                "status": "running", "runs": entries, "report": None}

    def save():
        write_json(suite_dir / "manifest.json", manifest)

    save()
    total = len(entries)
    log(f"lblab suite {name}: {len(names)} experiments x {reps} repetition(s), seed {seed}; "
        f"suite directory {suite_dir}")
    log(f"  expected about {fmt_duration(remaining_estimate(entries, name))} "
        f"(waits for other lblab networks not included)")
    status = "ok"
    try:
        with sigterm_as_interrupt():
            for i, entry in enumerate(entries, 1):
                rep = f" (repetition {entry['repetition'] + 1}/{reps}, seed {entry['seed']})" \
                    if reps > 1 else ""
                left = remaining_estimate(entries, name)
                log(f"\n[{i}/{total}] {entry['experiment']}{rep}: suite elapsed "
                    f"{fmt_duration(time.monotonic() - t0)}, about {fmt_duration(left)} left "
                    f"(this one ~{fmt_duration(entry['expected_s'])})")
                t_exp = time.monotonic()
                try:
                    final = run_experiment(
                        registry[entry["experiment"]], quick=suite.quick, seed=entry["seed"],
                        out_root=out_root, overrides=list(overrides),
                        repetition=entry["repetition"], log=log,
                        extra_metadata={"suite": {"name": name, "suite_run_id": suite_id,
                                                  "repetitions": reps, "base_seed": seed}})
                    entry.update(status="ok", run_id=final.name,
                                 run_dir=os.path.relpath(final, suite_dir))
                except KeyboardInterrupt:
                    entry.update(status="interrupted",
                                 error="interrupted (Ctrl-C or SIGTERM); nothing published")
                    raise
                except Exception as exc:  # one failing experiment does not stop the suite
                    entry.update(status="failed", error=_one_line(exc))
                    errors = suite_dir / "errors"
                    errors.mkdir(exist_ok=True)
                    (errors / f"{entry['experiment']}-{entry['repetition']}.log").write_text(
                        traceback.format_exc())
                    log(f"[{i}/{total}] {entry['experiment']} FAILED: {entry['error']} "
                        f"(traceback in {errors.name}/); the suite goes on")
                    status = "failed"
                finally:
                    entry["duration_s"] = round(time.monotonic() - t_exp, 1)
                    save()
    except KeyboardInterrupt:
        status = "interrupted"
        for entry in entries:
            if entry["status"] == "pending":
                entry["status"] = "not-run"
        log("\nsuite interrupted: the experiments already finished are kept; "
            "building the report from them")
    manifest.update(status=status, ended_utc=dt.datetime.now(dt.timezone.utc).isoformat(),
                    duration_s=round(time.monotonic() - t0, 1))
    save()
    from experiments.report import build_report
    try:
        report = build_report([suite_dir])
    except Exception as exc:  # the results are safe; only the report is missing
        log(f"suite {name}: building the report failed: {_one_line(exc)}; the runs are "
            f"listed in {suite_dir / 'manifest.json'} (retry: lblab report {suite_dir})")
        return suite_dir, 1
    manifest["report"] = os.path.relpath(report, suite_dir)
    save()
    counts = {s: sum(e["status"] == s for e in entries)
              for s in ("ok", "failed", "interrupted", "not-run")}
    log(f"\nsuite {name} {status} in {fmt_duration(manifest['duration_s'])}: " +
        ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    log(f"report: {report}")
    log(f"        {report.with_suffix('.html')}")
    return suite_dir, {"ok": 0, "failed": 1, "interrupted": 130}[status]
