"""Kernel-lane tests: the kernel mechanisms lblab picks on users' VMs (openvswitch module,
sch_netem, ip_gre). `sudo make test-vm` runs them inside a stock Debian 12 guest
(tools/vm/), with LBLAB_VM=1 and LBLAB_VM_ACCEL=kvm|tcg set.

Outside that guest they are skipped unless this kernel has all three mechanisms and we are
root; inside it (LBLAB_VM=1) nothing is skipped: a missing mechanism is a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from experiments.cleanup import wait_no_leftovers

HERE = Path(__file__).resolve().parent
IN_VM = os.environ.get("LBLAB_VM") == "1"


def _missing_mechanisms() -> list[str]:
    from lab import mechanisms
    from topologies import ovs
    missing = []
    if not ovs.kernel_module_available():
        missing.append("openvswitch module")
    if not mechanisms.probe_netem():
        missing.append("sch_netem")
    if not mechanisms.probe_ip_gre():
        missing.append("ip_gre")
    return missing


def pytest_collection_modifyitems(config, items):
    # Hooks in a conftest see every collected item: act only on this folder's.
    mine = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if not mine or IN_VM:
        return
    if os.geteuid() != 0:
        reason = "kernel-lane tests need root; they run in the VM lane (`sudo make test-vm`)"
    else:
        missing = _missing_mechanisms()
        if not missing:
            return
        reason = (f"this kernel lacks {', '.join(missing)}; these tests run in the VM lane "
                  f"(`sudo make test-vm`)")
    for item in mine:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def two_dc(tmp_path_factory):
    """The two-dc scenario up once for all kernel tests, GRE underlay included (a bring-up costs tens of seconds
    under TCG); tests that change hosts undo it. Checks that teardown leaves nothing.
    Mechanisms are whatever `detect()` picks."""
    from experiments.cleanup import clean
    from lab import mechanisms
    from topologies import ovs, scenario
    from lab.net import LiveNet
    from topologies.plan import build_plan
    from topologies.state import new_run_id

    ovs.ensure_running(lambda *_: None)
    clean(everything=True, log=lambda *_: None)
    plan = build_plan(scenario.load("two-dc"))
    mech = mechanisms.detect()
    # gre=True: every LB switch gets its GRE port and the kernel underlay (policy routing),
    # so the VIP smoke tests can switch a VIP to mode gre.
    live = LiveNet(plan, mech, new_run_id("kernel"), tmp_path_factory.mktemp("two-dc"),
                   gre=True)
    with live:
        yield live
    left = wait_no_leftovers()
    assert not any(left.values()), f"lblab left behind: {left}"
    assert not {s.name for s in plan.switches} & set(ovs.bridges())
