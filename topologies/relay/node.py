"""RelaySwitch: a Mininet "switch" with two ports joined by an lblab-relay process.

Why a Switch: Mininet wires links to nodes, so the cheapest way to put a userspace emulator in the
middle of a link h1 <-> h2 is a two-port node in the root namespace, h1 -- r1 -- h2, whose
start() launches the relay on its two interfaces. One relay process per link, because one process
serving several links lets a busy link delay the others (PLATFORM.md).

This is the only relay module that imports Mininet; import it lazily.

Node params (all optional; symmetric unless a *_ab / *_ba override is given, where "a" is the
switch's first data port, i.e. the first link added to it):
    delay_ms, jitter_ms, loss_pct, rate_mbps, queue_pkts, seed, reorder, rt_priority (default 50,
    None for normal scheduling), e.g. delay_ms_ba=30.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import time
import zlib
from pathlib import Path

from mininet.node import Switch

from topologies.relay.link import (PID_DIR, RelayParams, prepare_relay_interface, read_stats,
                                   relay_binary_path, relay_command, stop_relay_pid)

_PARAM_KEYS = ("delay_ms", "jitter_ms", "loss_pct", "rate_mbps", "queue_pkts", "seed", "reorder")


def _node_runner(node):
    """run_cmd for prepare_relay_interface that executes inside a Mininet node's namespace."""
    def run(argv):
        out = node.cmd(shlex.join(argv) + " 2>&1; echo __lblab_rc=$?")
        body, _, rc = out.rpartition("__lblab_rc=")
        if rc.strip() != "0":
            raise RuntimeError(f"{node.name}: `{shlex.join(argv)}` failed ({rc.strip()}): {body.strip()}")
    return run


def _root_runner(argv):
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{shlex.join(argv)}` failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")


class RelaySwitch(Switch):
    """Two-port root-namespace node that emulates the link between its ports in userspace."""

    pid_dir = PID_DIR
    start_timeout = 10.0
    # SIGTERM the relay if the Python process that started it dies (no relay outlives a run).
    # Linux ties this to the *thread* that forked: set False if start() runs in a short-lived thread.
    die_with_parent = True

    def __init__(self, name, dpid=None, rt_priority=50, **params):
        common = {k: params.pop(k) for k in _PARAM_KEYS if k in params}
        per_dir = {}
        for d in ("ab", "ba"):
            kw = dict(common)
            kw.update({k: params.pop(f"{k}_{d}") for k in _PARAM_KEYS if f"{k}_{d}" in params})
            kw.setdefault("delay_ms", 0)
            per_dir[d] = RelayParams(**kw)  # validates before any process or interface exists
        if dpid is None and not any(c.isdigit() for c in name):
            dpid = "%x" % (zlib.crc32(name.encode()) or 1)
        Switch.__init__(self, name, dpid=dpid, **params)
        self.params_ab, self.params_ba = per_dir["ab"], per_dir["ba"]
        self.rt_priority = rt_priority
        self.relay_proc = None
        self.relay_stats = None

    # paths -------------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return Path(self.pid_dir) / f"{self.name}.pid"

    @property
    def stats_file(self) -> Path:
        return Path(self.pid_dir) / f"{self.name}.stats.json"

    @property
    def log_file(self) -> Path:
        return Path(self.pid_dir) / f"{self.name}.log"

    def data_intfs(self):
        """The two link ports in port order (the root-namespace 'lo' control intf excluded)."""
        intfs = [self.intfs[p] for p in sorted(self.intfs) if self.intfs[p].name != "lo"]
        if len(intfs) != 2:
            raise ValueError(f"RelaySwitch {self.name} needs exactly 2 links, has {len(intfs)}: "
                             f"{[i.name for i in intfs]}")
        return intfs

    @staticmethod
    def _peer(intf):
        link = getattr(intf, "link", None)
        if link is None:
            return None
        return link.intf2 if link.intf1 is intf else link.intf1

    # lifecycle ---------------------------------------------------------------------------
    def start(self, controllers):
        """Offloads off on both ports and both peers, then launch the relay and wait until ready."""
        a, b = self.data_intfs()
        for intf in (a, b):
            prepare_relay_interface(intf.name, _root_runner, relay_end=True)
            peer = self._peer(intf)
            if peer is not None:
                prepare_relay_interface(peer.name, _node_runner(peer.node), relay_end=False)
        self._launch()

    def set_compensation(self, comp_ab: tuple = (), comp_ba: tuple = ()) -> None:
        """Restart the relay with these Compensation rules per direction (the interfaces
        stay; frames in flight during the few ms of the restart are lost, so call it before
        traffic starts). Counters of the replaced process are not kept."""
        self.params_ab = dataclasses.replace(self.params_ab, comp=tuple(comp_ab))
        self.params_ba = dataclasses.replace(self.params_ba, comp=tuple(comp_ba))
        self._stop_relay()
        self._launch()

    def _launch(self):
        a, b = self.data_intfs()
        pid_dir = Path(self.pid_dir)
        pid_dir.mkdir(parents=True, exist_ok=True)
        ready = pid_dir / f"{self.name}.ready"
        for f in (ready, self.stats_file):
            f.unlink(missing_ok=True)
        argv = relay_command(relay_binary_path(), a.name, b.name, self.params_ab, self.params_ba,
                             self.stats_file, self.rt_priority, ready_file=ready,
                             die_with_parent=self.die_with_parent)
        with open(self.log_file, "w") as log:
            # Popen directly (no shell): the PID we record is the relay's own
            self.relay_proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=log,
                                               env=os.environ.copy(), close_fds=True)
        self.pid_file.write_text(f"{self.relay_proc.pid}\n")
        deadline = time.monotonic() + self.start_timeout
        while not ready.exists():
            if self.relay_proc.poll() is not None:
                err = self.log_file.read_text().strip()
                self.pid_file.unlink(missing_ok=True)
                raise RuntimeError(f"relay for {self.name} exited ({self.relay_proc.returncode}): {err}")
            if time.monotonic() > deadline:
                self._stop_relay()
                raise RuntimeError(f"relay for {self.name} not ready within {self.start_timeout:g}s")
            time.sleep(0.005)
        ready.unlink(missing_ok=True)

    def _stop_relay(self):
        proc, self.relay_proc = self.relay_proc, None
        if proc is not None:
            if proc.poll() is None:
                stop_relay_pid(proc.pid)
            try:
                proc.wait(5)  # reap it
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            try:
                self.relay_stats = read_stats(self.stats_file)
            except (OSError, ValueError):
                self.relay_stats = None
        self.pid_file.unlink(missing_ok=True)

    def stop(self, deleteIntfs=True):
        """Stop the relay by PID (counters land in self.relay_stats), then delete intfs."""
        self._stop_relay()
        Switch.stop(self, deleteIntfs)

    def connected(self):
        return self.relay_proc is not None and self.relay_proc.poll() is None
