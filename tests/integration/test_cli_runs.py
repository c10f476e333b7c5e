"""The lblab command as a user runs it: doctor, a quick run, Ctrl-C mid-run, clean after a
crash. Each checks what a user cares about: valid output, whole results or none, and no
leftovers of lblab's while foreign namespaces/bridges/processes survive."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from controller import frameworks
from conftest import LBLAB, REPO, wait_no_leftovers

pytestmark = pytest.mark.integration


def lblab(*args, timeout=300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*LBLAB, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_doctor_json_has_the_four_keys():
    proc = lblab("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["ovs_datapath"] in ("kernel", "userspace")
    assert info["link_delay"] in ("netem", "relay", "none")
    assert info["gre_decap"] in ("kernel", "userspace", "none")
    assert info["controller"].split()[0] in ("ryu", "os-ken")


@pytest.mark.parametrize("name", sorted(frameworks.FRAMEWORKS))
def test_doctor_names_the_controller_framework_runs_will_use(name):
    proc = lblab("doctor", "--json", env={frameworks.ENV: name})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["controller_framework"] == name
    assert info["controller_version"] == frameworks.FRAMEWORKS[name].version()
    assert info["controller"].startswith(f"{name} {info['controller_version']} ")


def test_an_unknown_controller_framework_is_a_one_line_error():
    proc = lblab("doctor", "--json", env={frameworks.ENV: "floodlight"})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "LBLAB_CONTROLLER='floodlight'" in lines[0], proc.stderr


def test_quick_run_writes_three_files_with_mechanisms(lblab_clean, foreign, tmp_path):
    proc = lblab("run", "rtt-matrix", "--quick", "--scenario", "two-dc", "--out",
                 str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list((tmp_path / "rtt-matrix").iterdir())
    assert len(runs) == 1 and not runs[0].name.startswith(".")
    run = runs[0]
    assert {p.name for p in run.iterdir()} >= {"records.csv", "summary.csv", "metadata.json"}
    meta = json.loads((run / "metadata.json").read_text())
    for key in ("ovs_datapath", "link_delay", "gre_decap", "controller"):
        assert meta["mechanisms"][key]
    assert set(meta["link_mechanisms"].values()) == {meta["mechanisms"]["link_delay"]}
    # the controller that ran says it is the framework the mechanisms name
    (ran,) = meta["controller_runtime"]
    assert meta["mechanisms"]["controller"].startswith(f"{ran['framework']} {ran['version']} ")
    assert meta["git"]["commit"] and meta["seed"] == 1 and meta["min_cpu_idle_pct"] is not None
    with open(run / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    # 2 regions x (2 DCs + 2 resolvers)
    assert len(summary) == 8
    assert all(float(r["loss_pct"]) == 0 for r in summary), summary
    assert {"src", "dst", "configured_rtt_ms", "measured_rtt_ms", "loss_pct",
            "link_delay"} <= set(summary[0])
    with open(run / "records.csv") as fh:
        header = next(csv.reader(fh))
    assert header[:4] == ["run_id", "experiment", "variant", "repetition"]


def _start_and_wait_until_up(tmp_path: Path) -> subprocess.Popen:
    """Start a long rtt-matrix run; return once its network is up and measuring."""
    from controller.l2logic import BASE_COOKIE
    from lab.controller_process import has_cookie_flow
    from topologies import ovs
    proc = subprocess.Popen([*LBLAB, "run", "rtt-matrix", "--scenario", "two-dc",
                             "--set", "pings=600", "--set", "interval_s=0.1",
                             "--out", str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from experiments.cleanup import root_interfaces
    bridges = ["lbs-us1", "lbs-eu1"]             # the DCs' OVS switches
    lan_bridges = {"lbs-na", "lbs-eu"}            # the client regions' Linux bridges
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        present = set(ovs.bridges())
        if set(bridges) <= present and all(has_cookie_flow(b, BASE_COOKIE) for b in bridges) \
                and lan_bridges <= set(root_interfaces()):
            return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the run's network did not come up within 60 s")


def test_sigint_mid_run_tears_everything_down(lblab_clean, foreign, tmp_path):
    proc = _start_and_wait_until_up(tmp_path)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert "interrupted" in out
    left = wait_no_leftovers()
    assert not any(left.values()), left
    # no half-written results: nothing published, no partial directory kept
    assert not any((tmp_path / "rtt-matrix").iterdir())


def test_sigterm_mid_run_tears_everything_down(lblab_clean, foreign, tmp_path):
    proc = _start_and_wait_until_up(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    left = wait_no_leftovers()
    assert not any(left.values()), left


def test_clean_after_crash_removes_only_lblabs_things(lblab_clean, foreign, tmp_path):
    from experiments.cleanup import leftovers
    proc = _start_and_wait_until_up(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no teardown at all
    proc.wait(timeout=10)
    left = leftovers()
    assert left["bridges"] and left["processes"], "the crash should have left things behind"
    cleaned = lblab("clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "removed" in cleaned.stdout
    left = wait_no_leftovers()
    assert not any(left.values()), left
    check = lblab("clean", "--check")
    assert check.returncode == 0, check.stdout
