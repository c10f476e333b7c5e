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

Also here: the expected duration of each experiment (for the suite's time estimate), the key
columns that identify a summary row, and the reproducibility tolerances per summary metric
(`lblab compare`, README).
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

# The chapter's order: the WAN first (every later latency rests on it), then the VIP
# balancer (modes, hashing, GRE), then DNS (round robin, geo, failover). Registered
# experiments missing here run after these, by name.
ORDER = ("rtt-matrix", "vip-modes", "vip-hashing", "gre-mtu", "dns-rr", "dns-geo",
         "dns-failover")


@dataclass(frozen=True)
class Suite:
    name: str
    quick: bool
    repetitions: int
    description: str


SUITES = {
    "quick": Suite("quick", quick=True, repetitions=1,
                   description="every experiment at reduced size, once (the default of "
                               "`make run`; under 15 minutes on 2 cores)"),
    "full": Suite("full", quick=False, repetitions=3,
                  description="every experiment with its full parameters, 3 repetitions "
                              "(seeds seed..seed+2); the report shows 95% confidence "
                              "intervals"),
}

# Seconds per repetition, measured on the 2-core development VM (userspace OVS, relay
# links), network set-up and teardown included, waits for the network lock excluded.
# Used only for the suite's estimate of the remaining time; unknown experiments count
# DEFAULT_EXPECTED_S.
EXPECTED_S = {
    "quick": {"rtt-matrix": 20, "vip-modes": 120, "vip-hashing": 55, "gre-mtu": 40,
              "dns-rr": 110, "dns-geo": 45, "dns-failover": 135},
    "full": {"rtt-matrix": 25, "vip-modes": 145, "vip-hashing": 55, "gre-mtu": 105,
             "dns-rr": 756, "dns-geo": 80, "dns-failover": 295},
}
DEFAULT_EXPECTED_S = 120.0


def expected_s(suite: str, experiment: str) -> float:
    return float(EXPECTED_S.get(suite, {}).get(experiment, DEFAULT_EXPECTED_S))


# ---------------------------------------------------------------------------------------
# Summary rows and reproducibility tolerances

# The columns that identify a row of an experiment's summary.csv (rows of two runs with the
# same key are compared; repetitions with the same key are averaged). Unknown experiments:
# `variant` if there is one, else the row's position.
KEY_COLUMNS = {
    "rtt-matrix": ("src", "dst"),
    "vip-modes": ("variant",),
    "vip-hashing": ("variant", "change"),
    "gre-mtu": ("variant",),
    "dns-rr": ("variant", "share_rank"),   # busiest DC first (report/compare.py)
    "dns-geo": ("variant", "client_region", "resolver"),
    "dns-failover": ("variant", "ttl_s"),
}


def key_columns(experiment: str, columns) -> tuple[str, ...]:
    keys = KEY_COLUMNS.get(experiment)
    if keys is None:
        keys = ("variant",) if "variant" in columns else ()
    return tuple(k for k in keys if k in columns)


@dataclass(frozen=True)
class Tol:
    """Two values agree when |a - b| <= abs, or <= rel * max(|a|, |b|) (either suffices).
    Both missing agree; one missing does not. Neither abs nor rel: listed (with why) but not
    compared."""
    abs: float | None = None
    rel: float | None = None
    why: str = ""

    def agrees(self, a, b) -> bool:
        if self.abs is None and self.rel is None:
            return True
        a_missing, b_missing = _missing(a), _missing(b)
        if a_missing or b_missing:
            return a_missing and b_missing
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return str(a) == str(b)
        diff = abs(a - b)
        if self.abs is not None and diff <= self.abs + 1e-9:
            return True
        return self.rel is not None and diff <= self.rel * max(abs(a), abs(b)) + 1e-9

    def text(self, unit: str = "") -> str:
        parts = []
        if self.abs is not None:
            parts.append("exact" if self.abs == 0 else f"±{self.abs:g}{unit}")
        if self.rel is not None:
            parts.append(f"±{self.rel * 100:g} %")
        return " or ".join(parts) or "not compared"


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


# Per experiment, per summary metric. A key "metric[column=value]" applies to the rows whose
# `column` equals `value` and takes precedence over the plain "metric". Metrics not listed
# are not compared. Calibrated for two quick suites on one 2-core machine; the noisy parts
# (tail latencies, counts that depend on kernel-chosen source ports or on scheduling) get
# wide bounds on purpose, the deterministic ones (hash tables from seeded keys) tight ones.
TOLERANCES: dict[str, dict[str, Tol]] = {
    "rtt-matrix": {
        "configured_rtt_ms": Tol(abs=0, why="from the scenario"),
        "measured_rtt_ms": Tol(abs=1.0, rel=0.02,
                               why="relay accuracy target 1 ms; 2 % on long paths"),
        "loss_pct": Tol(abs=10, why="one lost ping of a quick run's 10"),
    },
    "vip-modes": {
        "ok_pct": Tol(abs=2),
        "latency_p50_ms": Tol(abs=5, rel=0.25),
        "latency_p99_ms": Tol(why="p99 of a quick run's ~150 requests is its 2nd-largest "
                                  "value; under CPU contention it varied 4x between runs"),
        "upload_goodput_mbps": Tol(rel=0.3),
        "upload_ok_pct": Tol(abs=0, why="an upload either completes or not"),
        "lb_reply_bytes_share": Tol(abs=0.05, why="the DSR acceptance bound"),
    },
    "vip-hashing": {
        "remap_fraction": Tol(abs=0.02, why="tables from seeded keys: deterministic"),
        "remap_fraction[algorithm=leastload]": Tol(
            abs=0.35, why="leastload's table follows live connection counts (0.56 vs 0.84 "
                          "seen)"),
        "max_mean_share": Tol(abs=0.02),
        "max_mean_share[algorithm=leastload]": Tol(abs=0.5, why="follows live connection "
                                                                    "counts (1.18 vs 1.51 seen)"),
        "broken_connections": Tol(abs=5, rel=0.5,
                                  why="which connections hit the removed backend depends "
                                      "on kernel-chosen source ports (11 vs 7 seen)"),
        "live_connections": Tol(abs=0),
    },
    "gre-mtu": {
        "upload_ok_pct": Tol(abs=10),
        "upload_goodput_mbps": Tol(rel=0.3),
        "search_ok_pct": Tol(abs=2),
        "search_latency_p50_ms": Tol(abs=5, rel=0.25),
        "search_latency_p50_ms[variant=no-fix]": Tol(
            rel=0.6, why="searches share the path with uploads stuck in the black hole, "
                         "retransmitting (79 vs 124 ms seen)"),
    },
    "dns-rr": {
        "share": Tol(abs=0.1, why="random picks: ~3 binomial sd; first picks: herd timing"),
        "share[pick=first]": Tol(abs=0.35, why="compared by rank (busiest DC first): how "
                                               "many TTL periods a herd holds varies"),
        "share_stddev_over_time": Tol(abs=0.1),
        "share_stddev_over_time[pick=first]": Tol(
            abs=0.35, why="a quick run holds few TTL periods: one herd switch more or less "
                          "moves it by ~0.3 (0.31 seen between two same-seed runs)"),
    },
    "dns-geo": {
        "dc_chosen_pct_nearest": Tol(abs=10),
        "latency_p50_ms": Tol(abs=5, rel=0.2),
        "latency_p90_ms": Tol(abs=10, rel=0.3),
    },
    "dns-failover": {
        "detect_s": Tol(abs=1.0),
        "drain_s": Tol(abs=2.0, rel=0.25),
        "failed_requests": Tol(abs=10, rel=0.5),
    },
}

UNITS = {"_ms": " ms", "_s": " s", "_pct": " pp", "_mbps": " Mbit/s"}


def unit_of(metric: str) -> str:
    for suffix, unit in UNITS.items():
        if metric.split("[")[0].endswith(suffix):
            return unit
    return ""


_QUALIFIED = re.compile(r"^(?P<metric>[^\[]+)\[(?P<col>[^=\]]+)=(?P<value>[^\]]*)\]$")


def tolerance_for(experiment: str, metric: str, row: dict | None = None) -> Tol | None:
    table = TOLERANCES.get(experiment, {})
    for key, tol in table.items():
        m = _QUALIFIED.match(key)
        if m and m["metric"] == metric and row is not None and \
                _text(row.get(m["col"])) == m["value"]:
            return tol
    return table.get(metric)


def compared_metrics(experiment: str) -> list[str]:
    out = []
    for key in TOLERANCES.get(experiment, {}):
        metric = key.split("[")[0]
        if metric not in out:
            out.append(metric)
    return out


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def tolerances_markdown() -> str:
    """The tolerances as a markdown table (quoted by the README)."""
    lines = ["| experiment | metric | rows | two runs agree when they differ by at most | why |",
             "|---|---|---|---|---|"]
    for exp, table in TOLERANCES.items():
        for key, tol in table.items():
            m = _QUALIFIED.match(key)
            metric, rows = (m["metric"], f"{m['col']}={m['value']}") if m else (key, "all")
            lines.append(f"| {exp} | `{metric}` | {rows} | {tol.text(unit_of(metric))} | "
                         f"{tol.why} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Running a suite

def plan_order(registered) -> list[str]:
    """Registered experiment names in suite order."""
    names = list(registered)
    ordered = [n for n in ORDER if n in names]
    return ordered + sorted(n for n in names if n not in ORDER)


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
    from experiments.runner import REPO_ROOT, git_info, run_experiment, sigterm_as_interrupt
    from topologies.state import new_run_id

    suite = SUITES[name]
    reps = repetitions or suite.repetitions
    registry = experiments()
    names = [n for n in plan_order(registry) if not only or n in only]
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
