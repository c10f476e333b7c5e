"""Real caching resolvers for a live network: one unbound per resolver host, configured to
forward the scenario's zone to the authority, with EDNS Client Subnet (unbound's
subnetcache module) towards it when the region's `ecs` says so.
"""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.dns import DNS_PORT, READY_TIMEOUT_S, dig
from topologies.plan import NetworkPlan
from topologies.system import LblabError, stop_processes


@dataclass
class Resolver:
    host: str
    ip: str
    ecs: bool
    proc: object
    conf: Path


def unbound_config(*, ip: str, name: str, work_dir: Path, authority_ip: str,
                   allow: list[str], ecs: bool, cache_min_ttl_s: int = 0,
                   cache_max_ttl_s: int = 86400, roundrobin: bool = True,
                   port: int = DNS_PORT, authority_port: int = DNS_PORT,
                   zone: str = "lblab.test", outgoing: str | None = None,
                   small: bool = False) -> str:
    """unbound.conf of one resolver: caching, forwarding `zone` to the authority, ECS
    (subnetcache) towards it only when `ecs`. An authority on loopback (a test's) needs
    unbound's do-not-query-localhost off."""
    acl = "\n".join(f"  access-control: {net} allow" for net in ["127.0.0.0/8", *allow])
    modules = "subnetcache iterator" if ecs else "iterator"
    ecs_lines = (f"  send-client-subnet: {authority_ip}\n"
                 "  max-client-subnet-ipv4: 24\n") if ecs else ""
    local = "  do-not-query-localhost: no\n" if authority_ip.startswith("127.") else ""
    # one of many instances on one host: its own source address towards the authority (so
    # the authority sees R resolvers, not one host), and small caches and tables (one zone
    # behind it; ~13 MB resident each instead of unbound's default sizes)
    if outgoing:
        local += f"  outgoing-interface: {outgoing}\n"
    # and 1,024 outgoing ports instead of 64,512: unbound shuffles its whole port range at
    # start with one getrandom call per port (14,761 calls, 30-50 ms of system time per
    # instance, which stalls both cores when 100 start at once; 1,081 calls with this)
    if small:
        local += ("  msg-cache-size: 1m\n  rrset-cache-size: 1m\n  key-cache-size: 128k\n"
                  "  neg-cache-size: 128k\n  outgoing-range: 128\n"
                  "  num-queries-per-thread: 64\n"
                  "  outgoing-port-avoid: 0-65535\n  outgoing-port-permit: 40000-41023\n")
    return f"""# written by lblab for {name}: a caching resolver
server:
  interface: {ip}
  port: {port}
  username: ""
  chroot: ""
  directory: "{work_dir}"
  pidfile: "{work_dir}/unbound-{name}.pid"
  do-daemonize: no
  use-syslog: no
  logfile: "{work_dir}/unbound-{name}.log"
  verbosity: 1
  num-threads: 1
  do-ip6: no
  so-reuseport: no
  access-control: 0.0.0.0/0 refuse
{acl}
  # unbound answers the special-use TLD test. (RFC 6761) itself unless told not to
  local-zone: "test." nodefault
  domain-insecure: "{zone}"
  qname-minimisation: no
  prefetch: no
  serve-expired: no
  # the authority is one address: a few lost packets (a busy emulation) must not make
  # unbound shun it for the default 15 minutes
  infra-host-ttl: 10
  infra-keep-probing: yes
  cache-min-ttl: {cache_min_ttl_s}
  cache-max-ttl: {cache_max_ttl_s}
  rrset-roundrobin: {"yes" if roundrobin else "no"}
  module-config: "{modules}"
{ecs_lines}{local}remote-control:
  control-enable: no
stub-zone:
  name: "{zone}"
  stub-addr: {authority_ip}@{authority_port}
"""


