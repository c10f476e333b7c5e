"""The DNS experiments' network: the service (backends, authority, resolvers) started
together, and DNS-aware clients whose requests become records.

The services themselves are the lab's (lab/dns.py, lab/unbound.py); clients run
experiments/workloads/dnssearch.py inside their hosts, resolving through their resolver
before every request.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.seeds import derive
from experiments.workloads.control import start_http_backends
from gslb.config import GslbConfig
from lab.dns import Authority, load_file, start_authority
from lab.dns_config import resolver_of
from lab.unbound import Resolver, start_resolvers
from topologies.plan import NetworkPlan
from topologies.system import LblabError, REPO_ROOT


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
    backends = start_http_backends(live, plan)
    if plan.scenario.dns.answers == "vip" and hasattr(live, "start_health_checks"):
        live.start_health_checks()
    authority = start_authority(live, plan, config, work_dir, load=load,
                                seed=derive(seed, "authority"))
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
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(REPO_ROOT))
        running.append((job, proc, out))
    return start_at, running


def _wait_client(proc, out: Path, timeout_s: float, what: str) -> None:
    """Wait for a load generator (killed past `timeout_s`); a one-line LblabError unless it
    exited 0 and wrote `out`."""
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if proc.returncode != 0 or not out.exists():
        raise LblabError(f"{what} failed (exit {proc.returncode}): "
                         f"{err.decode(errors='replace').strip()[-300:]}")


def _read_rows(out: Path, floats: tuple[str, ...], ints: tuple[str, ...],
               bools: tuple[str, ...], **extra) -> list[dict]:
    """A client's CSV rows with their types back (empty floats -> None, empty ints -> 0),
    each with `extra`; the file is removed."""
    rows = []
    with open(out) as fh:
        for row in csv.DictReader(fh):
            for key in bools:
                row[key] = row[key] == "True"
            for key in floats:
                row[key] = float(row[key]) if row[key] else None
            for key in ints:
                row[key] = int(row[key] or 0)
            row.update(extra)
            rows.append(row)
    out.unlink(missing_ok=True)
    return rows


def collect_clients(running: list, duration_s: float, timeout_s: float = 3.0) -> list[dict]:
    """Wait for the clients and return their rows, each with its job's client and label."""
    rows = []
    for job, proc, out in running:
        _wait_client(proc, out, duration_s + timeout_s + 60, f"DNS client on {job.client}")
        rows += _read_rows(out, ("epoch", "t_s", "latency_ms", "resolve_ms"), ("bytes",),
                           ("ok",), client=job.client, **job.label)
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


def dc_of_address(config: GslbConfig) -> dict[str, str]:
    return {str(d.vip): d.name for d in config.dcs}


# ---------------------------------------------------------------------------------------
# populations (topologies/population.py): many users per client host, many resolvers


def resolver_memory_mb(resolvers: dict[str, Resolver]) -> dict:
    """Resident and proportional memory of the resolvers' processes (MB, summed): what a
    population's resolvers cost the machine (PSS shares the library pages fairly)."""
    rss = pss = 0.0
    for res in resolvers.values():
        pid = getattr(res.proc, "pid", None)
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except (OSError, ValueError):
            continue
    return {"resolvers": len(resolvers), "rss_mb": round(rss, 1), "pss_mb": round(pss, 1)}


def addresses_seen(rows: list[dict]) -> dict:
    """How many distinct users, subnets and resolvers a population's requests came from,
    and in how many answered requests the backend saw the user's own address (X-Client):
    the evidence that every user is a real source address all the way to the backend."""
    ok = [r for r in rows if r["ok"]]
    return {"requests_ok": len(ok), "users": len({r["user"] for r in rows}),
            "user_subnets": len({r["user_subnet"] for r in rows}),
            "resolvers": len({r["resolver"] for r in rows}),
            "backend_saw_user_ip": sum(1 for r in ok if r["seen_as"] == r["user_ip"])}


def population_scenario(scenario, experiment: str, public: bool = False) -> None:
    """A one-line InputError unless the scenario has populations (and a public resolver,
    when `public`)."""
    from topologies.system import InputError
    missing = ("populations" if not scenario.populations else
               "a dns.public_resolver" if public and scenario.dns.public_resolver is None
               else None)
    if missing:
        raise InputError(f"{experiment} needs a scenario with {missing}; {scenario.name} has "
                         f"none (try --scenario three-dc-pop)")


def start_population_service(live, plan: NetworkPlan, config: GslbConfig, work_dir: Path,
                             seed: int) -> tuple[dict[str, list], Authority]:
    """What a population experiment needs before its resolvers: every backend, the health
    checks (VIP answers), the authority. Returns (DC -> backend processes, authority)."""
    backends = start_http_backends(live, plan)
    if plan.scenario.dns.answers == "vip":
        live.start_health_checks()
    return backends, start_authority(live, plan, config, work_dir,
                                     seed=derive(seed, "authority"))


def check_addresses(ctx, variant: str, rows: list[dict], seen: dict) -> None:
    """seen[variant] = addresses_seen(rows), and a warning when a backend saw another
    address than its user's."""
    seen[variant] = got = addresses_seen(rows)
    if got["backend_saw_user_ip"] < got["requests_ok"]:
        ctx.warn(f"{variant}: in {got['requests_ok'] - got['backend_saw_user_ip']} answered "
                 "requests the backend saw another address than the user's")


