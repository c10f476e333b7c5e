"""Open vSwitch lifecycle: make sure OVS runs, with the datapath this kernel supports.

Why this exists: on kernels without the openvswitch module `ovs-vsctl add-br` still exits 0
and a kernel-datapath bridge silently drops everything, and the userspace (netdev) datapath
stalls TCP at 0 bit/s unless userspace TSO is on (read only when ovs-vswitchd starts). So we
detect, pick, and configure before any bridge is created. A running OVS is left as found,
except that userspace TSO is switched on (and ovs-vswitchd restarted once) when the userspace
datapath is needed and the option is off: without it no TCP experiment can work.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from topologies.system import LblabError, env_without_run_marker, have, ok, run

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
DB_SOCK = "/var/run/openvswitch/db.sock"


def kernel_module_available() -> bool:
    """True when the openvswitch kernel module is loaded or loadable."""
    if Path("/sys/module/openvswitch").exists():
        return True
    return have("modprobe") and ok(["modprobe", "-q", "openvswitch"])


def datapath() -> str:
    """'kernel' where the openvswitch module exists, else 'user' (Mininet's spelling)."""
    forced = os.environ.get("LBLAB_OVS_DATAPATH")
    if forced in ("kernel", "user"):
        return forced
    return "kernel" if kernel_module_available() else "user"


def is_running() -> bool:
    return ok(["ovs-vsctl", "--timeout=3", "show"], timeout=5)


def version() -> str:
    if not have("ovs-vsctl"):
        return "not installed"
    out = run(["ovs-vsctl", "--version"], check=False).stdout.splitlines()
    return out[0].split()[-1] if out else "unknown"


def _userspace_tso_enabled() -> bool:
    proc = run(["ovs-vsctl", "--timeout=5", "--if-exists", "get", "Open_vSwitch", ".",
                "other_config:userspace-tso-enable"], check=False)
    return proc.stdout.strip().strip('"') == "true"


def _ovs_ctl(*args: str) -> None:
    if not Path(OVS_CTL).exists():
        raise LblabError("Open vSwitch is not installed (run `sudo make setup`)")
    run([OVS_CTL, *args, "--system-id=random"], timeout=120, env=env_without_run_marker())


def _wait_running(timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_running():
            return
        time.sleep(0.2)
    raise LblabError(f"Open vSwitch did not answer within {timeout_s:g}s after starting")


def ensure_running(log=print) -> str:
    """Start OVS if needed and configure it for this kernel. Returns the datapath in use."""
    dp = datapath()
    if not is_running():
        log("starting Open vSwitch (ovsdb-server, ovs-vswitchd)")
        # Start the database alone first so the TSO option is in place before vswitchd reads it.
        _ovs_ctl("start", "--no-ovs-vswitchd")
        _wait_running()
        if dp == "user":
            run(["ovs-vsctl", "--no-wait", "set", "Open_vSwitch", ".",
                 "other_config:userspace-tso-enable=true"])
        _ovs_ctl("start", "--no-ovsdb-server")
        _wait_running()
    elif dp == "user" and not _userspace_tso_enabled():
        log("enabling userspace TSO in Open vSwitch and restarting ovs-vswitchd "
            "(TCP stalls through the userspace datapath without it)")
        run(["ovs-vsctl", "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true"])
        _ovs_ctl("restart", "--no-ovsdb-server")
        _wait_running()
    return dp


def bridges() -> list[str]:
    if not is_running():
        return []
    return run(["ovs-vsctl", "--timeout=5", "list-br"]).stdout.split()


def bridge_external_id(bridge: str, key: str) -> str | None:
    proc = run(["ovs-vsctl", "--timeout=5", "--if-exists", "get", "Bridge", bridge,
                f"external_ids:{key}"], check=False)
    value = proc.stdout.strip().strip('"')
    return value or None


def tag_bridge(bridge: str, run_id: str) -> None:
    """Mark a bridge as lblab's so `lblab clean` can find it even without a state file."""
    run(["ovs-vsctl", "--timeout=10", "set", "Bridge", bridge,
         f"external_ids:lblab-run={run_id}"])


def delete_bridge(bridge: str) -> None:
    run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", bridge])


def controllers_connected(bridge_names: list[str]) -> dict[str, bool]:
    """Per bridge: is its controller connection up, according to OVS itself."""
    status = {}
    for br in bridge_names:
        proc = run(["ovs-vsctl", "--timeout=5", "--if-exists", "get", "Bridge", br,
                    "controller"], check=False)
        uuids = [u.strip() for u in proc.stdout.strip().strip("[]").split(",") if u.strip()]
        status[br] = any(
            run(["ovs-vsctl", "--timeout=5", "get", "Controller", u, "is_connected"],
                check=False).stdout.strip() == "true" for u in uuids)
    return status
