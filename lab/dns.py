"""The GSLB authority as a service of a live network: started in its lba- host with a
prober and a load feed, reached through curl inside that host, queried with dig from any
host. Readiness is always checked with a real query from inside the host, never assumed
after a sleep.

The authority's process and the load feeders (lab/dnsproc.py) run inside hosts. Load is
real traffic: one feeder per DC runs in the DC's router (on the DC LAN, where the backends'
/stats counters can be read directly: from across the WAN the VIP balancer's NAT would
rewrite the replies) and writes the DC's request rate to a JSON file; the authority reads
the files (files cross network namespaces, loopback ports do not).
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gslb.config import GslbConfig
from gslb.control import DEFAULT_CONTROL_PORT
from lab.dns_config import authority_host, probe_targets
from topologies.plan import NetworkPlan
from topologies.system import LblabError, REPO_ROOT

DNS_PORT = 53
READY_TIMEOUT_S = 20
# ---------------------------------------------------------------------------------------
# the authority


@dataclass
class Authority:
    live: object
    host: str
    ip: str
    proc: object
    service: str          # the name whose A records the policy chooses (www.lblab.test)

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        """One control-channel request, made with curl inside the authority's host."""
        data = f" -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}" \
            if body is not None else ""
        out = self.live.node(self.host).cmd(
            f"curl -s -m 3 -X {method} http://127.0.0.1:{DEFAULT_CONTROL_PORT}{path}{data}")
        try:
            reply = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LblabError(f"gslb control {method} {path}: no JSON reply ({out[-200:]!r})")
        if "error" in reply:
            raise LblabError(f"gslb control {method} {path}: {reply['error']}")
        return reply

    def set_policy(self, policy: str, overload: str | None = None) -> None:
        """The primary name's policy (and the capacity policy's overload behaviour)."""
        self.control("POST", "/policy", {"policy": policy,
                                         **({"overload": overload} if overload else {})})

    def set_service_policy(self, service: str, policy: str, load_key: str | None = None
                           ) -> None:
        """One further service name's policy, judged by `load_key`'s class (None: the
        name's own, "*": the DC's whole load)."""
        self.control("POST", "/policy", {"service": service, "policy": policy,
                                         "load_key": load_key})

    def set_ttl(self, ttl_s: int) -> None:
        self.control("POST", "/ttl", {"ttl_s": ttl_s})

    def state(self) -> dict:
        return self.control("GET", "/state")

    def answer(self, subnet: str | None = None, from_host: str | None = None) -> list[str]:
        """The service's A records as the authority answers them now (for ECS `subnet`,
        or for the querying host's own address when None)."""
        return dig(self.live, from_host or self.host, self.ip, self.service, subnet=subnet)


def dig(live, host: str, server: str, name: str, qtype: str = "A",
        subnet: str | None = None, port: int = DNS_PORT) -> list[str]:
    """Addresses from one `dig +short` run inside `host` (empty on no answer)."""
    out = live.node(host).cmd(_dig_command(server, name, qtype, subnet, port, "+short "))
    return [line.strip() for line in out.splitlines()
            if line.strip() and not line.startswith(";")]


def query(live, host: str, server: str, name: str, qtype: str = "A",
          subnet: str | None = None, port: int = DNS_PORT) -> DigResult:
    """One full `dig` run inside `host`, parsed: status, answers with TTLs, ECS scope."""
    return parse_dig(live.node(host).cmd(_dig_command(server, name, qtype, subnet, port)))


def _dig_command(server: str, name: str, qtype: str, subnet: str | None, port: int,
                 style: str = "") -> str:
    opt = f" +subnet={subnet}" if subnet else ""
    return f"dig {style}+time=1 +tries=2{opt} -p {port} @{server} {name} {qtype}"


@dataclass
class DigResult:
    status: str | None             # NOERROR, NXDOMAIN, ...; None when nothing answered
    answers: list[tuple[str, int]]  # (address, TTL) of the A records
    ecs: tuple[str, int] | None    # (subnet/source, scope) of the reply's CLIENT-SUBNET


def parse_dig(text: str) -> DigResult:
    """What one full `dig` run printed: status, A records with TTLs, and the ECS option."""
    status = None
    answers: list[tuple[str, int]] = []
    ecs = None
    for line in text.splitlines():
        m = re.search(r"status: ([A-Z]+)", line)
        if line.startswith(";; ->>HEADER<<-") and m:
            status = m.group(1)
            continue
        m = re.match(r"; CLIENT-SUBNET: (\S+)/(\d+)$", line.strip())
        if m:
            ecs = (m.group(1), int(m.group(2)))
            continue
        parts = line.split()
        if not line.startswith(";") and len(parts) >= 5 and parts[3] == "A" and \
                parts[1].isdigit():
            answers.append((parts[4], int(parts[1])))
    return DigResult(status, answers, ecs)


