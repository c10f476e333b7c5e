"""Integration tests: root, real Open vSwitch, real Mininet, real controller. Run serially.

Every test starts from a clean state (lblab's own `clean`), and checks afterwards that no
lblab namespace, interface, bridge or process is left, while things lblab did not create
(the `foreign` fixture) are untouched.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cleanup import wait_no_leftovers  # noqa: F401  (test_cli_runs imports it)

REPO = Path(__file__).resolve().parents[2]
LBLAB = [sys.executable, "-m", "experiments"]


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests need root (run `sudo make test`)")
        for item in items:
            item.add_marker(skip)


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and proc.returncode:
        raise RuntimeError(f"{cmd}: {proc.stderr.strip()}")
    return proc


@pytest.fixture
def lblab_clean():
    """Clean before; assert nothing of lblab's is left after."""
    from experiments.cleanup import clean
    from topologies.ovs import ensure_running
    ensure_running(lambda *_: None)
    clean()  # leftovers of dead runs only: a live run elsewhere is not ours to remove
    yield
    left = wait_no_leftovers()
    assert not any(left.values()), f"lblab left behind: {left}"


@pytest.fixture
def foreign():
    """A namespace, a veth pair, an OVS bridge and a process that lblab did not create."""
    tag = f"{os.getpid() % 100000}"
    ns, veth, br = f"foreign-{tag}", f"fveth{tag}", f"fbr{tag}"
    sh(f"ip netns add {ns}")
    sh(f"ip link add {veth}a type veth peer name {veth}b")
    sh(f"ovs-vsctl add-br {br} -- set bridge {br} datapath_type=netdev")
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        yield {"ns": ns, "veth": f"{veth}a", "bridge": br, "pid": sleeper.pid}
        assert ns in sh("ip netns list").stdout, "lblab removed a foreign namespace"
        assert sh(f"ip link show {veth}a", check=False).returncode == 0, \
            "lblab removed a foreign interface"
        assert br in sh("ovs-vsctl list-br").stdout.split(), "lblab removed a foreign bridge"
        assert sleeper.poll() is None, "lblab killed a foreign process"
    finally:
        sleeper.kill()
        sh(f"ovs-vsctl --if-exists del-br {br}", check=False)
        sh(f"ip link del {veth}a", check=False)
        sh(f"ip netns del {ns}", check=False)
