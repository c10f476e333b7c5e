"""What this kernel offers and which mechanism lblab picks for each job (`lblab doctor`).

Detection is by trying, in a scratch network namespace of our own (lbprobe-<pid>), never by
assuming: users' VMs have netem, the openvswitch module and ip_gre; container and micro-VM
kernels (and lblab's CI machines) lack all three.
"""
from __future__ import annotations

import os
import platform
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from topologies import ovs
from topologies.plan import REGION_LANS
from topologies.system import REPO_ROOT, have, ok, run

BACKEND_SERVERS = ("nginx", "python")   # experiments/workloads/control.py starts them



@dataclass(frozen=True)
class Mechanisms:
    ovs_datapath: str   # kernel | userspace
    link_delay: str     # netem | relay | none
    gre_decap: str      # kernel | userspace | none
    controller: str     # "os-ken 4.2.2 (threads)" | "ryu 4.34 (eventlet)" | "none (...)"
    netem_available: bool
    relay_available: bool
    ip_gre_available: bool
    notes: tuple[str, ...] = ()
    backend_server: str = "python"   # nginx | python (experiments/workloads/control.py)
    region_lan: str = "ovs"          # bridge | ovs: what carries client regions' LANs

    @property
    def ovs_datapath_mininet(self) -> str:
        return "kernel" if self.ovs_datapath == "kernel" else "user"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


@contextmanager
def scratch_netns():
    name = f"lbprobe-{os.getpid()}"
    run(["ip", "netns", "add", name])
    try:
        yield name
    finally:
        run(["ip", "netns", "del", name], check=False)


def probe_netem() -> bool:
    if not have("tc"):
        return False
    with scratch_netns() as ns:
        return ok(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root",
                   "netem", "delay", "1ms"])


def probe_ip_gre() -> bool:
    with scratch_netns() as ns:
        return ok(["ip", "netns", "exec", ns, "ip", "link", "add", "lbprobe-gre", "type",
                   "gre", "local", "192.0.2.1", "remote", "192.0.2.2"])


def gredecap_binary() -> Path:
    """The compiled decapsulator (topologies/lblab_gredecap.c, built by `make setup`)."""
    return Path(os.environ.get("LBLAB_GREDECAP_BIN", REPO_ROOT / "build" / "lblab-gredecap"))


def gredecap_command() -> tuple[str, list[str]]:
    """(implementation, argv prefix) of the userspace decapsulator: the compiled one where
    it is built, else topologies/gredecap.py (the same program, about half as fast)."""
    import sys
    binary = gredecap_binary()
    if binary.is_file() and os.access(binary, os.X_OK):
        return "c", [str(binary)]
    return "python", [sys.executable, "-m", "topologies.gredecap"]


def userspace_gre_decap_available() -> bool:
    """A raw socket for IP protocol 47 and a TUN device, with either decapsulator."""
    return os.path.exists("/dev/net/tun") and (
        gredecap_binary().is_file() or (REPO_ROOT / "topologies" / "gredecap.py").is_file())


def relay_binary() -> Path:
    return Path(os.environ.get("LBLAB_RELAY_BIN", REPO_ROOT / "build" / "lblab-relay"))


def relay_available() -> bool:
    return relay_binary().is_file() and os.access(relay_binary(), os.X_OK) \
        and (REPO_ROOT / "topologies" / "relay" / "node.py").is_file()


def controller_name() -> str:
    """The framework a controller started now runs on, with its version and hub:
    'os-ken 4.2.2 (threads)', 'ryu 4.34 (eventlet)'; 'none (...)' when it is not installed
    (doctor must still print). An unknown LBLAB_CONTROLLER is bad input."""
    from controller import frameworks
    from topologies.system import InputError
    try:
        fw = frameworks.chosen()
    except frameworks.FrameworkError as exc:
        raise InputError(str(exc)) from None
    if fw.version() is None:
        return f"none ({fw.name} not installed; run `sudo make setup`)"
    return fw.describe()


