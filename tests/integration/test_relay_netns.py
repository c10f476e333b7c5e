"""The relay applies its configured delay and loss, and leaves nothing behind (root only).

Uses plain `lblrt-*` namespaces and veths (topologies.relay.testbed), never Mininet, so it can run
beside a Mininet experiment on the same machine.
"""
import json
import os
import signal
import statistics
import subprocess
import time

import pytest

from topologies.relay.link import Compensation, RelayParams, relay_binary_path
from topologies.relay.testbed import skip_reason

pytestmark = pytest.mark.integration


if skip_reason():
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=skip_reason())]
else:
    from topologies.relay.testbed import relay_testbed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not a surviving relay
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("delay_ms", [5, 20])
def test_median_rtt_matches_configured_delay(delay_ms):
    with relay_testbed(RelayParams(delay_ms, seed=1)) as link:
        rtts = link.probe_rtts(count=200, interval=0.01)
        assert len(rtts) >= 195, f"lost {200 - len(rtts)} of 200 echoes on a lossless link"
        med = statistics.median(rtts)
        assert abs(med - 2 * delay_ms) < 1.0, f"median RTT {med:.3f} ms, configured {2 * delay_ms} ms"
        stats = link.stop_relay()
    assert stats["final"] and stats["ab"]["drop_loss"] == 0 and stats["ab"]["tx_errors"] == 0


def test_lan_correction_applies_only_to_matching_addresses():
    """The per-frame correction lblab uses to take LAN latency out of WAN delays: frames to
    and from h2's address lose 3 ms each way; a rule for another subnet changes nothing."""
    h2 = "10.250.0.2/32"
    ab = RelayParams(10, seed=1, comp=(Compensation("dst", h2, 3),
                                      Compensation("dst", "10.9.0.0/24", 5)))
    ba = RelayParams(10, seed=2, comp=(Compensation("src", h2, 3),))
    with relay_testbed(ab, ba) as link:
        med = statistics.median(link.probe_rtts(count=100, interval=0.01))
        stats = link.stop_relay()
    assert abs(med - 14.0) < 1.0, f"median RTT {med:.3f} ms, expected 20 - 2 x 3 = 14 ms"
    assert stats["ab"]["compensated"] > 0 and stats["ba"]["compensated"] > 0


def test_loss_is_applied():
    # 10% each way -> round-trip loss 1 - 0.9**2 = 19%; 500 echoes: sd about 1.8 points
    with relay_testbed(RelayParams(1, loss_pct=10, seed=42)) as link:
        sent, received = link.ping_loss(500, interval=0.002)
        stats = link.stop_relay()
    loss = 100.0 * (sent - received) / sent
    assert 12.0 <= loss <= 26.0, f"round-trip loss {loss:.1f}% (expected about 19%)"
    for d in ("ab", "ba"):
        s = stats[d]
        assert s["rx"] > 0 and s["drop_loss"] > 0
        assert 0.04 <= s["drop_loss"] / s["rx"] <= 0.17, f"{d}: {s}"


def test_rate_cap_creates_queueing_delay():
    # 1 Mbit/s cap: a 1000-byte frame takes 8 ms to serialise, so a burst of echoes queues
    params = RelayParams(2, rate_mbps=1, queue_pkts=10)
    with relay_testbed(params) as link:
        idle = statistics.median(link.probe_rtts(count=20, interval=0.05, size=1000))
        assert abs(idle - (4 + 2 * 8.2)) < 1.5, f"idle RTT {idle:.2f} ms"
        link.ping_loss(60, interval=0.001, size=1000, preload=30)  # overload: tail drops on a 10-frame queue
        stats = link.stop_relay()
    assert stats["ab"]["drop_queue"] > 0, stats["ab"]


