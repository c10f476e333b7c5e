"""Relay parameter validation and argv building (no root, no binary needed)."""
import os
import stat

import pytest

from topologies.relay.link import (RelayBinaryMissing, RelayParams, prepare_relay_interface,
                                   read_stats, relay_binary_path, relay_command)


def test_defaults():
    p = RelayParams(5)
    assert (p.delay_ms, p.jitter_ms, p.loss_pct, p.rate_mbps, p.queue_pkts, p.seed, p.reorder) == \
        (5, 0, 0, None, 1000, None, False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(delay_ms=-1), "delay_ms must be >= 0"),
    (dict(delay_ms="5"), "delay_ms must be a number"),
    (dict(delay_ms=float("nan")), "delay_ms must be finite"),
    (dict(delay_ms=True), "delay_ms must be a number"),
    (dict(delay_ms=5, jitter_ms=-0.1), "jitter_ms must be >= 0"),
    (dict(delay_ms=5, jitter_ms=6), "must not exceed delay_ms"),
    (dict(delay_ms=5, loss_pct=101), "loss_pct must be <= 100"),
    (dict(delay_ms=5, loss_pct=-1), "loss_pct must be >= 0"),
    (dict(delay_ms=5, rate_mbps=0), "rate_mbps must be > 0"),
    (dict(delay_ms=5, rate_mbps=-3), "rate_mbps must be > 0"),
    (dict(delay_ms=5, queue_pkts=0), "queue_pkts must be an integer"),
    (dict(delay_ms=5, queue_pkts=10.5), "queue_pkts must be an integer"),
    (dict(delay_ms=5, seed=-1), "seed must be an integer"),
    (dict(delay_ms=5, seed="x"), "seed must be an integer"),
    (dict(delay_ms=5, reorder="yes"), "reorder must be True or False"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RelayParams(**kwargs)


def test_argv_symmetric():
    p = RelayParams(20, jitter_ms=1.5, loss_pct=1, rate_mbps=100, queue_pkts=500, seed=7)
    argv = relay_command("/bin/relay", "s1-eth1", "s1-eth2", p, None, "/tmp/st.json", 50)
    assert argv[0] == "/bin/relay"
    assert argv[-2:] == ["s1-eth1", "s1-eth2"]
    joined = " ".join(argv)
    for d in ("ab", "ba"):
        assert f"--{d}-delay 20 --{d}-jitter 1.5 --{d}-loss 1 --{d}-rate 100 --{d}-queue 500" in joined
    assert "--seed 7" in joined and "--rt-priority 50" in joined
    assert "--stats-file /tmp/st.json" in joined
    assert "--die-with-parent" in argv
    assert "--ab-reorder" not in argv


def test_argv_asymmetric_and_minimal():
    argv = relay_command("r", "a", "b", RelayParams(5), RelayParams(0.25, reorder=True, jitter_ms=0.1),
                         None, None, die_with_parent=False, ready_file="/tmp/r")
    assert argv == ["r", "--ready-file", "/tmp/r", "--ab-delay", "5", "--ba-delay", "0.25",
                    "--ba-jitter", "0.1", "--ba-reorder", "a", "b"]


@pytest.mark.parametrize("a, b, rt, match", [
    ("a", "a", None, "must differ"),
    ("", "b", None, "if_a is not a valid"),
    ("a" * 16, "b", None, "if_a is not a valid"),
    ("a", "b/c", None, "if_b is not a valid"),
    ("a", "b", 0, "rt_priority"),
    ("a", "b", 100, "rt_priority"),
])
def test_command_validation(a, b, rt, match):
    with pytest.raises(ValueError, match=match):
        relay_command("r", a, b, RelayParams(1), None, None, rt)


def test_binary_path_env(tmp_path, monkeypatch):
    fake = tmp_path / "lblab-relay"
    monkeypatch.setenv("LBLAB_RELAY_BIN", str(fake))
    with pytest.raises(RelayBinaryMissing, match="make setup"):
        relay_binary_path()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert relay_binary_path() == fake


def test_prepare_commands():
    seen = []
    prepare_relay_interface("r1", seen.append)
    assert seen[0] == ["ethtool", "-K", "r1", "tso", "off", "gso", "off", "gro", "off",
                       "tx", "off", "rx", "off"]
    assert ["ip", "link", "set", "dev", "r1", "promisc", "on", "up"] in seen
    seen.clear()
    prepare_relay_interface("peer", seen.append, relay_end=False)
    assert len(seen) == 1 and seen[0][:3] == ["ethtool", "-K", "peer"]


def test_read_stats(tmp_path):
    f = tmp_path / "s.json"
    f.write_text('{"pid": 1, "ab": {"rx": 3}}\n')
    assert read_stats(f)["ab"]["rx"] == 3
    f.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_stats(f)


def test_no_mininet_import():
    import subprocess
    import sys
    code = "import sys, topologies.relay, topologies.relay.link; print('mininet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "False", out.stderr
