"""The LB tier of a live network: BGP speakers, the DC router's BGP, ECMP, and LB faults.

For every DC with `lbs: K > 1` (topologies/plan.py): one BIRD per LB speaker host
(lbk-DC-k) announcing the DC's VIP with itself as next hop, one BIRD in the DC router that
merges the K paths into the kernel's multipath route (lab/bird.py), BFD on every session,
`net.ipv4.fib_multipath_hash_policy=1` in the router (the 5-tuple), and a route watcher
(lab/ecmproute.py watch) whose JSON lines say when the router's next hops changed. lblab
never writes the VIP route in the hash-threshold variant; in the resilient variant an agent
maps BIRD's route into one resilient nexthop group (lab/ecmproute.py explains why).

Faults, as the experiments use them: `fail_lb` makes an LB's switch stop forwarding (its
uplink port goes down: BFD to its speaker crosses it, so the protocol itself notices); `kill_speaker` kills the LB's BGP daemon (the instance dies);
`restore_lb` / `start_speaker` undo them. Every daemon is a child of the run (LiveNet.spawn:
stopped by PID at teardown, marked for `lblab clean`), with config, control socket and log
under the run's work directory, bound to its emulated-network address only.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab.bird import BFD_INTERVAL_MS, BFD_MULTIPLIER, KERNEL_MAIN, Bird, Speaker, router_config, speaker_config, version
from topologies.plan import LB_UPLINK_PORT
from topologies.system import LblabError, run, stop_process

ECMP_MODES = ("hash-threshold", "resilient")
SHADOW_TABLE = 100


class LbTier:
    def __init__(self, live, ecmp: str = ECMP_MODES[0]):
        if ecmp not in ECMP_MODES:
            raise LblabError(f"ecmp must be one of {', '.join(ECMP_MODES)}, got {ecmp!r}")
        self.live = live
        self.plan = live.plan
        self.dcs = [d.name for d in self.plan.scenario.dcs if self.plan.lbs_of(d.name)]
        self.ecmp = ecmp
        self.dir = Path(live.work_dir) / "bgp"
        self.routers: dict[str, Bird] = {}
        self.speakers: dict[tuple[str, int], Bird] = {}
        self.mappers: dict[str, object] = {}
        self.watch_files: dict[str, Path] = {}
        self.failed: set[tuple[str, int]] = set()

    # -- bring-up ---------------------------------------------------------------------------
    def _popen(self, host: str):
        return lambda argv, **kw: self.live.spawn(host, argv, **kw)

    def router_iface(self, dc: str) -> str:
        return self.live.node(self.plan.router(dc).name).defaultIntf().name

    def vip(self, dc: str) -> str:
        return str(self.plan.scenario.dc(dc).vip)

    def gateway_lb(self, dc: str) -> dict[str, int]:
        """Speaker address (the router's next hop) -> LB number."""
        return {str(lb.speaker.ip): lb.k for lb in self.plan.lbs_of(dc)}

    def start(self, timeout_s: float = 30) -> None:
        if shutil.which("bird") is None:
            raise LblabError("the LB tier (lbs > 1) needs BIRD 2: run `sudo make setup` "
                             "(Debian package bird2)")
        self.dir.mkdir(parents=True, exist_ok=True)
        for dc in self.dcs:
            router = self.plan.router(dc)
            node = self.live.node(router.name)
            node.cmd("sysctl -qw net.ipv4.fib_multipath_hash_policy=1")
            self.watch_files[dc] = self.dir / f"route-{dc}.jsonl"
            self.live.spawn(router.name, [sys.executable, "-m", "lab.ecmproute", "watch",
                                          "--prefix", f"{self.vip(dc)}/32",
                                          "--out", str(self.watch_files[dc])])
            speakers = [Speaker(lb.speaker.name, lb.speaker.ip) for lb in self.plan.lbs_of(dc)]
            config = router_config(router.lan_ip, self.router_iface(dc), speakers,
                                   [self.vip(dc)], shadow_table=SHADOW_TABLE)
            self.routers[dc] = Bird(router.name, config, self.dir, self._popen(router.name))
            self.routers[dc].start()
            for lb in self.plan.lbs_of(dc):
                self.start_speaker(dc, lb.k)
        for dc in self.dcs:
            self.wait_nexthops(dc, self.all_lbs(dc), timeout_s)
            if self.ecmp == "resilient":
                self.ecmp = ECMP_MODES[0]
                self.set_ecmp("resilient", timeout_s)

    def all_lbs(self, dc: str) -> set[int]:
        return {lb.k for lb in self.plan.lbs_of(dc)}

    def _lb(self, dc: str, k: int):
        return next(lb for lb in self.plan.lbs_of(dc) if lb.k == k)

    # -- state --------------------------------------------------------------------------------
    def changes(self, dc: str) -> list[dict]:
        """The route watcher's lines: {"t": wall-clock s, "nexthops": [...]}, in order."""
        path = self.watch_files[dc]
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass   # a line being written
        return rows

    def serving(self, dc: str) -> set[int]:
        """The LBs the router's route uses now (as last reported by the watcher)."""
        rows = self.changes(dc)
        if not rows:
            return set()
        by_ip = self.gateway_lb(dc)
        return {by_ip[g] for g in rows[-1]["nexthops"] if g in by_ip}

    def wait_nexthops(self, dc: str, lbs: set[int], timeout_s: float = 15) -> float:
        """Until the router's route uses exactly the LBs `lbs`; returns the wall-clock time
        the watcher saw it happen."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = self.changes(dc)
            if rows and self.serving(dc) == set(lbs):
                return rows[-1]["t"]
            time.sleep(0.02)
        raise LblabError(f"{dc}: the router's VIP route uses LBs {sorted(self.serving(dc))} "
                         f"after {timeout_s:g} s, expected {sorted(lbs)} (BGP sessions: "
                         f"{', '.join(self.routers[dc].established()) or 'none up'}; see "
                         f"{self.dir})")

    def change_after(self, dc: str, t_wall: float, lbs: set[int]) -> float | None:
        """Seconds from `t_wall` until the route first used exactly `lbs` (None: never)."""
        by_ip = self.gateway_lb(dc)
        for row in self.changes(dc):
            if row["t"] >= t_wall and {by_ip.get(g) for g in row["nexthops"]} == set(lbs):
                return round(row["t"] - t_wall, 4)
        return None

    # -- ECMP variant -------------------------------------------------------------------------
    def set_ecmp(self, mode: str, timeout_s: float = 15) -> None:
        """Switch every tier's router between BIRD's own multipath route (hash-threshold)
        and the resilient group kept by the agent; one writer of the route at a time."""
        if mode not in ECMP_MODES:
            raise LblabError(f"ecmp must be one of {', '.join(ECMP_MODES)}, got {mode!r}")
        if mode == self.ecmp:
            return
        for dc in self.dcs:
            router = self.plan.router(dc).name
            prefix = f"{self.vip(dc)}/32"
            serving = self.serving(dc)
            if mode == "resilient":
                self.routers[dc].show("disable", KERNEL_MAIN)
                self.live.wait_until(router, f"test -z \"$(ip route show {prefix} proto bird)\"",
                                     f"{dc}: BIRD's route withdrawn", timeout_s)
                proc = self.live.spawn(router, [
                    sys.executable, "-m", "lab.ecmproute", "map", "--prefix", prefix,
                    "--table", str(SHADOW_TABLE), "--dev", self.router_iface(dc)],
                    stdout=subprocess.PIPE)
                if proc.stdout.readline().strip() != b"mapping":
                    raise LblabError(f"{dc}: the resilient nexthop agent did not start")
                self.mappers[dc] = proc
            else:
                stop_process(self.mappers.pop(dc))
                self.routers[dc].show("enable", KERNEL_MAIN)
            self.ecmp = mode
            self.live.wait_until(router, f"ip route show {prefix} | grep -q "
                                 f"'{'nhid' if mode == 'resilient' else 'proto bird'}'",
                                 f"{dc}: the {mode} VIP route", timeout_s)
            self.wait_nexthops(dc, serving, timeout_s)

    # -- faults -------------------------------------------------------------------------------
    def fail_lb(self, dc: str, k: int) -> float:
        """LB k's switch stops forwarding: its uplink port goes administratively down (OVS
        brings the device down; the fabric's end loses carrier), so nothing reaches or
        leaves the LB, BFD to its speaker included. Returns the wall-clock time it did.

        Not a drop-everything flow: OVS 3.1's userspace datapath was seen to keep a
        datapath flow cached from such a rule (actions:drop) for one direction after the
        rule was deleted, as long as traffic kept hitting it (the LB never came back until
        `ovs-appctl revalidator/purge`); a port that is down caches nothing."""
        self._uplink(dc, k, "down")
        self.failed.add((dc, k))
        return time.time()

    def restore_lb(self, dc: str, k: int) -> float:
        self._uplink(dc, k, "up")
        self.failed.discard((dc, k))
        return time.time()

    def _uplink(self, dc: str, k: int, state: str) -> None:
        run(["ovs-ofctl", "-O", "OpenFlow13", "mod-port", self._lb(dc, k).switch.name,
             str(LB_UPLINK_PORT), state])

    def start_speaker(self, dc: str, k: int) -> float:
        lb = self._lb(dc, k)
        router = self.plan.router(dc)
        sp = Speaker(lb.speaker.name, lb.speaker.ip)
        bird = Bird(lb.speaker.name, speaker_config(sp, router.lan_ip,
                                                    self.live.node(lb.speaker.name)
                                                    .defaultIntf().name, [self.vip(dc)]),
                    self.dir, self._popen(lb.speaker.name))
        bird.start()
        self.speakers[(dc, k)] = bird
        return time.time()

    def kill_speaker(self, dc: str, k: int) -> float:
        """The LB instance dies: its BGP daemon is killed (no goodbye to the router)."""
        bird = self.speakers.pop((dc, k))
        bird.proc.kill()
        bird.proc.wait(5)
        return time.time()

    def stop_speaker(self, dc: str, k: int) -> None:
        """A clean shutdown of LB k's speaker (the session closes, the path is withdrawn)."""
        stop_process(self.speakers.pop((dc, k)).proc)

    def describe(self) -> dict:
        """For run metadata."""
        return {"bgp": version(), "ecmp": self.ecmp,
                "bfd_ms": f"{BFD_INTERVAL_MS} x {BFD_MULTIPLIER}",
                "dcs": {dc: {"lbs": sorted(self.all_lbs(dc)),
                             "speakers": sorted(self.gateway_lb(dc))} for dc in self.dcs}}
