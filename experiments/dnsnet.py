"""DNS glue for a live network: the GSLB authority in its lba- host, a real unbound per
resolver host, backends, and DNS-aware clients. Readiness is always checked with a real
query from inside the host (dig), never assumed after a sleep.

Also the authority's process entry point (run inside the lba- host by `start_authority`):

  python -m experiments.dnsnet authority --launch FILE.json

which serves the zone on the host's own address, keeps the control channel on the host's
loopback (reach it with `Authority.control`, which runs curl inside the host), probes each
DC's service address over TCP, and feeds the global view with each DC's load.

Load is real traffic: one feeder per DC runs in the DC's router (on the DC LAN, where the
backends' /stats counters can be read directly: from across the WAN the VIP balancer's NAT
would rewrite the replies) and writes the DC's request rate to a JSON file; the authority
reads the files (files cross network namespaces, loopback ports do not):

  python -m experiments.dnsnet loadfeed --dc us1 --backend 10.101.0.11 ... --out FILE
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.seeds import derive
from gslb.config import GslbConfig
from gslb.scenario_config import (SERVICE_PORT, authority_host, config_to_dict,
                                  probe_targets, resolver_of)
from topologies.plan import NetworkPlan
from topologies.system import LblabError

DNS_PORT = 53
CONTROL_PORT = 8053
SERVICE_NAME = "www.lblab.test"
LOAD_POLL_S = 0.5      # how often the authority reads the backends' request counters
LOAD_WINDOW_S = 1.0    # load = requests over (at least) this window, per second
READY_TIMEOUT_S = 20


# ---------------------------------------------------------------------------------------
# the authority


@dataclass
class Authority:
    live: object
    host: str
    ip: str
    proc: object

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        """One control-channel request, made with curl inside the authority's host."""
        data = f" -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}" \
            if body is not None else ""
        out = self.live.node(self.host).cmd(
            f"curl -s -m 3 -X {method} http://127.0.0.1:{CONTROL_PORT}{path}{data}")
        try:
            reply = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LblabError(f"gslb control {method} {path}: no JSON reply ({out[-200:]!r})")
        if "error" in reply:
            raise LblabError(f"gslb control {method} {path}: {reply['error']}")
        return reply

    def set_policy(self, policy: str) -> None:
        self.control("POST", "/policy", {"policy": policy})

    def set_ttl(self, ttl_s: int) -> None:
        self.control("POST", "/ttl", {"ttl_s": ttl_s})

    def state(self) -> dict:
        return self.control("GET", "/state")

    def answer(self, subnet: str | None = None, from_host: str | None = None) -> list[str]:
        """The service's A records as the authority answers them now (for ECS `subnet`,
        or for the querying host's own address when None)."""
        return dig(self.live, from_host or self.host, self.ip, SERVICE_NAME, subnet=subnet)


def dig(live, host: str, server: str, name: str = SERVICE_NAME, qtype: str = "A",
        subnet: str | None = None, port: int = DNS_PORT) -> list[str]:
    """Addresses from one `dig +short` run inside `host` (empty on no answer)."""
    opt = f" +subnet={subnet}" if subnet else ""
    out = live.node(host).cmd(f"dig +short +time=1 +tries=2{opt} -p {port} @{server} "
                              f"{name} {qtype}")
    return [line.strip() for line in out.splitlines()
            if line.strip() and not line.startswith(";")]


def launch_spec(config: GslbConfig, plan: NetworkPlan, work_dir: Path, *,
                probe: bool = True, load: bool = True, seed: int = 1) -> dict:
    """What the authority process needs, as JSON: config, where to listen, what to probe,
    where the load feeders write."""
    auth = authority_host(plan)
    return {"config": config_to_dict(config), "listen": [str(auth.ip), DNS_PORT],
            "control": ["127.0.0.1", CONTROL_PORT],
            "probe": probe_targets(config, plan) if probe else {},
            "load_files": {dc.name: str(load_file(work_dir, dc.name))
                           for dc in plan.scenario.dcs} if load else {},
            "seed": seed}