def test_sigterm_leaves_no_relay_and_valid_stats(tmp_path):
    with relay_testbed(RelayParams(5)) as link:
        pid = link.proc.pid
        link.ping_loss(20, interval=0.01)
        os.kill(pid, signal.SIGTERM)
        link.proc.wait(timeout=5)
        assert link.proc.returncode == 0
        stats = json.loads(link.stats_file.read_text())
        assert stats["pid"] == pid and stats["final"] is True
        assert stats["ab"]["rx"] >= 20 and stats["ba"]["tx"] >= 20
        assert not _pid_alive(pid)
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"lblrt{link.tag}" not in out
    assert link.ns1 not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout


def test_sigint_and_bad_interface():
    with relay_testbed(RelayParams(1)) as link:
        link.proc.send_signal(signal.SIGINT)
        link.proc.wait(timeout=5)
        assert link.proc.returncode == 0 and not _pid_alive(link.proc.pid)
    p = subprocess.run([str(relay_binary_path()), "lblrt-nope0", "lblrt-nope1"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "no such interface 'lblrt-nope0'" in p.stderr


def test_idle_relay_costs_no_cpu():
    with relay_testbed(RelayParams(5)) as link:
        ticks = lambda: sum(int(x) for x in open(f"/proc/{link.proc.pid}/stat").read()
                            .split(") ")[1].split()[11:13])
        t0 = ticks()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.1)
        assert ticks() - t0 <= 2, "idle relay used CPU"


@pytest.mark.parametrize("reorder", [False, True])
def test_jitter_spreads_rtt_within_bounds(reorder):
    # +-2 ms uniform each way around 10 ms: RTT in [16, 24] (+ small overhead), visibly spread
    with relay_testbed(RelayParams(10, jitter_ms=2, seed=3, reorder=reorder)) as link:
        rtts = link.probe_rtts(count=200, interval=0.005)
        stats = link.stop_relay()
    assert len(rtts) >= 195
    # percentiles, not min/max: one scheduling hiccup on a busy 2-core host must not fail this
    q = statistics.quantiles(rtts, n=100)
    # nothing arrives earlier than the jitter allows; late tail only from CPU scheduling
    assert min(rtts) >= 15.9 and q[94] <= 24.5, (min(rtts), q[94], max(rtts))
    assert statistics.pstdev(rtts) > 0.5
    assert abs(statistics.median(rtts) - 20) < 1.5
    assert stats["ab"]["reorder"] is reorder


def test_clean_by_pidfile_stops_relay_and_spares_others(tmp_path):
    from topologies.relay.link import stop_relays_from_pidfiles
    with relay_testbed(RelayParams(1)) as link:
        (tmp_path / "r1.pid").write_text(f"{link.proc.pid}\n")
        (tmp_path / "other.pid").write_text(f"{os.getpid()}\n")  # not a relay: must survive
        assert stop_relays_from_pidfiles(tmp_path) == [link.proc.pid]
        link.proc.wait(timeout=5)
        assert not list(tmp_path.glob("*.pid"))
        assert json.loads(link.stats_file.read_text())["final"] is True


def test_relay_dies_with_its_parent(tmp_path):
    """--die-with-parent: a crashed run (parent gone) leaves no relay duplicating frames."""
    import sys
    from topologies.relay.link import relay_command
    with relay_testbed(RelayParams(1)) as link:
        ready = tmp_path / "ready"
        argv = relay_command(relay_binary_path(), link.relay_a, link.relay_b, RelayParams(1),
                             None, tmp_path / "s.json", None, ready_file=ready)
        # parent starts the relay, waits until it is ready, prints its PID and exits hard
        code = ("import subprocess,sys,os,time,pathlib\n"
                f"p=subprocess.Popen({argv!r})\n"
                f"r=pathlib.Path({str(ready)!r}); d=time.monotonic()+10\n"
                "while not r.exists() and time.monotonic()<d: time.sleep(0.005)\n"
                "print(p.pid, flush=True); os._exit(0)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=30)
        pid = int(out.stdout.split()[0])
        deadline = time.monotonic() + 5
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _pid_alive(pid)
        assert json.loads((tmp_path / "s.json").read_text())["final"] is True
