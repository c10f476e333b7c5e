"""RelaySwitch.start/stop on real veths, without starting Mininet (root only).

Mininet must not run beside the lead's experiments, so the node is built with __new__ and given
just what start()/stop() use (name, intfs, links, peer nodes); the relay, interfaces, PID file
and teardown are real.
"""
import os
import statistics
import subprocess
import types

import pytest

from topologies.relay.link import RelayParams
from topologies.relay.testbed import skip_reason

pytestmark = pytest.mark.integration


def _skip_reason():
    reason = skip_reason()
    if reason:
        return reason
    try:
        import mininet.node  # noqa: F401
    except ImportError:
        return "mininet not importable"
    return None


if _skip_reason():
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=_skip_reason())]


def sh(*argv, check=True):
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError(f"{argv}: {p.stderr}")
    return p


class FakeNode:
    def __init__(self, ns):
        self.name, self.ns = ns, ns

    def cmd(self, line):
        return sh("ip", "netns", "exec", self.ns, "sh", "-c", line, check=False).stdout


class FakeIntf:
    def __init__(self, name, node):
        self.name, self.node, self.link = name, node, None

    def delete(self):
        sh("ip", "link", "del", self.name, check=False)


def test_relay_switch_lifecycle(tmp_path):
    from topologies.relay.node import RelaySwitch
    from topologies.relay.testbed import PROBE
    import sys

    tag = f"{os.getpid() % 10000}"
    name = f"lblrt{tag}s"
    ns = [f"lblrt-{tag}-sw-h1", f"lblrt-{tag}-sw-h2"]
    ips = ["10.251.0.1", "10.251.0.2"]
    sw = RelaySwitch.__new__(RelaySwitch)
    try:
        intfs = {}
        for i in (0, 1):
            sh("ip", "netns", "add", ns[i])
            host_if, sw_if = f"{name}h{i}", f"{name}-eth{i + 1}"
            sh("ip", "link", "add", host_if, "netns", ns[i], "type", "veth", "peer", "name", sw_if)
            sh("ip", "netns", "exec", ns[i], "ip", "addr", "add", f"{ips[i]}/24", "dev", host_if)
            sh("ip", "netns", "exec", ns[i], "ip", "link", "set", host_if, "up")
            mine, peer = FakeIntf(sw_if, sw), FakeIntf(host_if, FakeNode(ns[i]))
            mine.link = peer.link = types.SimpleNamespace(intf1=peer, intf2=mine)
            intfs[i + 1] = mine
        intfs[0] = FakeIntf("lo", sw)  # Mininet's root-namespace control intf
        sw.name, sw.intfs = name, intfs
        sw.params_ab, sw.params_ba = RelayParams(5), RelayParams(10)
        sw.rt_priority, sw.relay_proc, sw.relay_stats = 50, None, None
        sw.pid_dir = tmp_path

        sw.start([])
        pid = sw.relay_proc.pid
        assert sw.pid_file.read_text().strip() == str(pid)
        assert open(f"/proc/{pid}/environ", "rb").read().count(b"PATH=") >= 1
        # offloads really are off on the peer
        feat = sh("ip", "netns", "exec", ns[0], "ethtool", "-k", f"{name}h0").stdout
        assert "tcp-segmentation-offload: off" in feat
        out = sh("ip", "netns", "exec", ns[0], sys.executable, str(PROBE), ips[1],
                 "--count", "50", "--interval", "0.01").stdout
        import json
        rtts = [r for r in json.loads(out)["rtts_ms"] if r is not None]
        assert abs(statistics.median(rtts) - 15.0) < 1.0, rtts  # 5 ms one way + 10 ms back

        sw.stop()
        assert not sw.pid_file.exists()
        assert sw.relay_stats["final"] and sw.relay_stats["ab"]["tx"] >= 50
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1][0] == "Z"
        assert not os.path.exists(f"/sys/class/net/{name}-eth1")
        assert os.path.exists("/sys/class/net/lo")
    finally:
        if getattr(sw, "relay_proc", None) is not None:
            sw.relay_proc.kill()
        for n in ns:
            sh("ip", "netns", "del", n, check=False)
        for i in (1, 2):
            sh("ip", "link", "del", f"{name}-eth{i}", check=False)


def test_bad_params_rejected_before_anything_starts():
    from topologies.relay.node import RelaySwitch
    with pytest.raises(ValueError, match="loss_pct"):
        RelaySwitch("lblrtbad1", delay_ms=5, loss_pct=150)
