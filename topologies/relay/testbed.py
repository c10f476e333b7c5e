"""A throwaway two-namespace testbed around one relay, for integration tests and `make bench`.

Why not Mininet: tests and bench must not collide with a Mininet run on the same machine, and a
relay link only needs two namespaces, two veth pairs and the relay in the root namespace:

    ns lblrt-<tag>-h1            root namespace                 ns lblrt-<tag>-h2
    lblrt<tag>a0 10.250.0.1 <-veth-> lblrt<tag>a1 =relay= lblrt<tag>b1 <-veth-> lblrt<tag>b0 10.250.0.2

Everything created carries the `lblrt` prefix and is deleted in a finally, by name and by PID.
Neighbour entries are static so ARP does not pass through (and disturb) the measured path.
"""
from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from topologies.relay.link import (RelayBinaryMissing, RelayParams, prepare_relay_interface, read_stats,
                                   relay_binary_path, relay_command)

_counter = 0
PROBE = Path(__file__).with_name("rttprobe.py")
RTT_RE = re.compile(r"time=([0-9.]+) ms")
LOSS_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")


def skip_reason() -> str | None:
    """Why relay tests cannot run here (None when they can): they need root and the built
    relay binary."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET sockets)"
    try:
        relay_binary_path()
    except RelayBinaryMissing as e:
        return str(e)
    return None


def sh(argv, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def _mac(ns: str, ifname: str) -> str:
    return Path(f"/sys/class/net/{ifname}/address").read_text().strip() if ns is None else \
        sh(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()


@dataclass
class RelayLink:
    """A running testbed: two namespaces joined by one relay process."""

    tag: str
    ns1: str
    ns2: str
    ip1: str
    ip2: str
    relay_a: str
    relay_b: str
    proc: Optional[subprocess.Popen] = None
    stats_file: Optional[Path] = None
    workdir: Optional[Path] = None
    final_stats: Optional[dict] = None
    _children: list = field(default_factory=list)

    def exec(self, ns: str, argv, **kw) -> subprocess.CompletedProcess:
        return sh(["ip", "netns", "exec", ns, *argv], **kw)

    def ping_rtts(self, count: int, interval: float = 0.01, size: int = 56,
                  src: Optional[str] = None) -> list[float]:
        """Per-packet RTTs (ms) from h1 (or src ns) to h2."""
        ns = src or self.ns1
        dst = self.ip2 if ns == self.ns1 else self.ip1
        p = self.exec(ns, ["ping", "-n", "-c", str(count), "-i", str(interval), "-s", str(size),
                           "-W", "2", dst], check=False, timeout=count * interval + 30)
        return [float(x) for x in RTT_RE.findall(p.stdout)]

    def probe_rtts(self, count: int = 200, interval: float = 0.01, size: int = 56,
                   src: Optional[str] = None) -> list[float]:
        """Microsecond-resolution RTTs (ms) of answered echoes, via rttprobe.py (see there)."""
        ns = src or self.ns1
        dst = self.ip2 if ns == self.ns1 else self.ip1
        p = self.exec(ns, [sys.executable, str(PROBE), dst, "--count", str(count), "--interval",
                           str(interval), "--size", str(size)], timeout=count * interval + 30)
        return [r for r in json.loads(p.stdout)["rtts_ms"] if r is not None]

    def median_rtt(self, count: int = 200, interval: float = 0.01) -> float:
        rtts = self.probe_rtts(count, interval)
        if len(rtts) < count // 2:
            raise RuntimeError(f"only {len(rtts)}/{count} pings answered through relay {self.tag}")
        return statistics.median(rtts)

    def ping_loss(self, count: int, interval: float = 0.002, size: int = 56,
                  preload: int = 0) -> tuple[int, int]:
        """(transmitted, received) of a fast quiet ping run (preload: burst sent at once)."""
        extra = ["-l", str(preload)] if preload else []
        p = self.exec(self.ns1, ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                                 "-s", str(size), "-W", "1", *extra, self.ip2], check=False, timeout=count * interval + 30)
        m = LOSS_RE.search(p.stdout)
        if not m:
            raise RuntimeError(f"cannot parse ping output: {p.stdout!r} {p.stderr!r}")
        return int(m.group(1)), int(m.group(2))

    def wait_path(self, timeout: float = 10.0) -> None:
        """Readiness: one echo answered end to end, bounded by timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"relay exited early ({self.proc.returncode}): {self._stderr()}")
            if self.exec(self.ns1, ["ping", "-n", "-c", "1", "-W", "1", self.ip2],
                         check=False).returncode == 0:
                return
        raise TimeoutError(f"no ping answered through relay {self.tag} within {timeout:g}s")

    def stats(self, timeout: float = 5.0) -> dict:
        """Counters of the running relay (SIGUSR1 makes it rewrite the stats file)."""
        assert self.proc is not None and self.stats_file is not None
        before = self.stats_file.stat().st_mtime_ns if self.stats_file.exists() else 0
        self.stats_file.unlink(missing_ok=True)
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats_file.exists():
                return read_stats(self.stats_file)
            time.sleep(0.01)
        raise TimeoutError(f"relay {self.proc.pid} wrote no stats within {timeout:g}s (before={before})")

    def iperf_server(self, ns: Optional[str] = None, port: int = 5201) -> subprocess.Popen:
        """Start a one-shot iperf3 server and wait until it listens."""
        ns = ns or self.ns2
        p = subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-s", "-1", "-p", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._children.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"iperf3 server exited: {p.stderr.read()}")
            out = self.exec(ns, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
            if out.strip():
                return p
            time.sleep(0.02)
        raise TimeoutError("iperf3 server did not start listening within 10s")

    def iperf_client(self, seconds: float, bitrate: Optional[str] = None, port: int = 5201,
                     ns: Optional[str] = None, background: bool = False, omit: int = 0):
        """Run iperf3 TCP h1 -> h2. Returns received Mbit/s, or the Popen when background."""
        ns = ns or self.ns1
        dst = self.ip2 if ns == self.ns1 else self.ip1
        argv = ["ip", "netns", "exec", ns, "iperf3", "-c", dst, "-p", str(port), "-J",
                "-t", str(seconds)]
        if omit:
            argv += ["-O", str(omit)]
        if bitrate:
            argv += ["-b", bitrate]
        if background:
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self._children.append(p)
            return p
        p = sh(argv, timeout=seconds + 60)
        return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6

    def stop_relay(self, timeout: float = 5.0) -> Optional[dict]:
        """SIGTERM the relay by PID, wait, and return its final counters."""
        if self.proc is None:
            return self.final_stats
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.stats_file is not None and self.stats_file.exists():
            self.final_stats = read_stats(self.stats_file)
        return self.final_stats

    def _stderr(self) -> str:
        try:
            return (self.workdir / "relay.err").read_text().strip()
        except OSError:
            return ""


def _next_tag() -> str:
    global _counter
    _counter += 1
    return f"{os.getpid() % 10000}{_counter}"[-6:]


@contextmanager
def relay_testbed(params_ab: RelayParams, params_ba: Optional[RelayParams] = None,
                  rt_priority: Optional[int] = 50, tag: Optional[str] = None,
                  start_timeout: float = 10.0):
    """Two namespaces joined through one relay; yields a RelayLink; tears everything down.

    rt_priority: SCHED_FIFO for the relay (50 as measured in PLATFORM.md); None for normal.
    """
    binary = relay_binary_path()
    tag = tag or _next_tag()
    ns1, ns2 = f"lblrt-{tag}-h1", f"lblrt-{tag}-h2"
    a0, a1, b0, b1 = (f"lblrt{tag}{s}" for s in ("a0", "a1", "b0", "b1"))
    link = RelayLink(tag, ns1, ns2, "10.250.0.1", "10.250.0.2", a1, b1)
    err = None
    try:
        sh(["ip", "netns", "add", ns1])
        sh(["ip", "netns", "add", ns2])
        sh(["ip", "link", "add", a0, "netns", ns1, "type", "veth", "peer", "name", a1])
        sh(["ip", "link", "add", b0, "netns", ns2, "type", "veth", "peer", "name", b1])
        for ns, dev, ip in ((ns1, a0, link.ip1), (ns2, b0, link.ip2)):
            sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
            sh(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", dev])
            sh(["ip", "netns", "exec", ns, "ip", "link", "set", dev, "up"])
            prepare_relay_interface(dev, lambda argv, ns=ns: sh(["ip", "netns", "exec", ns, *argv]),
                                    relay_end=False)
        prepare_relay_interface(a1, sh)
        prepare_relay_interface(b1, sh)
        # static neighbours: no ARP through the relay while measuring
        mac1, mac2 = _mac(ns1, a0), _mac(ns2, b0)
        sh(["ip", "netns", "exec", ns1, "ip", "neigh", "replace", link.ip2, "lladdr", mac2,
            "dev", a0, "nud", "permanent"])
        sh(["ip", "netns", "exec", ns2, "ip", "neigh", "replace", link.ip1, "lladdr", mac1,
            "dev", b0, "nud", "permanent"])

        link.workdir = Path(tempfile.mkdtemp(prefix=f"lblrt-{tag}-"))
        link.stats_file = link.workdir / "stats.json"
        ready = link.workdir / "ready"
        argv = relay_command(binary, a1, b1, params_ab, params_ba, link.stats_file, rt_priority,
                             ready_file=ready)
        with open(link.workdir / "relay.err", "w") as errf:
            link.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errf,
                                         env=os.environ.copy())
        deadline = time.monotonic() + start_timeout
        while not ready.exists():
            if link.proc.poll() is not None:
                raise RuntimeError(f"relay exited ({link.proc.returncode}): {link._stderr()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay not ready within {start_timeout:g}s")
            time.sleep(0.005)
        link.wait_path(start_timeout)
        yield link
    finally:
        for p in link._children:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        try:
            link.stop_relay()
        except Exception as e:  # keep tearing down
            err = e
        for ns in (ns1, ns2):
            sh(["ip", "netns", "del", ns], check=False)
        for dev in (a1, b1):
            if Path(f"/sys/class/net/{dev}").exists():
                sh(["ip", "link", "del", dev], check=False)
        if link.workdir is not None:
            for f in link.workdir.iterdir():
                f.unlink(missing_ok=True)
            link.workdir.rmdir()
        if err is not None:
            raise err