def load_file(work_dir: Path, dc: str) -> Path:
    return Path(work_dir) / "load" / f"{dc}.json"


def start_load_feeds(live, plan: NetworkPlan, work_dir: Path) -> list:
    """One load feeder per DC, in the DC's router; returns their processes."""
    (Path(work_dir) / "load").mkdir(parents=True, exist_ok=True)
    procs = []
    for dc in plan.scenario.dcs:
        argv = [sys.executable, "-m", "experiments.dnsnet", "loadfeed", "--dc", dc.name,
                "--out", str(load_file(work_dir, dc.name))]
        for host in plan.hosts_in(dc.name, "backend"):
            argv += ["--backend", str(host.ip)]
        procs.append(live.spawn(plan.router(dc.name).name, argv, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=str(_repo_root())))
    return procs


def start_authority(live, plan: NetworkPlan, config: GslbConfig, work_dir: Path, *,
                    probe: bool = True, load: bool = True, seed: int = 1) -> Authority:
    auth = authority_host(plan)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    launch = work_dir / "authority.json"
    launch.write_text(json.dumps(launch_spec(config, plan, work_dir, probe=probe, load=load,
                                             seed=derive(seed, "authority")),
                                 indent=1))
    if load:
        start_load_feeds(live, plan, work_dir)
    log = open(work_dir / "authority.log", "ab")
    proc = live.spawn(auth.name, [sys.executable, "-m", "experiments.dnsnet", "authority",
                                  "--launch", str(launch)],
                      stdout=log, stderr=subprocess.STDOUT, cwd=str(_repo_root()))
    log.close()
    live.wait_until(auth.name, f"dig +time=1 +tries=1 @{auth.ip} lblab.test SOA "
                    f"| grep -q 'status: NOERROR'", f"GSLB authority on {auth.name}",
                    READY_TIMEOUT_S)
    live.wait_until(auth.name, f"curl -sf -m 1 http://127.0.0.1:{CONTROL_PORT}/state",
                    "GSLB control channel", READY_TIMEOUT_S)
    return Authority(live, auth.name, str(auth.ip), proc)


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------
# resolvers (real unbound)


@dataclass
class Resolver:
    host: str
    ip: str
    ecs: bool
    proc: object
    conf: Path


def unbound_config(*, ip: str, name: str, work_dir: Path, authority_ip: str,
                   allow: list[str], ecs: bool, cache_min_ttl_s: int = 0,
                   cache_max_ttl_s: int = 86400, roundrobin: bool = True) -> str:
    """unbound.conf of one resolver host: caching, forwarding lblab.test to the authority,
    ECS (subnetcache) towards it only when `ecs`."""
    acl = "\n".join(f"  access-control: {net} allow" for net in ["127.0.0.0/8", *allow])
    modules = "subnetcache iterator" if ecs else "iterator"
    ecs_lines = (f"  send-client-subnet: {authority_ip}\n"
                 "  max-client-subnet-ipv4: 24\n") if ecs else ""
    return f"""# written by lblab for {name}: a caching resolver of the emulated network
server:
  interface: {ip}
  port: {DNS_PORT}
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
  domain-insecure: "lblab.test"
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
{ecs_lines}remote-control:
  control-enable: no
stub-zone:
  name: "lblab.test"
  stub-addr: {authority_ip}@{DNS_PORT}
"""


