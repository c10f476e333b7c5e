"""Where a run's CPU goes: run a command, sample every process's CPU time once a second,
and print the CPU seconds (and the share of the machine) spent by each component.

    sudo .venv/bin/python tools/cpu_by_component.py -- .venv/bin/lblab run dns-rr-pop --quick

Processes are grouped by what they run (COMPONENTS: first match on the command line wins;
the rest is `other`). A process's CPU counts from its first sample to its last, so one that
lives less than a second is missed, and one's first second before the first sample is too:
the figures are a slight undercount, good for telling which part of the lab is busy.
Prints one JSON object: wall_s, cores, command_tree_cpu_s (the command's own rusage of
its whole reaped tree: includes the short-lived commands the sampling misses), and per
component cpu_s and share (cpu_s over wall_s times cores).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

COMPONENTS = (
    ("unbound", ("unbound",)),
    ("population clients", ("experiments.workloads.population",)),
    ("dns clients", ("experiments.workloads.dnssearch",)),
    ("search clients", ("experiments.workloads.search", "wrk")),
    ("backends", ("nginx", "experiments.workloads.httpserver")),
    ("authority", ("gslb.", "lab.dnsproc")),
    ("ovs", ("ovs-vswitchd", "ovsdb-server")),
    ("probes", ("rttprobe",)),
    ("relays", ("lblab-relay", "topologies.relay")),
    ("health checks", ("controller.healthcheck",)),
    ("controller", ("ryu-manager", "osken-manager", "controller.")),
    ("bgp", ("bird",)),
    ("lblab", ("lblab", "experiments.", "pytest")),
)
TICK = os.sysconf("SC_CLK_TCK")


def component(cmdline: str) -> str:
    for name, needles in COMPONENTS:
        if any(n in cmdline for n in needles):
            return name
    return "other"


def sample(names: dict[tuple[int, str], str | None]) -> dict[int, tuple[str, float]]:
    """pid -> (component, CPU seconds so far) for every process; `names` caches each
    process's component by (pid, start time), so a command line is read once."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            key = (int(entry), fields[19])
            if key not in names:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
                names[key] = component(cmd) if cmd else None   # no command line: kernel
        except OSError:
            continue
        if names[key] is not None:
            out[int(entry)] = (names[key], (int(fields[11]) + int(fields[12])) / TICK)
    return out


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print("usage: cpu_by_component.py -- COMMAND [ARGS]", file=sys.stderr)
        return 2
    first: dict[int, tuple[str, float]] = {}
    last: dict[int, tuple[str, float]] = {}
    me = os.getpid()
    names: dict[tuple[int, str], str | None] = {}
    start = time.monotonic()
    proc = subprocess.Popen(argv)
    status, usage = 0, None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            for pid, (name, cpu) in sample(names).items():
                if pid != me:
                    first.setdefault(pid, (name, cpu))
                    last[pid] = (name, cpu)
            time.sleep(1.0)
    except KeyboardInterrupt:
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    cores = os.cpu_count() or 1
    used: dict[str, float] = {}
    for pid, (name, cpu) in last.items():
        used[name] = used.get(name, 0.0) + cpu - first[pid][1]
    print(json.dumps({"command": " ".join(argv), "exit": code,
                      "wall_s": round(wall, 1), "cores": cores,
                      # everything the command and its reaped descendants used, short-lived
                      # commands included (not daemons it did not start, such as OVS)
                      "command_tree_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                      "components": {k: {"cpu_s": round(v, 1),
                                         "share": round(v / (wall * cores), 3)}
                                     for k, v in sorted(used.items(), key=lambda kv: -kv[1])
                                     if v >= 0.05}}, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
