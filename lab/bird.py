"""BIRD 2 for the LB tier: a DC router learns each VIP from K LB speakers over BGP and
installs one multipath (ECMP) route; BFD takes a speaker's path out when its data path stops.

The configs are pure text from the arguments (unit-tested); `Bird` runs one daemon in a node
(any `popen(argv, **kw)`: a Mininet node's, or `ip netns exec`), foreground, with its own
control socket, pid file and log under the run's work directory (nodes share the
filesystem), bound with `strict bind` to its emulated-network address only. Nothing here
writes a route: the router's BIRD does, through its kernel protocol.

Choices, from BIRD 2.0.12's documentation and sources (doc/bird.sgml, proto/bgp):
- `merge paths on` in the kernel protocol turns equal BGP paths into one multipath route
  (paths merge when local-pref, AS path length, origin, IGP metric and eBGP/iBGP agree).
- BFD on both ends (100 ms x 5), `error wait time 1,5` (the default 60 s would keep a speaker out for a
  minute after a BFD drop) and `connect delay time 1` (the default 5 s delays every
  reconnection), `graceful restart off` (a dead speaker's routes must not stay as
  stale), hold 3 s / keepalive 1 s as the fallback when BFD is off.
- The kernel protocol rescans its table every 2 s (`scan time`; default 60): a protocol
  re-enabled with birdc (lab/bgp.py's ECMP switch) re-exports its routes at its first scan.
- The speaker's VIP is a `blackhole` static route and the speaker has no kernel protocol:
  it is announced (`next hop self`: the speaker's own address) but never installed there.
- eBGP needs explicit filters (RFC 8212): import and export only the VIP prefixes.
"""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from topologies.system import stop_process

ROUTER_AS = 65000
SPEAKER_AS = 65001          # all speakers share one AS: their paths merge
BFD_INTERVAL_MS = 100
# 100 ms x 5: a failure is detected in 0.4-0.5 s. With x 3 (0.3 s), sessions were seen
# to expire together when a dozen load generators started at once on 2 cores (the
# userspace switches that carry BFD starved for over 0.3 s): false withdrawals.
BFD_MULTIPLIER = 5


@dataclass(frozen=True)
class Speaker:
    name: str                # e.g. "lbk-us1-1": also the BGP protocol's name on the router
    ip: ipaddress.IPv4Address


def protocol_name(speaker_name: str) -> str:
    """The router's BGP protocol for a speaker: a BIRD symbol (never a keyword such as
    `bgp`: always prefixed) from the node name."""
    return "sp_" + "".join(c if c.isalnum() else "_" for c in speaker_name)


def _vip_filter(vips) -> str:
    nets = ", ".join(f"{ipaddress.IPv4Address(v)}/32" for v in vips)
    return f"net ~ [ {nets} ]"


def _bfd(iface: str, bfd: bool) -> str:
    if not bfd:
        return ""
    return (f'protocol bfd {{\n  debug {{ states, events }};\n'
            f'  interface "{iface}" {{ min rx interval {BFD_INTERVAL_MS} ms; '
            f"min tx interval {BFD_INTERVAL_MS} ms; multiplier {BFD_MULTIPLIER}; }};\n}}\n")


def _bgp_common(bfd: bool) -> str:
    return (f"  debug {{ states, events }};\n"
            f"  bfd {'on' if bfd else 'off'};\n  hold time 3;\n  keepalive time 1;\n"
            "  connect delay time 1;\n  connect retry time 2;\n  error wait time 1,5;\n"
            "  graceful restart off;\n"
            "  strict bind on;\n")


# to the daemon's stderr, which Bird sends to bird.log in its directory (not syslog)
LOG = "log stderr all;"
KERNEL_MAIN = "kernel_main"
KERNEL_SHADOW = "kernel_shadow"


