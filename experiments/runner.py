"""Run one experiment: scenario, mechanisms, network, measurements, results, teardown.

Everything with a lifetime is owned here and released in `finally`: the live network (and
with it hosts, bridges, links, controller, relays), the CPU sampler and the partial run
directory. SIGTERM is turned into KeyboardInterrupt so that it takes the same path as
Ctrl-C; an interrupted run publishes nothing (no half-written results).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

from experiments.base import Context, Experiment
from experiments.cpu import CpuIdleSampler
from experiments.progress import Phase
from experiments.results import RECORD_COLUMNS, RunDir, write_csv, write_json
from lab import fidelity, mechanisms
from lab.fidelity import CPU_STARVED_BELOW_PCT
from topologies import scenario as scenario_mod
from topologies.plan import build_plan
from topologies.scenario import Scenario
from topologies.state import new_run_id
from topologies.system import REPO_ROOT, run as run_cmd

RUNNER_KEYS = ("link_emulation", "backend_server", "region_lan")


def git_info() -> dict:
    head = run_cmd(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], check=False)
    if head.returncode != 0:
        return {"commit": "unknown", "dirty": None}
    status = run_cmd(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                      "--untracked-files=no"], check=False)
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


@contextlib.contextmanager
def sigterm_as_interrupt():
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def split_overrides(pairs: list[str]) -> tuple[dict, dict]:
    """--set key=value pairs -> (runner keys, experiment parameters)."""
    from topologies.system import InputError
    runner, params = {}, {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--set {pair}: expected key=value")
        key, value = pair.split("=", 1)
        (runner if key in RUNNER_KEYS else params)[key.strip()] = value.strip()
    return runner, params


def link_mechanisms(plan, mech) -> dict:
    """Per WAN link, the mechanism that carries its delay and loss in this run."""
    return {f"{w.link.a}-{w.link.b}": mech.link_delay for w in plan.wans}


def run_experiment(exp: Experiment, *, scenario: str | Scenario | None = None,
                   quick: bool = False, seed: int = 1, out_root: Path | None = None,
                   overrides: list[str] = (), log=print, repetition: int = 0,
                   extra_metadata: dict | None = None) -> Path:
    """One run of `exp` into <out_root>/<experiment>/<run-id>/. `scenario`: a name or file
    (default: the experiment's), or a Scenario already loaded (the CLI checks it before
    asking for root). `repetition` (runner-level repetitions, see experiments/suites.py) is
    written to every record and to metadata; `extra_metadata` (e.g. the suite this run
    belongs to) is merged into metadata.json."""
    runner_keys, param_text = split_overrides(list(overrides))
    params = exp.resolve_params(quick, param_text)
    scen = scenario if isinstance(scenario, Scenario) else \
        scenario_mod.load(scenario or exp.scenario)
    plan = build_plan(scen)
    mech = mechanisms.detect(runner_keys.get("link_emulation"),
                             runner_keys.get("backend_server"), runner_keys.get("region_lan"))
    run_id = new_run_id(exp.name)
    out_root = Path(out_root or REPO_ROOT / "results")
    run_dir = RunDir(out_root, exp.name, run_id)
    log(f"lblab run {exp.name} ({'quick' if quick else 'full'}), scenario {scen.name}, "
        f"seed {seed}, run {run_id}")
    log(f"mechanisms: OVS datapath {mech.ovs_datapath}, link delay {mech.link_delay}, "
        f"GRE decap {mech.gre_decap}, controller {mech.controller}, "
        f"backends {mech.backend_server}")
    # Fidelity warnings are printed like the experiment's own but kept apart in metadata
    # (`fidelity`), where the report reads them as flags.
    fidelity_warnings: list[str] = []

    def fidelity_warn(text: str) -> None:
        fidelity_warnings.append(text)
        log(f"WARNING: {text}")

    if mech.link_delay == "none":
        fidelity_warn("link_delay is 'none': configured WAN delays and loss are not applied")
    nets: list = []

    def open_net(plan_override=None, controller_apps=None, **net_options):
        from lab.net import LiveNet
        net = LiveNet(plan_override or plan, mech, run_id, run_dir.work,
                      controller_apps=controller_apps, log=log, **net_options)
        nets.append(net)
        return net

    def phase(name: str, total: int) -> Phase:
        return Phase(name, total)

    ctx = Context(experiment=exp, run_id=run_id, params=params, seed=seed, quick=quick,
                  work_dir=run_dir.work, open_net=open_net, phase=phase, log=log,
                  repetition=repetition, scenario=scen, plan=plan, mechanisms=mech)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    published = False
    try:
        with sigterm_as_interrupt(), CpuIdleSampler() as cpu:
            summary = exp.run(ctx)
        for net in nets:
            for text in net.calibration_warnings():
                fidelity_warn(f"calibration: {text}")
        generators = [s for n in nets for s in getattr(n, "client_stats", [])]
        late = [g for g in generators if g.get("behind_schedule")]
        if late:
            worst = max(late, key=lambda g: g.get("start_lag_p99_ms", 0))
            fidelity_warn(f"{len(late)} of {len(generators)} load generator runs fell behind "
                          f"their schedule (worst: {worst['host']}, p99 start lag "
                          f"{worst['start_lag_p99_ms']:g} ms): latencies still count from the "
                          "scheduled times, but the offered rate was not kept")
        if cpu.starved:
            fidelity_warn(f"CPU idle was below {CPU_STARVED_BELOW_PCT:g}% for "
                          f"{cpu.starved_share_pct:g}% of the run (lowest {cpu.min_idle_pct}%): "
                          "the emulation was CPU-starved; latencies include CPU queueing")
        flags = fidelity.flags(mech.link_delay, [c for n in nets for c in n.calibration],
                               cpu.starved_share_pct)
        write_csv(run_dir.path("records.csv"), ctx.records, RECORD_COLUMNS)
        write_csv(run_dir.path("summary.csv"), summary, exp.summary_columns)
        metadata = {
            "run_id": run_id, "experiment": exp.name, "quick": quick, "seed": seed,
            "repetition": repetition, "claim": exp.claim,
            "summary_columns": list(exp.summary_columns),
            "parameters": params, "runner_settings": runner_keys,
            "command_line": sys.argv,
            "scenario": {"name": scen.name, "source": scen.source_path,
                         "sha256": scen.sha256},
            "git": git_info(),
            "started_utc": started.isoformat(), "ended_utc":
                dt.datetime.now(dt.timezone.utc).isoformat(),
            "duration_s": round(time.monotonic() - t0, 2),
            "kernel_release": platform.release(), "machine": platform.machine(),
            "hostname": platform.node(), "cpus": os.cpu_count(),
            "mechanisms": mech.as_dict(), "link_mechanisms": link_mechanisms(plan, mech),
            "versions": mechanisms.versions(),
            "min_cpu_idle_pct": cpu.min_idle_pct, "mean_cpu_idle_pct": cpu.mean_idle_pct,
            "cpu_starved": cpu.starved, "cpu_starved_share_pct": cpu.starved_share_pct,
            "network_timing_s": [{"up": round(n.timing.up_s, 3),
                                  "down": round(n.timing.down_s, 3)} for n in nets],
            "calibration": [n.calibration for n in nets],
            # each site's LAN round trip (router <-> a host), taken off WAN relay delays
            "lan_rtt_ms": [n.lan_rtt_ms for n in nets],
            "tx_offload_off": sorted({i for n in nets for i in n.tx_offload_off}),
            "load_generators": generators,
            "lan_carriers": [n.lan_carriers for n in nets],
            # each VIP's mode, algorithm, connection table and hash at the network's start
            "vip_settings": [n.vip_settings for n in nets],
            # what each network's controller said it runs on (framework, version, hub, apps)
            "controller_runtime": [n.controller.info for n in nets],
            "gre": [n.gre.metadata() for n in nets if getattr(n, "gre", None) is not None],
            "fidelity": {**flags, "warnings": fidelity_warnings},
            "warnings": ctx.warnings,
            **ctx.extra_metadata,
            **(extra_metadata or {}),
        }
        write_json(run_dir.path("metadata.json"), metadata)
        final = run_dir.publish()
        published = True
        log(f"results: {final}")
        return final
    finally:
        if not published:
            kept = run_dir.discard(keep_logs_in=Path(tempfile.gettempdir()) /
                                   f"lblab-failed-{run_id}")
            if kept is not None:
                log(f"run {run_id} did not finish: no results written; its logs are in {kept}")