def _spawn(live, plan: NetworkPlan, host: str, ip: str, name: str, ecs: bool,
           authority_ip: str, work_dir: Path, **config) -> Resolver:
    """One unbound `name` on `ip` in `host`, started (not yet checked). Every emulated
    subnet and every population's users may query it."""
    scen = plan.scenario
    allow = [str(r.subnet) for r in scen.regions] + [str(d.subnet) for d in scen.dcs] + \
        [str(r.population.user_prefix) for r in scen.populations]
    conf = work_dir / f"unbound-{name}.conf"
    conf.write_text(unbound_config(
        ip=ip, name=name, work_dir=work_dir, authority_ip=authority_ip, allow=allow, ecs=ecs,
        cache_min_ttl_s=scen.dns.cache_min_ttl_s, cache_max_ttl_s=scen.dns.cache_max_ttl_s,
        **config))
    proc = live.spawn(host, ["unbound", "-d", "-c", str(conf)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Resolver(host, ip, ecs, proc, conf)


def start_resolvers(live, plan: NetworkPlan, authority_ip: str, work_dir: Path, *,
                    ecs: bool | None = None, roundrobin: bool = True,
                    hosts: list[str] | None = None) -> dict[str, Resolver]:
    """One unbound per resolver host (or per name in `hosts`); `ecs` None = each region's
    own setting. Every emulated subnet may query (clients of other regions can be sent to
    a distant shared resolver)."""
    scen = plan.scenario
    work_dir = Path(work_dir)
    out = {}
    for host in plan.by_role("resolver"):
        if hosts is not None and host.name not in hosts:
            continue
        use_ecs = scen.region(host.site).ecs if ecs is None else ecs
        out[host.name] = _spawn(live, plan, host.name, str(host.ip), host.name, use_ecs,
                                authority_ip, work_dir, roundrobin=roundrobin)
    for res in out.values():
        try:
            live.wait_until(res.host, f"dig +time=1 +tries=1 @{res.ip} lblab.test SOA "
                            f"| grep -q 'status: NOERROR'", f"unbound on {res.host}",
                            READY_TIMEOUT_S)
        except LblabError:
            direct = live.node(res.host).cmd(f"dig +time=1 +tries=1 @{authority_ip} "
                                             "lblab.test SOA | grep -E 'status|timed out'")
            mine = live.node(res.host).cmd(f"dig +time=1 +tries=1 @{res.ip} lblab.test SOA "
                                           "| grep -E 'status|timed out'")
            raise LblabError(f"unbound on {res.host} not ready: it says "
                             f"{' '.join(mine.split()) or 'nothing'}; the authority "
                             f"{authority_ip} asked directly from {res.host} says "
                             f"{' '.join(direct.split()) or 'nothing'} (unbound log: "
                             f"{work_dir}/unbound-{res.host}.log)") from None
    return out


def start_instances(live, plan: NetworkPlan, specs, authority_ip: str, work_dir: Path, *,
                    roundrobin: bool = True, timeout_s: float = READY_TIMEOUT_S
                    ) -> dict[str, Resolver]:
    """A population's resolvers (topologies/population.ResolverSpec): one unbound each on
    its region's resolver host, on its own address (lab/population.py made the block
    local there), querying the authority from that address; ready when every one answers
    (all checked at once from the resolver host, lab/dnsproc.py `ready`). Their configs and
    logs go to WORK_DIR/resolvers/ (hundreds of files)."""
    work_dir = Path(work_dir) / "resolvers"
    work_dir.mkdir(parents=True, exist_ok=True)
    out = {spec.name: _spawn(live, plan, f"lbd-{spec.region}", str(spec.ip), spec.name,
                             spec.ecs, authority_ip, work_dir, roundrobin=roundrobin,
                             outgoing=str(spec.ip), small=True)
           for spec in specs}
    by_host: dict[str, list[str]] = {}
    for res in out.values():
        by_host.setdefault(res.host, []).append(res.ip)
    for host, ips in by_host.items():
        check = live.spawn(host, [sys.executable, "-m", "lab.dnsproc", "ready", "--timeout",
                                  str(timeout_s), *ips],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, _ = check.communicate(timeout=timeout_s + 30)
        if check.returncode != 0:
            dead = [name for name, r in out.items() if r.proc.poll() is not None]
            raise LblabError(f"resolvers on {host} not ready after {timeout_s:g}s: "
                             f"{stdout.decode(errors='replace').strip() or 'no answer'}"
                             f"{'; exited: ' + ', '.join(dead[:5]) if dead else ''} "
                             f"(logs: {work_dir}/unbound-lbd-*.log)")
    return out


def stop_resolvers(resolvers: dict[str, Resolver]) -> None:
    stop_processes(r.proc for r in resolvers.values())


@contextmanager
def instances(live, plan: NetworkPlan, specs, authority_ip: str, work_dir: Path, **kw):
    """start_instances for the length of a `with` block; stopped however it ends."""
    resolvers = start_instances(live, plan, specs, authority_ip, work_dir, **kw)
    try:
        yield resolvers
    finally:
        stop_resolvers(resolvers)


def resolve(live, host: str, resolver_ip: str, name: str,
            subnet: str | None = None) -> list[str]:
    """Resolve from inside a host through the given resolver (as its clients do)."""
    return dig(live, host, resolver_ip, name, subnet=subnet)
