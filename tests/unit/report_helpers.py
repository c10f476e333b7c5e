"""Synthetic run and suite directories for the report tests (no Mininet)."""
from __future__ import annotations

import json
from pathlib import Path

from experiments.results import RECORD_COLUMNS, write_csv, write_json

MECH = {"ovs_datapath": "userspace", "link_delay": "relay", "gre_decap": "userspace",
        "controller": "ryu 4.34"}


def make_run(root: Path, experiment: str, summary: list[dict], records: list[dict] = (),
             run_id: str | None = None, seed: int = 1, repetition: int = 0,
             parameters: dict | None = None, **meta) -> Path:
    run_id = run_id or f"20260101T000000-{experiment}-{seed:04d}{repetition}"
    path = Path(root) / experiment / run_id
    path.mkdir(parents=True)
    if summary is not None:
        write_csv(path / "summary.csv", list(summary))
    recs = [{"run_id": run_id, "experiment": experiment, "repetition": repetition, **r}
            for r in records]
    write_csv(path / "records.csv", recs, RECORD_COLUMNS)
    metadata = {"run_id": run_id, "experiment": experiment, "quick": True, "seed": seed,
                "repetition": repetition, "parameters": parameters or {"x": 1},
                "claim": f"the {experiment} claim", "scenario": {"name": "three-dc"},
                "git": {"commit": "abc123def4567890", "dirty": False},
                "kernel_release": "6.1.0-test", "machine": "x86_64", "cpus": 2,
                "hostname": "testhost", "mechanisms": dict(MECH), "versions": {"ovs": "3.1"},
                "min_cpu_idle_pct": 55.0, "mean_cpu_idle_pct": 70.0, "cpu_starved": False,
                "warnings": [], "calibration": []}
    metadata.update(meta)
    write_json(path / "metadata.json", metadata)
    return path


def make_suite(root: Path, entries: list[dict], status: str = "ok") -> Path:
    path = Path(root) / "suite" / "20260101T000000-suite-quick-abcd"
    path.mkdir(parents=True)
    manifest = {"kind": "lblab-suite", "suite": "quick", "suite_run_id": path.name,
                "quick": True, "repetitions": 1, "seed": 1, "status": status,
                "started_utc": "2026-01-01T00:00:00+00:00", "duration_s": 100.0,
                "runs": entries}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def rtt_rows(offset: float = 0.3) -> list[dict]:
    rows = []
    for src in ("na", "eu"):
        for dst, rtt in (("us1", 6.0), ("eu1", 80.0)):
            rows.append({"src": src, "dst": dst, "configured_rtt_ms": rtt,
                         "measured_rtt_ms": rtt + offset, "loss_pct": 0.0,
                         "link_delay": "relay", "dst_kind": "dc"})
    return rows


def hashing_rows(maglev_remap: float = 0.131, ct_broken: int = 0) -> list[dict]:
    rows = []
    for algo, remap in (("modn", 0.88), ("maglev", maglev_remap), ("leastload", 0.9)):
        for ct in (False, True):
            for change, before, after in (("remove", 8, 7), ("add", 7, 8)):
                rows.append({"variant": f"{algo}-{'ct' if ct else 'noct'}", "algorithm": algo,
                             "conntrack": ct, "change": change, "backends_before": before,
                             "backends_after": after, "remap_fraction": remap,
                             "broken_connections": ct_broken if ct else 9,
                             "live_connections": 12, "max_mean_share": 1.05,
                             "broken_on_removed_backend": 1, "keys": 10000})
    return rows
