"""Parameters, command line and interface preparation for the lblab-relay link emulator.

Pure Python, no Mininet import, so unit tests, `lblab doctor` and the bench can use it anywhere.

Which interfaces need offloads off: the relay reads frames with AF_PACKET on its two ends. If the
*peer* end (the node-side veth) has TSO/GSO or checksum offload on, the relay receives 64 KiB
super-frames or frames with unfinished checksums that it cannot resend; if the relay's *own* end
has GRO/rx offload on, the kernel merges frames before the relay sees them. So all four veth ends
of a relayed link get `ethtool -K IF tso off gso off gro off tx off rx off`: the two relay ends
and their two peers (one per attached node).
"""
from __future__ import annotations

import ipaddress
import json
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from topologies.system import REPO_ROOT

OFFLOAD_ARGS = ("tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off")
DEFAULT_BINARY = REPO_ROOT / "build" / "lblab-relay"
BUILD_COMMAND = "gcc -O2 -Wall -o build/lblab-relay topologies/relay/lblab_relay.c"


class RelayBinaryMissing(RuntimeError):
    """build/lblab-relay was not compiled (run `make setup`)."""


def _num(name: str, value, lo: float, hi: Optional[float] = None, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if (v <= lo) if lo_open else (v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi:g}, got {value!r}")
    return v


@dataclass(frozen=True)
class Compensation:
    """Take `ms` off the one-way delay of IPv4 frames whose source (field "src") or
    destination ("dst") is in `subnet`: how lblab removes the measured latency of the LAN a
    frame crossed (or will cross) at a path's end from the WAN delay (lab/calibrate.py,
    LiveNet.calibrate). Frames between routers match no LAN subnet and keep the full delay."""

    field: str
    subnet: str
    ms: float

    def __post_init__(self):
        if self.field not in ("src", "dst"):
            raise ValueError(f"compensation field must be 'src' or 'dst', got {self.field!r}")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as e:
            raise ValueError(f"compensation subnet: {e}") from None
        object.__setattr__(self, "subnet", str(net))
        _num("compensation ms", self.ms, 0, 3_600_000)

    def arg(self) -> str:
        return f"{self.field}:{self.subnet}:{self.ms:.4f}"


MAX_COMPENSATIONS = 4  # per direction, as in lblab_relay.c


@dataclass(frozen=True)
class RelayParams:
    """One direction of an emulated link.

    delay_ms: constant one-way delay; jitter_ms: uniform +-jitter (order kept unless reorder);
    loss_pct: random loss in percent; rate_mbps: rate cap (None = uncapped) with a tail-drop
    queue of queue_pkts frames, frames serialised at the cap and then delayed (netem + htb
    semantics, so queueing delay shows up when offered load exceeds the cap); seed: RNG seed;
    comp: Compensation rules (delay taken off matching frames, never below 0).
    """

    delay_ms: float
    jitter_ms: float = 0
    loss_pct: float = 0
    rate_mbps: Optional[float] = None
    queue_pkts: int = 1000
    seed: Optional[int] = None
    reorder: bool = False
    comp: tuple = ()

    def __post_init__(self):
        _num("delay_ms", self.delay_ms, 0, 3_600_000)
        _num("jitter_ms", self.jitter_ms, 0, 3_600_000)
        _num("loss_pct", self.loss_pct, 0, 100)
        if self.rate_mbps is not None:
            _num("rate_mbps", self.rate_mbps, 0, 1_000_000, lo_open=True)
        if isinstance(self.queue_pkts, bool) or not isinstance(self.queue_pkts, int) \
                or not 1 <= self.queue_pkts <= 10_000_000:
            raise ValueError(f"queue_pkts must be an integer in 1..10000000, got {self.queue_pkts!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2 ** 53):
            raise ValueError(f"seed must be an integer in 0..2**53-1, got {self.seed!r}")
        if not isinstance(self.comp, tuple) or len(self.comp) > MAX_COMPENSATIONS or \
                not all(isinstance(c, Compensation) for c in self.comp):
            raise ValueError(f"comp must be a tuple of at most {MAX_COMPENSATIONS} "
                             f"Compensation, got {self.comp!r}")
        if not isinstance(self.reorder, bool):
            raise ValueError(f"reorder must be True or False, got {self.reorder!r}")
        if self.jitter_ms > 0 and self.jitter_ms > self.delay_ms:
            # negative delays are clipped to 0, which would skew the mean: say so up front
            raise ValueError(f"jitter_ms ({self.jitter_ms:g}) must not exceed delay_ms ({self.delay_ms:g})")

    def argv(self, prefix: str) -> list[str]:
        """Options for one direction; prefix is 'ab' or 'ba'."""
        out = [f"--{prefix}-delay", _fmt(self.delay_ms)]
        if self.jitter_ms:
            out += [f"--{prefix}-jitter", _fmt(self.jitter_ms)]
        if self.loss_pct:
            out += [f"--{prefix}-loss", _fmt(self.loss_pct)]
        if self.rate_mbps is not None:
            out += [f"--{prefix}-rate", _fmt(self.rate_mbps), f"--{prefix}-queue", str(self.queue_pkts)]
        if self.reorder:
            out.append(f"--{prefix}-reorder")
        for c in self.comp:
            out += [f"--{prefix}-comp", c.arg()]
        return out


def _fmt(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def relay_command(binary, if_a: str, if_b: str, params_a_to_b: RelayParams,
                  params_b_to_a: Optional[RelayParams] = None, stats_file=None,
                  rt_priority: Optional[int] = None, *, ready_file=None,
                  die_with_parent: bool = True) -> list[str]:
    """argv for one relay process joining if_a and if_b (B->A defaults to the A->B params).

    The seed is taken from A->B (or B->A if only that one has it); the relay derives separate
    random streams per direction from it.
    """
    if params_b_to_a is None:
        params_b_to_a = params_a_to_b
    for name, ifn in (("if_a", if_a), ("if_b", if_b)):
        if not isinstance(ifn, str) or not ifn or len(ifn) > 15 or "/" in ifn or ifn.strip() != ifn:
            raise ValueError(f"{name} is not a valid interface name: {ifn!r}")
    if if_a == if_b:
        raise ValueError(f"if_a and if_b must differ (both {if_a!r})")
    if rt_priority is not None and (isinstance(rt_priority, bool) or not isinstance(rt_priority, int)
                                    or not 1 <= rt_priority <= 99):
        raise ValueError(f"rt_priority must be an integer in 1..99 or None, got {rt_priority!r}")
    argv = [str(binary)]
    seed = params_a_to_b.seed if params_a_to_b.seed is not None else params_b_to_a.seed
    if seed is not None:
        argv += ["--seed", str(seed)]
    if rt_priority is not None:
        argv += ["--rt-priority", str(rt_priority)]
    if stats_file is not None:
        argv += ["--stats-file", str(stats_file)]
    if ready_file is not None:
        argv += ["--ready-file", str(ready_file)]
    if die_with_parent:
        argv.append("--die-with-parent")
    argv += params_a_to_b.argv("ab") + params_b_to_a.argv("ba")
    argv += [if_a, if_b]
    return argv


def relay_binary_path() -> Path:
    """The compiled relay: $LBLAB_RELAY_BIN if set, else <repo>/build/lblab-relay."""
    env = os.environ.get("LBLAB_RELAY_BIN")
    path = Path(env) if env else DEFAULT_BINARY
    if not path.is_file() or not os.access(path, os.X_OK):
        where = f"LBLAB_RELAY_BIN={env}" if env else str(path)
        raise RelayBinaryMissing(
            f"userspace link relay not built ({where} missing or not executable): "
            f"run `make setup` or `{BUILD_COMMAND}` in {REPO_ROOT}")
    return path


def _default_run(argv: Sequence[str]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")


def offload_commands(ifname: str) -> list[list[str]]:
    """Commands that make an interface hand the relay plain <= MTU frames."""
    return [["ethtool", "-K", ifname, *OFFLOAD_ARGS]]


def prepare_relay_interface(ifname: str, run_cmd: Callable[[Sequence[str]], object] = _default_run,
                            relay_end: bool = True) -> None:
    """Turn offloads off on ifname; on a relay end also set it promiscuous and up, IPv6 off.

    Call it for both relay ends (relay_end=True) and for both peers (relay_end=False, run in the
    peer's namespace). run_cmd(argv) must raise on failure. IPv6 is disabled on relay ends so the
    root namespace does not send its own router solicitations / MLD into the emulated link.
    """
    for cmd in offload_commands(ifname):
        run_cmd(cmd)
    if relay_end:
        run_cmd(["sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1"])
        run_cmd(["ip", "link", "set", "dev", ifname, "promisc", "on", "up"])


def read_stats(path) -> dict:
    """Parse the relay's JSON counters line (written on exit, or on SIGUSR1 with --stats-file)."""
    text = Path(path).read_text().strip()
    if not text:
        raise ValueError(f"relay stats file {path} is empty")
    return json.loads(text.splitlines()[-1])


PID_DIR = Path("/run/lblab/relays")


def _is_relay(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(cmd.decode(errors="replace")) == "lblab-relay"


def stop_relay_pid(pid: int, timeout: float = 5.0) -> bool:
    """SIGTERM a relay by PID (only if that PID really is lblab-relay), SIGKILL after timeout.

    Returns True if a relay was running. Used by RelaySwitch.stop and by `lblab clean` on the
    PID files in PID_DIR; checking the command line guards against a recycled PID.
    """
    import signal
    import time
    if not _is_relay(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_relay(pid) or _is_zombie(pid):
            return True
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] == "Z"
    except (OSError, IndexError):
        return True


def stop_relays_from_pidfiles(pid_dir: Path = PID_DIR, timeout: float = 5.0) -> list[int]:
    """Stop every relay recorded in pid_dir (crash recovery) and remove the PID files."""
    stopped = []
    if not pid_dir.is_dir():
        return stopped
    for f in sorted(pid_dir.glob("*.pid")):
        try:
            pid = int(f.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid and stop_relay_pid(pid, timeout):
            stopped.append(pid)
        f.unlink(missing_ok=True)
    return stopped
