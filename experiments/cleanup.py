"""`lblab clean`: remove what a crashed lblab run left behind, and only that.

Never Mininet's global clean-up, `killall` or `pkill` by pattern: those hit processes and
bridges lblab did not start.
lblab's things are recognised by four marks it puts on them itself:
- run state files (/run/lblab/runs/*.json: owner PID, bridges, interfaces, helper PIDs);
- the LBLAB_RUN=<run-id> environment variable that every process of a run inherits;
- external_ids:lblab-run on its OVS bridges;
- its name prefixes (lbr-, lbs-, lbc-, ... from topologies.plan; lbprobe- scratch namespaces).
Runs whose owner process is still alive are left alone unless `everything=True`.
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from topologies import grestate, ovs, state
from topologies.gre import describe_rule
from topologies.plan import NAME_PREFIXES
from topologies.system import run

_PREFIX_RE = re.compile("^(" + "|".join(re.escape(p) for p in NAME_PREFIXES) + ")")


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def marked_processes() -> dict[int, str]:
    """PID -> run id, for every process carrying the LBLAB_RUN marker."""
    out = {}
    marker = (state.RUN_ENV + "=").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if _is_zombie(entry):
                continue  # already dead; only its parent (or init) can reap it
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(marker):
                out[int(entry.name)] = item[len(marker):].decode(errors="replace")
                break
    return out


def _is_zombie(proc_dir: Path) -> bool:
    stat = (proc_dir / "stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _kill(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            killed.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(state.pid_alive(p) for p in killed):
        time.sleep(0.05)
    for pid in killed:
        if state.pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return killed


def root_interfaces() -> list[str]:
    out = run(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def clean(everything: bool = False, log=print) -> dict:
    """Remove leftovers of dead lblab runs (of all runs if `everything`). Returns a report."""
    report = {"processes": [], "bridges": [], "interfaces": [], "namespaces": [],
              "state_files": []}
    runs = state.load_all()
    live_runs = {r["run_id"] for r in runs
                 if not everything and state.pid_alive(int(r.get("owner_pid", 0)))}
    protected = _ancestors()

    # 1. Processes: marked with a dead run's id, or listed in a dead run's state file.
    victims = [pid for pid, run_id in marked_processes().items()
               if run_id not in live_runs and pid not in protected]
    for r in runs:
        if r["run_id"] not in live_runs:
            victims += [p for p in r.get("pids", []) if p and p not in protected
                        and state.pid_alive(p) and _is_marked(p, r["run_id"])]
    report["processes"] = _kill(sorted(set(victims)))

    # 2. OVS bridges: tagged by a dead run, or listed by one and carrying lblab's prefix.
    listed = {b for r in runs if r["run_id"] not in live_runs for b in r.get("bridges", [])}
    live_bridges = {b for r in runs if r["run_id"] in live_runs for b in r.get("bridges", [])}
    if ovs.is_running():
        for br in ovs.bridges():
            tag = ovs.bridge_external_id(br, "lblab-run")
            mine = (tag is not None and tag not in live_runs) or \
                (br in listed and _PREFIX_RE.match(br))
            if mine and br not in live_bridges:
                ovs.delete_bridge(br)
                report["bridges"].append(br)

    # 3. Root-namespace interfaces with lblab's prefixes (veth ends of switches and relays).
    live_ifaces = {i for r in runs if r["run_id"] in live_runs for i in r.get("interfaces", [])}
    live_prefixes = tuple(f"{b}-" for b in live_bridges)
    for name in root_interfaces():
        if _PREFIX_RE.match(name) and name not in live_ifaces \
                and not name.startswith(live_prefixes) and name not in live_bridges:
            if run(["ip", "link", "del", name], check=False).returncode == 0:
                report["interfaces"].append(name)

    # 3b. OVS user routes of GRE underlays (lab/gre.py) on lblab's bridges: they live in
    #     ovs-vswitchd, not in the kernel, and outlive the bridges.
    if ovs.is_running():
        report.setdefault("ovs_routes", [])
        for r in grestate.stale_ovs_routes(NAME_PREFIXES):
            if r["dev"] not in live_bridges and grestate.delete_ovs_route(r["prefix"],
                                                                          r["mark"]):
                report["ovs_routes"].append(f"{r['prefix']} pkt_mark={r['mark']} {r['dev']}")
    #     On the kernel datapath the underlay is kernel policy routing instead: its rules
    #     outlive the bridges (their tables' routes do not).
    if not live_runs:
        report["policy_rules"] = [describe_rule(r) for r in grestate.stale_policy_rules()
                                  if grestate.delete_policy_rule(r)]

    # 4. Scratch namespaces of doctor probes whose process is gone.
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^lbprobe-(\d+)$", name)
        if m and not state.pid_alive(int(m.group(1))):
            run(["ip", "netns", "del", name], check=False)
            report["namespaces"].append(name)

    # 5. Relays recorded in PID files (each checked to really be lblab-relay before it is
    #    signalled), and their leftover logs, when no live run owns them.
    if not live_runs:
        from topologies.relay.link import PID_DIR, stop_relays_from_pidfiles
        report["processes"] += stop_relays_from_pidfiles()
        if PID_DIR.is_dir():
            for leftover in PID_DIR.iterdir():
                leftover.unlink(missing_ok=True)

    # 6. State files of dead runs.
    for r in runs:
        if r["run_id"] not in live_runs:
            Path(r["_path"]).unlink(missing_ok=True)
            report["state_files"].append(r["run_id"])
    return report


def _is_marked(pid: int, run_id: str) -> bool:
    """Only kill a listed PID if it still carries that run's marker (PIDs get reused)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{state.RUN_ENV}={run_id}".encode() in env.split(b"\0")