def run_population(live, users: list, duration_s: float, work_dir: Path, *, seed: int,
                   rate: float | None = None, start_in_s: float = 1.5,
                   timeout_s: float = 3.0, retry_delay_s: float | None = None
                   ) -> tuple[float, list[dict]]:
    """Every user's requests for `duration_s`: one population client per region's
    population host, all starting at one wall-clock instant (returned); their rows, each
    with `client` (the host) and `user_region`. Each user's request process is its own from
    the scenario, or open loop at `rate` (and with `retry_delay_s`) where given."""
    start_at, running = start_population(live, users, duration_s, work_dir, rate=rate,
                                         seed=seed, start_in_s=start_in_s,
                                         timeout_s=timeout_s, retry_delay_s=retry_delay_s)
    return start_at, collect_population(live, running, duration_s, timeout_s)


def start_population(live, users: list, duration_s: float, work_dir: Path, *, seed: int,
                     rate: float | None = None, start_in_s: float = 1.5,
                     timeout_s: float = 3.0, retry_delay_s: float | None = None,
                     segments: list[tuple[float, float]] | None = None,
                     name: str = "www.lblab.test", upload_name: str = ""
                     ) -> tuple[float, list]:
    """run_population's first half: the clients started (they begin at the returned
    wall-clock instant), for collect_population; an experiment acts in between.
    `segments` [(seconds, factor), ...]: every open-loop rate times each factor in turn
    (their seconds should sum to duration_s); `name`: the service name users resolve
    (`upload_name`, when given, for their uploads)."""
    import json
    from topologies.plan import population_host
    from topologies.population import with_process
    by_host: dict[str, list] = {}
    for u in with_process(users, rate, retry_delay_s):
        by_host.setdefault(population_host(u.region), []).append(u)
    start_at = time.time() + start_in_s
    running = []
    for host, group in sorted(by_host.items()):
        tag = f"{host}-{os.getpid()}-{time.time_ns()}"
        spec = Path(work_dir) / f"users-{tag}.json"
        spec.write_text(json.dumps([u.client_spec() for u in group]))
        out = Path(work_dir) / f"population-{tag}.csv"
        stats = Path(work_dir) / f"population-{tag}.json"
        proc = live.spawn(host, [
            sys.executable, "-m", "experiments.workloads.population", "--users", str(spec),
            "--duration", str(duration_s), "--name", name, "--upload-name", upload_name,
            *(["--segments", ",".join(f"{a:g}:{f:g}" for a, f in segments)]
              if segments else []),
            "--seed", str(derive(seed, "population", host)), "--start-at", f"{start_at:.3f}",
            "--timeout", str(timeout_s), "--out", str(out), "--stats-out", str(stats)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(REPO_ROOT))
        running.append((host, group[0].region, proc, spec, out, stats))
    return start_at, running


def collect_population(live, running: list, duration_s: float, timeout_s: float = 3.0
                       ) -> list[dict]:
    """The started clients' rows, once each has finished (killed past its deadline)."""
    import json
    rows = []
    for host, region, proc, spec, out, stats in running:
        try:
            _wait_client(proc, out, duration_s + timeout_s * 4 + 60,
                         f"population client on {host}")
        finally:
            spec.unlink(missing_ok=True)
        if stats.exists():
            kept = getattr(live, "client_stats", None)
            if kept is not None:
                kept.append({"host": host, **json.loads(stats.read_text())})
            stats.unlink()
        rows += _read_rows(out, ("epoch", "t_s", "latency_ms", "resolve_ms", "start_lag_ms"),
                           ("bytes", "tries"), ("ok", "cached"), client=host,
                           user_region=region)
    return rows


def record_population(ctx, rows: list[dict], t0: float, variant: str, **extra) -> None:
    """Population rows -> records.csv rows (RECORD_COLUMNS, then the user's columns)."""
    for row in rows:
        ctx.record(variant=variant, t_s=round(row["epoch"] - t0, 4), src=row["client"],
                   src_region=row["user_region"], dst=row["dst"], dst_dc=row["dc"],
                   vip=row["dst"], backend=row["backend"],
                   workload=f"dns-{row['workload']}", latency_ms=row["latency_ms"],
                   bytes=row["bytes"], ok=row["ok"], error=row["error"], user=row["user"],
                   user_ip=row["user_ip"],
                   user_subnet=row["user_subnet"], resolver=row["resolver"],
                   behaviour=row["behaviour"], cached=row["cached"],
                   resolve_ms=row["resolve_ms"], tries=row["tries"], answers=row["answers"],
                   seen_as=row["seen_as"], start_lag_ms=row["start_lag_ms"], **extra)


def new_load_readings(work_dir: Path, dcs: list[str], seen: dict) -> list[tuple[str, dict]]:
    """(dc, reading) of every DC whose load-feed file has a reading newer than the last one
    taken (`seen`: dc -> the time of that reading, updated here); unreadable files skipped."""
    import json
    out = []
    for dc in dcs:
        try:
            data = json.loads(load_file(work_dir, dc).read_text())
        except (OSError, ValueError):
            continue
        if data.get("time") != seen.get(dc):
            seen[dc] = data.get("time")
            out.append((dc, data))
    return out