def launch_spec(config: GslbConfig, plan: NetworkPlan, work_dir: Path, *,
                probe: bool = True, load: bool = True, seed: int = 1) -> dict:
    """What the authority process needs, as JSON: config, where to listen, what to probe,
    where the load feeders write."""
    auth = authority_host(plan)
    return {"config": config.to_dict(), "listen": [str(auth.ip), DNS_PORT],
            "control": ["127.0.0.1", DEFAULT_CONTROL_PORT],
            "probe": probe_targets(config, plan) if probe else {},
            "load_files": {dc.name: str(load_file(work_dir, dc.name))
                           for dc in plan.scenario.dcs} if load else {},
            "seed": seed}


def load_file(work_dir: Path, dc: str) -> Path:
    return Path(work_dir) / "load" / f"{dc}.json"


def wan_links_into(plan: NetworkPlan, dc: str) -> list[tuple[str, str, float]]:
    """(region, the DC router's address on the link, Mbit/s) of every WAN link with a
    bandwidth between a client region's router and the DC's."""
    regions = {r.name for r in plan.scenario.regions}
    site = {r.name: r.site for r in plan.routers}
    own = plan.router(dc).name
    out = []
    for wan in plan.wans:
        for here, ip, there in ((wan.a_router, wan.a_ip, wan.b_router),
                                (wan.b_router, wan.b_ip, wan.a_router)):
            if here == own and site.get(there) in regions and wan.link.bw_mbps:
                out.append((site[there], str(ip), float(wan.link.bw_mbps)))
    return out


def start_load_feeds(live, plan: NetworkPlan, work_dir: Path) -> list:
    """One load feeder per DC, in the DC's router; returns their processes."""
    (Path(work_dir) / "load").mkdir(parents=True, exist_ok=True)
    procs = []
    for dc in plan.scenario.dcs:
        argv = [sys.executable, "-m", "lab.dnsproc", "loadfeed", "--dc", dc.name,
                "--out", str(load_file(work_dir, dc.name))]
        for host in plan.hosts_in(dc.name, "backend"):
            argv += ["--backend", str(host.ip)]
        for region, ip, mbps in wan_links_into(plan, dc.name):
            argv += ["--wan", f"{region}={ip}:{mbps:g}"]
        procs.append(live.spawn(plan.router(dc.name).name, argv, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=str(REPO_ROOT)))
    return procs


def start_authority(live, plan: NetworkPlan, config: GslbConfig, work_dir: Path, *,
                    probe: bool = True, load: bool = True, seed: int = 1) -> Authority:
    """The authority in its host, ready (it answers SOA, its control channel /state);
    `seed` seeds its own random stream (the order of answers), `probe` its health prober,
    `load` the load feeders and their files."""
    auth = authority_host(plan)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    launch = work_dir / "authority.json"
    launch.write_text(json.dumps(launch_spec(config, plan, work_dir, probe=probe, load=load,
                                             seed=seed),
                                 indent=1))
    if load:
        start_load_feeds(live, plan, work_dir)
    log = open(work_dir / "authority.log", "ab")
    proc = live.spawn(auth.name, [sys.executable, "-m", "lab.dnsproc", "authority",
                                  "--launch", str(launch)],
                      stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
    log.close()
    live.wait_until(auth.name, f"dig +time=1 +tries=1 @{auth.ip} {config.zone} SOA "
                    f"| grep -q 'status: NOERROR'", f"GSLB authority on {auth.name}",
                    READY_TIMEOUT_S)
    live.wait_until(auth.name, f"curl -sf -m 1 http://127.0.0.1:{DEFAULT_CONTROL_PORT}/state",
                    "GSLB control channel", READY_TIMEOUT_S)
    return Authority(live, auth.name, str(auth.ip), proc, config.service_fqdn)


def wait_answer(authority: Authority, subnet: str, want, timeout_s: float = 15,
                what: str = "authority answer") -> float:
    """Poll the authority (ECS `subnet`) until `want(addresses)` holds; return the wall-clock
    time it first did. Raises LblabError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        addrs = authority.answer(subnet=subnet)
        if want(addrs):
            return time.time()
        if time.monotonic() > deadline:
            raise LblabError(f"{what}: not reached in {timeout_s:g}s (answer {addrs})")
        time.sleep(0.05)