def leftovers(include_other_live_runs: bool = False) -> dict:
    """What of lblab's is present now (for tests and `lblab clean --check`). Things that
    belong to another live run (an lblab process still running elsewhere on the machine)
    are left out unless asked for: they are not leftovers."""
    runs = state.load_all()
    other_live = set() if include_other_live_runs else {
        r["run_id"] for r in runs
        if int(r.get("owner_pid", 0)) != os.getpid() and state.pid_alive(int(r["owner_pid"]))}
    live_bridges = {b for r in runs if r["run_id"] in other_live for b in r.get("bridges", [])}
    live_ifaces = {i for r in runs if r["run_id"] in other_live for i in r.get("interfaces", [])}
    live_prefixes = tuple(f"{b}-" for b in live_bridges) + ("lbw-",) * bool(other_live)
    return {
        "processes": sorted(pid for pid, run_id in marked_processes().items()
                            if run_id not in other_live),
        "bridges": [b for b in ovs.bridges() if b not in live_bridges and (
            _PREFIX_RE.match(b) or ovs.bridge_external_id(b, "lblab-run"))],
        "interfaces": [i for i in root_interfaces() if _PREFIX_RE.match(i)
                       and i not in live_ifaces and i not in live_bridges
                       and not i.startswith(live_prefixes)],
        "state_files": [r["run_id"] for r in runs if r["run_id"] not in other_live],
        "relay_pid_files": [] if other_live else _relay_pid_files(),
        "ovs_routes": _ovs_routes(live_bridges),
        "policy_rules": [] if other_live else _policy_rules(),
    }


def _policy_rules() -> list[str]:
    return [describe_rule(r) for r in grestate.stale_policy_rules()]


def _ovs_routes(live_bridges: set) -> list[str]:
    """OVS user routes (GRE underlays) on lblab bridges that no other live run owns."""
    if not ovs.is_running():
        return []
    return [f"{r['prefix']} pkt_mark={r['mark']} {r['dev']}"
            for r in grestate.stale_ovs_routes(NAME_PREFIXES) if r["dev"] not in live_bridges]


def wait_no_leftovers(timeout_s: float = 10.0) -> dict:
    """leftovers(), polled until empty or `timeout_s`: teardown is synchronous, but a killed
    process can take a moment to vanish from /proc."""
    deadline = time.monotonic() + timeout_s
    left = leftovers()
    while any(left.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers()
    return left


def _relay_pid_files() -> list[str]:
    from topologies.relay.link import PID_DIR
    return sorted(p.name for p in PID_DIR.glob("*.pid")) if PID_DIR.is_dir() else []