def start_resolvers(live, plan: NetworkPlan, authority_ip: str, work_dir: Path, *,
                    ecs: bool | None = None, roundrobin: bool = True,
                    hosts: list[str] | None = None) -> dict[str, Resolver]:
    """One unbound per resolver host (or per name in `hosts`); `ecs` None = each region's
    own setting. Every emulated subnet may query (clients of other regions can be sent to
    a distant shared resolver)."""
    scen = plan.scenario
    allow = [str(r.subnet) for r in scen.regions] + [str(d.subnet) for d in scen.dcs]
    work_dir = Path(work_dir)
    out = {}
    for host in plan.by_role("resolver"):
        if hosts is not None and host.name not in hosts:
            continue
        use_ecs = scen.region(host.site).ecs if ecs is None else ecs
        conf = work_dir / f"unbound-{host.name}.conf"
        conf.write_text(unbound_config(
            ip=str(host.ip), name=host.name, work_dir=work_dir, authority_ip=authority_ip,
            allow=allow, ecs=use_ecs, cache_min_ttl_s=scen.dns.cache_min_ttl_s,
            cache_max_ttl_s=scen.dns.cache_max_ttl_s, roundrobin=roundrobin))
        proc = live.spawn(host.name, ["unbound", "-d", "-c", str(conf)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out[host.name] = Resolver(host.name, str(host.ip), use_ecs, proc, conf)
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


def stop_processes(procs) -> None:
    """Stop processes started with live.spawn before teardown (teardown reaps the rest)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_resolvers(resolvers: dict[str, Resolver]) -> None:
    stop_processes(r.proc for r in resolvers.values())


def resolve(live, host: str, resolver_ip: str, name: str = SERVICE_NAME,
            subnet: str | None = None) -> list[str]:
    """Resolve from inside a host through the given resolver (as its clients do)."""
    return dig(live, host, resolver_ip, name, subnet=subnet)


# ---------------------------------------------------------------------------------------
# backends and clients


def start_backends(live, plan: NetworkPlan, dcs: list[str] | None = None,
                   port: int = SERVICE_PORT) -> dict[str, list]:
    """HTTP servers on every backend of the given DCs; DC name -> their processes."""
    out: dict[str, list] = {}
    hosts = [h for h in plan.by_role("backend") if dcs is None or h.site in dcs]
    for host in hosts:
        out.setdefault(host.site, []).append(live.spawn(
            host.name, [sys.executable, "-m", "experiments.workloads.httpserver",
                        "--port", str(port), "--backend", host.name, "--dc", host.site],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(_repo_root())))
    for host in hosts:
        live.wait_until(host.name, f"curl -sf -m 1 http://127.0.0.1:{port}/health",
                        f"HTTP server on {host.name}")
    return out


@dataclass
class DnsService:
    """What `start_dns_service` started: backends per DC, the authority, the resolvers."""
    backends: dict[str, list]
    authority: Authority
    resolvers: dict[str, Resolver]


def controller_apps(plan: NetworkPlan) -> tuple[str, ...] | None:
    """The controller apps a DNS run needs: the default set (with the VIP balancer) when the
    answers are VIPs; plain L2 switching when they are first backends (the VIP balancer's
    NAT would rewrite the source of every backend reply on port 80 to the VIP)."""
    return None if plan.scenario.dns.answers == "vip" else ("controller.l2app",)


def start_dns_service(live, plan: NetworkPlan, config: GslbConfig, work_dir: Path, *,
                      ecs: bool | None = None, roundrobin: bool = True,
                      load: bool = True, seed: int = 1) -> DnsService:
    """Backends (and the VIP balancer's health checks, when the network has them), the
    authority with its prober and load feed, and one unbound per resolver host."""
    backends = start_backends(live, plan)
    if plan.scenario.dns.answers == "vip" and hasattr(live, "start_health_checks"):
        live.start_health_checks()
    authority = start_authority(live, plan, config, work_dir, load=load, seed=seed)
    resolvers = start_resolvers(live, plan, authority.ip, work_dir, ecs=ecs,
                                roundrobin=roundrobin)
    return DnsService(backends, authority, resolvers)


@dataclass
class ClientJob:
    client: str
    resolver_ip: str
    rate: float
    pick: str = "random"
    seed: int = 1
    label: dict = field(default_factory=dict)


def start_clients(live, jobs: list[ClientJob], duration_s: float, work_dir: Path,
                  start_in_s: float = 1.5, timeout_s: float = 3.0) -> tuple[float, list]:
    """Start every job's dnssearch client so that all begin at the same wall-clock instant
    (returned, epoch seconds); hand the result to `collect_clients`."""
    start_at = time.time() + start_in_s
    running = []
    for i, job in enumerate(jobs):
        out = Path(work_dir) / f"dnsclient-{job.client}-{os.getpid()}-{i}-{time.time_ns()}.csv"
        proc = live.spawn(job.client, [
            sys.executable, "-m", "experiments.workloads.dnssearch",
            "--resolver", job.resolver_ip, "--rate", str(job.rate),
            "--duration", str(duration_s), "--pick", job.pick, "--seed", str(job.seed),
            "--start-at", f"{start_at:.3f}", "--timeout", str(timeout_s), "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(_repo_root()))
        running.append((job, proc, out))
    return start_at, running


def collect_clients(running: list, duration_s: float, timeout_s: float = 3.0) -> list[dict]:
    """Wait for the clients and return their rows, each with its job's client and label."""
    rows = []
    for job, proc, out in running:
        try:
            _, err = proc.communicate(timeout=duration_s + timeout_s + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0 or not out.exists():
            raise LblabError(f"DNS client on {job.client} failed (exit {proc.returncode}): "
                             f"{err.decode(errors='replace')[-300:]}")
        with open(out) as fh:
            for row in csv.DictReader(fh):
                row["ok"] = row["ok"] == "True"
                row["epoch"] = float(row["epoch"])
                row["t_s"] = float(row["t_s"])
                row["latency_ms"] = float(row["latency_ms"]) if row["latency_ms"] else None
                row["resolve_ms"] = float(row["resolve_ms"]) if row["resolve_ms"] else None
                row["bytes"] = int(row["bytes"] or 0)
                row["client"] = job.client
                row.update(job.label)
                rows.append(row)
        out.unlink(missing_ok=True)
    return rows


def run_clients(live, jobs: list[ClientJob], duration_s: float, work_dir: Path,
                **kw) -> tuple[float, list[dict]]:
    start_at, running = start_clients(live, jobs, duration_s, work_dir, **kw)
    return start_at, collect_clients(running, duration_s)


def default_jobs(plan: NetworkPlan, resolvers: dict[str, Resolver], rate: float,
                 pick: str = "random", seed: int = 1) -> list[ClientJob]:
    """Every client with a resolver, through the resolver the scenario gives it."""
    jobs = []
    for i, client in enumerate(plan.by_role("client")):
        res = resolver_of(plan, client.name)
        if res is None or res.name not in resolvers:
            continue
        jobs.append(ClientJob(client.name, resolvers[res.name].ip, rate, pick,
                              derive(seed, "client", client.name),
                              {"resolver": res.name, "client_region": client.site}))
    return jobs


def record_rows(ctx, rows: list[dict], t0: float, plan: NetworkPlan, variant: str,
                **extra) -> None:
    """Client rows -> records.csv rows (RECORD_COLUMNS, then the DNS columns)."""
    for row in rows:
        host = plan.host(row["client"])
        ctx.record(variant=variant, t_s=round(row["epoch"] - t0, 4), src=row["client"],
                   src_region=host.site, dst=row["dst"], dst_dc=row["dc"], vip=row["dst"],
                   backend=row["backend"], workload="dns-search",
                   latency_ms=row["latency_ms"], bytes=row["bytes"], ok=row["ok"],
                   error=row["error"], resolver=row.get("resolver", ""),
                   resolve_ms=row["resolve_ms"], answers=row["answers"], **extra)


# ---------------------------------------------------------------------------------------
# the authority process (runs inside the lba- host)


def request_rate(history: list[tuple[float, int]], window_s: float) -> float | None:
    """Requests/s over the newest span of at least window_s of (time, counter) samples
    (None until there are two). Each sample is itself one request to /stats: not load."""
    if len(history) < 2:
        return None
    now, count = history[-1]
    for i in range(len(history) - 2, -1, -1):
        then, before = history[i]
        if now - then >= window_s or i == 0:
            polls = len(history) - 1 - i
            return max(0.0, (count - before - polls) / max(now - then, 1e-3))
    return None


async def _backend_requests(ip: str, port: int = SERVICE_PORT) -> int | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 0.4)
        writer.write(f"GET /stats HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
                     .encode())
        data = await asyncio.wait_for(reader.read(), 0.4)
        writer.close()
        return int(json.loads(data.split(b"\r\n\r\n", 1)[1])["requests"])
    except (OSError, asyncio.TimeoutError, ValueError, KeyError, IndexError):
        return None


def loadfeed_main(dc: str, backends: list[str], out: str) -> int:
    """Every LOAD_POLL_S: the DC's request rate (sum over its reachable backends) -> `out`."""
    from topologies.state import write_atomic
    history: dict[str, list[tuple[float, int]]] = {ip: [] for ip in backends}

    async def loop() -> None:
        while True:
            started = time.monotonic()
            counts = await asyncio.gather(*(_backend_requests(ip) for ip in backends))
            now = time.monotonic()
            total, known = 0.0, False
            for ip, count in zip(backends, counts):
                hist = history[ip]
                if count is None or (hist and count < hist[-1][1]):
                    hist.clear()  # unreachable or restarted: start over
                    continue
                hist.append((now, count))
                del hist[:-20]
                rate = request_rate(hist, LOAD_WINDOW_S)
                if rate is not None:
                    total, known = total + rate, True
            if known:
                write_atomic(Path(out), json.dumps({"dc": dc, "rps": round(total, 1),
                                                    "time": time.time()}))
            await asyncio.sleep(max(0.0, LOAD_POLL_S - (time.monotonic() - started)))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(loop())
    except KeyboardInterrupt:
        pass
    return 0


async def read_load_files(view, files: dict[str, str], interval_s: float = 0.25,
                          stale_s: float = 3.0) -> None:
    """The authority's side of the load feed: fresh files -> GlobalView.set_load."""
    seen: dict[str, float] = {}
    while True:
        for dc, path in files.items():
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                continue
            if data.get("time", 0) != seen.get(dc) and time.time() - data["time"] < stale_s:
                seen[dc] = data["time"]
                view.set_load(dc, float(data["rps"]))
        await asyncio.sleep(interval_s)


def authority_main(launch_file: str) -> int:
    from gslb.server import run_until_signal, start_server
    spec = json.loads(Path(launch_file).read_text())
    config = GslbConfig.from_dict(spec["config"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    async def main() -> None:
        probe = {dc: (ip, int(port)) for dc, (ip, port) in spec["probe"].items()}
        server = await start_server(config, [tuple(spec["listen"])], tuple(spec["control"]),
                                    probe_targets=probe or None, seed=spec.get("seed"))
        background = [read_load_files(server.view, spec["load_files"])] \
            if spec.get("load_files") else []
        await run_until_signal(server, background)

    asyncio.run(main())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="lblab DNS glue (run inside a host)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("authority", help="the GSLB authority with prober and load feed")
    p.add_argument("--launch", required=True, help="JSON written by start_authority")
    p = sub.add_parser("loadfeed", help="a DC's request rate from its backends -> a file")
    p.add_argument("--dc", required=True)
    p.add_argument("--backend", action="append", required=True, help="backend address")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "loadfeed":
        return loadfeed_main(args.dc, args.backend, args.out)
    return authority_main(args.launch)


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------
# small helpers shared by the DNS experiments


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation; None for no values."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    pos = (len(vals) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return round(vals[lo] + (vals[hi] - vals[lo]) * (pos - lo), 3)


def dc_of_address(config: GslbConfig) -> dict[str, str]:
    return {str(d.vip): d.name for d in config.dcs}


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