def router_config(router_ip, iface: str, speakers: list[Speaker], vips, *,
                  bfd: bool = True, ecmp_limit: int = 16,
                  shadow_table: int | None = None) -> str:
    """The DC router's BIRD: one BGP session per speaker, their VIP paths merged into one
    kernel multipath route per VIP (protocol KERNEL_MAIN, the main table). `shadow_table`:
    the same routes also go to that kernel table, which no lookup uses, for an agent that
    maps them into a resilient nexthop group (lab/ecmproute.py; KERNEL_MAIN is then
    disabled with birdc, so only one writer owns the main table's VIP route)."""
    if not speakers:
        raise ValueError("a router config needs at least one speaker")
    if not vips:
        raise ValueError("a router config needs at least one VIP")
    names = [protocol_name(sp.name) for sp in speakers]
    if len(set(names)) != len(names):
        raise ValueError(f"speaker names collide as BIRD symbols: {sorted(names)}")
    rid = ipaddress.IPv4Address(router_ip)
    flt = _vip_filter(vips)
    # BIRD attaches one kernel protocol per BIRD table: the shadow copy is a second table
    # fed by a pipe (BIRD 2 pipes pass every route, not only the best, so paths still merge)
    kernels = [(KERNEL_MAIN, "", "")]
    shadow = []
    if shadow_table is not None:
        kernels.append((KERNEL_SHADOW, f"  kernel table {int(shadow_table)};\n",
                        "table shadow4; "))
        shadow = ["ipv4 table shadow4;",
                  f"protocol pipe shadow_pipe {{\n  table master4;\n  peer table shadow4;\n"
                  f"  export where {flt};\n  import none;\n}}"]
    out = [f"router id {rid};", LOG, "protocol device {}", *shadow,
           *(f"protocol kernel {name} {{\n{table}  scan time 2;\n"
             f"  merge paths on limit {ecmp_limit};\n"
             f"  ipv4 {{ {in_table}import none; export where {flt}; }};\n}}"
             for name, table, in_table in kernels),
           _bfd(iface, bfd).rstrip(),
           f"template bgp lb_speaker {{\n  local {rid} as {ROUTER_AS};\n{_bgp_common(bfd)}"
           f"  ipv4 {{ import where {flt}; export none; }};\n}}"]
    for sp in speakers:
        out.append(f"protocol bgp {protocol_name(sp.name)} from lb_speaker {{ "
                   f"neighbor {ipaddress.IPv4Address(sp.ip)} as {SPEAKER_AS}; }}")
    return "\n".join(x for x in out if x) + "\n"


def speaker_config(speaker: Speaker, router_ip, iface: str, vips, *, bfd: bool = True) -> str:
    """One LB speaker's BIRD: announces the VIPs with itself as next hop, installs nothing."""
    if not vips:
        raise ValueError("a speaker config needs at least one VIP")
    me = ipaddress.IPv4Address(speaker.ip)
    routes = "\n".join(f"  route {ipaddress.IPv4Address(v)}/32 blackhole;" for v in vips)
    out = [f"router id {me};", LOG, "protocol device {}",
           f"protocol static vips {{\n  ipv4;\n{routes}\n}}",
           _bfd(iface, bfd).rstrip(),
           f"protocol bgp dc_router {{\n  local {me} as {SPEAKER_AS};\n"
           f"  neighbor {ipaddress.IPv4Address(router_ip)} as {ROUTER_AS};\n{_bgp_common(bfd)}"
           f"  ipv4 {{ next hop self; import none; export where {_vip_filter(vips)}; }};\n}}"]
    return "\n".join(x for x in out if x) + "\n"


class BirdError(RuntimeError):
    pass


def version(bird: str = "bird") -> str | None:
    """`BIRD version 2.0.12` (printed on stderr), or None when BIRD is not installed."""
    if shutil.which(bird) is None:
        return None
    done = subprocess.run([bird, "--version"], capture_output=True, text=True, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[-1] if lines else "unknown"


class Bird:
    """One BIRD daemon in a node: `popen(argv, **kwargs)` runs argv there."""

    def __init__(self, name: str, config: str, work_dir: Path, popen, bird: str = "bird",
                 birdc: str = "birdc"):
        self.name = name
        self.dir = Path(work_dir) / f"bird-{name}"
        self.config_path = self.dir / "bird.conf"
        self.ctl = self.dir / "bird.ctl"
        self.pid_path = self.dir / "bird.pid"
        self.log_path = self.dir / "bird.log"
        self.config = config
        self.popen = popen
        self.bird, self.birdc = bird, birdc
        self.proc = None

    def start(self, timeout_s: float = 10) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config)
        check = subprocess.run([self.bird, "-p", "-c", str(self.config_path)],
                               capture_output=True, text=True, check=False)
        if check.returncode:
            lines = (check.stderr or check.stdout).strip().splitlines() or ["no message"]
            raise BirdError(f"BIRD config of {self.name} rejected: {lines[-1]}")
        for stale in (self.ctl, self.pid_path):   # left by an earlier, killed daemon
            stale.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = self.popen([self.bird, "-f", "-c", str(self.config_path),
                                    "-s", str(self.ctl), "-P", str(self.pid_path)],
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not (self.ctl.exists() and "Daemon is up" in self.show("show", "status")):
            if self.proc.poll() is not None:
                raise BirdError(f"BIRD of {self.name} exited with {self.proc.returncode}; "
                                f"see {self.log_path}")
            if time.monotonic() > deadline:
                raise BirdError(f"BIRD of {self.name} opened no control socket within "
                                f"{timeout_s:g} s")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def show(self, *words: str) -> str:
        out = subprocess.run([self.birdc, "-s", str(self.ctl), *words], capture_output=True,
                             text=True, timeout=10, check=False)
        return out.stdout

    def established(self) -> list[str]:
        """Names of the BGP protocols whose session is up (on a router: protocol_name of
        each speaker)."""
        up = []
        for line in self.show("show", "protocols").splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "BGP" and parts[5] == "Established":
                up.append(parts[0])
        return up

    def stop(self, timeout_s: float = 5) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s)