def controllers_installed() -> dict:
    """Every framework lblab can run on, with its installed version (None: not installed)."""
    from controller import frameworks
    return {name: fw.version() for name, fw in frameworks.FRAMEWORKS.items()}


def nginx_available() -> bool:
    """nginx with the Lua module that the backend handlers need (Debian: nginx-light and
    libnginx-mod-http-lua, installed by `make setup`)."""
    from lab import nginx
    return os.access(nginx.NGINX, os.X_OK) and all(os.path.isfile(m) for m in nginx.MODULES)


def detect(link_emulation: str | None = None, backend_server: str | None = None,
           region_lan: str | None = None) -> Mechanisms:
    """Probe the kernel and pick a mechanism for each job. `link_emulation` forces
    netem|relay (from `--set link_emulation=...`), `backend_server` nginx|python,
    `region_lan` bridge|ovs; a forced mechanism that is not available is an error rather
    than a silent substitute."""
    from topologies.system import InputError

    notes = []
    netem = probe_netem()
    relay = relay_available()
    gre = probe_ip_gre()
    if link_emulation in (None, "", "auto"):
        link_delay = "netem" if netem else ("relay" if relay else "none")
    elif link_emulation == "netem" and not netem:
        raise InputError("link_emulation=netem: this kernel has no sch_netem")
    elif link_emulation == "relay" and not relay:
        raise InputError("link_emulation=relay: the relay is not built (run `sudo make setup`)")
    elif link_emulation in ("netem", "relay", "none"):
        link_delay = link_emulation
    else:
        raise InputError(f"link_emulation={link_emulation}: use netem, relay or none")
    if link_delay == "none":
        notes.append("no link delay mechanism: WAN delay and loss are NOT applied")
    if gre:
        gre_decap = "kernel"
    elif userspace_gre_decap_available():
        gre_decap = "userspace"
    else:
        gre_decap = "none"
        notes.append("no ip_gre and no userspace GRE decapsulator (needs /dev/net/tun and "
                     "topologies/gredecap.py): GRE mode unavailable")
    have_nginx = nginx_available()
    if backend_server in (None, "", "auto"):
        backend_server = "nginx" if have_nginx else "python"
        if not have_nginx:
            notes.append("no nginx with the Lua module: backends are the Python server "
                         "(about 820 new connections/s; `sudo make setup` installs nginx)")
    elif backend_server == "nginx" and not have_nginx:
        raise InputError("backend_server=nginx: nginx or its Lua module is not installed "
                         "(run `sudo make setup`)")
    elif backend_server not in BACKEND_SERVERS:
        raise InputError(f"backend_server={backend_server}: use {' or '.join(BACKEND_SERVERS)}")
    region_lan = region_lan or REGION_LANS[0]
    if region_lan not in REGION_LANS:
        raise InputError(f"region_lan={region_lan}: use {' or '.join(REGION_LANS)}")
    dp = ovs.datapath()
    return Mechanisms(ovs_datapath="kernel" if dp == "kernel" else "userspace",
                      link_delay=link_delay, gre_decap=gre_decap, controller=controller_name(),
                      netem_available=netem, relay_available=relay, ip_gre_available=gre,
                      notes=tuple(notes), backend_server=backend_server,
                      region_lan=region_lan)


def versions() -> dict:
    out = {"python": platform.python_version(), "kernel": platform.release(),
           "ovs": ovs.version()}
    try:
        from importlib.metadata import version
        out["mininet"] = version("mininet")
    except Exception:
        out["mininet"] = "not installed"
    for pkg in ("ryu", "os-ken", "eventlet", "dnspython", "PyYAML"):
        try:
            from importlib.metadata import version
            out[pkg] = version(pkg)
        except Exception:
            continue
    for tool, args in (("iperf3", ["--version"]), ("unbound", ["-V"])):
        if have(tool):
            first = run([tool, *args], check=False).stdout.strip().splitlines()
            out[tool] = first[0] if first else "unknown"
    from lab.bird import version as bird_version   # the LB tier's BGP daemon
    if bird_version():
        out["bird"] = bird_version()
    return out
