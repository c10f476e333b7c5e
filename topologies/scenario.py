"""Scenario files: YAML -> validated, typed, frozen dataclasses.

A scenario describes client regions, datacenters (DCs), the DNS authority and the WAN links
between sites. Every mistake is reported as one `ScenarioError` line naming the file, the
field and the problem (`three-dc.yaml: links[2].b: unknown site 'ap2' ...`), because a user
editing a scenario must see what to fix, not a traceback.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from topologies.capacity import OVERLOADS
from topologies.fields import (Fields, ScenarioError, as_address, as_boolean, as_count,
                               as_subnet, as_subnet_any)
from topologies.scenario_dns import (DNS_ANSWERS, DNS_OVERLOADS, DNS_POLICIES,  # noqa: F401
                                     Dns, DnsService, PublicResolver, SharedResolver,
                                     parse_dns)

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
# Site names end up inside interface names (15-byte kernel limit), hence short.
SITE_NAME = re.compile(r"^[a-z][a-z0-9]{0,3}$")
MODES = ("nat", "dsr", "gre")
ALGORITHMS = ("modn", "maglev", "leastload")
CONNTRACK_IMPLS = ("ct", "learn")
# Where the VIP's hash is computed: in the datapath (a select group's dp_hash) or in OVS's
# slow path (the multipath action: an upcall per new connection). controller/hashing.py.
HASH_IMPLS = ("dp_hash", "multipath")
# What a user's machine does with the A records it gets (experiments/workloads/population.py)
BEHAVIOURS = ("random", "first", "retry-next")
# What a user's requests are: a short GET, or a POST of `upload_kb` (backends' /upload)
POP_WORKLOADS = ("search", "upload")
SPREADS = ("uniform", "zipf")
MAX_USERS = 20000          # per region: one client host emulates them all
MAX_RESOLVERS = 200        # per region: unbound processes on the region's resolver host


@dataclass(frozen=True)
class Population:
    """Many users of one region (topologies/population.py makes them): each has its own
    address in `user_prefix` (`users_per_subnet` per /24, from its second /24 on; the first
    /24 holds the region's resolvers), uses one of the region's `resolvers` (spread over them
    `uniform`ly or by Zipf with exponent `zipf_s`), or with probability `public_share` the
    scenario's public resolver, picks addresses by one of `behaviours` (name -> weight), and
    sends one of `workloads` (name -> weight: `search`, or `upload` of `upload_kb`): open
    loop at `rate_rps` (Poisson), or, when `think_time_s` is set, closed loop (each user
    waits for its reply, then thinks for an exponential time of that mean)."""
    users: int
    user_prefix: ipaddress.IPv4Network
    resolvers: int = 1
    spread: str = "uniform"
    zipf_s: float = 1.0
    users_per_subnet: int = 50
    public_share: float = 0.0
    behaviours: tuple[tuple[str, float], ...] = (("random", 1.0),)
    stub_cache: bool = False
    rate_rps: float = 0.05
    retry_delay_s: float = 1.0
    think_time_s: float = 0.0          # 0: open loop at rate_rps
    workloads: tuple[tuple[str, float], ...] = (("search", 1.0),)
    upload_kb: int = 256

    @property
    def resolver_subnet(self) -> ipaddress.IPv4Network:
        return next(self.user_prefix.subnets(new_prefix=24))

    @property
    def subnets(self) -> int:
        return -(-self.users // self.users_per_subnet)


@dataclass(frozen=True)
class Region:
    name: str
    subnet: ipaddress.IPv4Network
    clients: int
    resolver: bool
    ecs: bool
    population: Population | None = None


@dataclass(frozen=True)
class DataCenter:
    name: str
    subnet: ipaddress.IPv4Network
    vip: ipaddress.IPv4Address
    backends: int
    capacity_rps: float
    mode: str
    algorithm: str
    conntrack: bool
    # DCs whose backends also serve this DC's VIP (mode gre only: reached through GRE
    # across the WAN, lab/gre.py)
    remote_backends: tuple[str, ...] = ()
    # the VIP's connection table: ct (the datapath's conntrack) or learn (learned flows)
    conntrack_impl: str = "ct"
    # where the switch computes the VIP's hash (HASH_IMPLS)
    hash_impl: str = "dp_hash"
    # LB instances serving the VIP behind the DC router's ECMP route (BGP-announced): 1 is
    # the DC switch itself; K > 1 adds K one-armed LB switches (topologies/plan.py)
    lbs: int = 1
    # what a backend does beyond its share of capacity_rps (topologies/capacity.py):
    # none (serves everything), shed (503 + Retry-After), queue (delays, then 503)
    overload: str = "none"
    overload_queue_s: float = 0.5
    max_concurrent: int | None = None   # per backend, requests in progress (503 beyond)


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    delay_ms: float
    bw_mbps: float | None
    loss_pct: float

    @property
    def rtt_ms(self) -> float:
        return 2 * self.delay_ms


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    source: str
    regions: tuple[Region, ...]
    dcs: tuple[DataCenter, ...]
    links: tuple[Link, ...]
    dns: Dns
    wan_pool: ipaddress.IPv4Network
    lan_bw_mbps: float | None = None
    extra: dict = field(default_factory=dict, compare=False)
    # set by load(): the file it came from and its SHA-256 (recorded in each run's metadata)
    source_path: str = field(default="", compare=False)
    sha256: str = field(default="", compare=False)

    @property
    def sites(self) -> list[str]:
        return [r.name for r in self.regions] + [d.name for d in self.dcs]

    @property
    def populations(self) -> list[Region]:
        """The regions with a population block."""
        return [r for r in self.regions if r.population is not None]

    def region(self, name: str) -> Region:
        return next(r for r in self.regions if r.name == name)

    def dc(self, name: str) -> DataCenter:
        return next(d for d in self.dcs if d.name == name)


def parse(data: Any, source: str) -> Scenario:
    """Validate a scenario mapping (already loaded from YAML) into a `Scenario`."""
    top = Fields(source, "", data, {"name", "description", "regions", "dcs", "links", "dns",
                                     "wan_pool", "lan_bw_mbps"})
    name = top.get("name", str)
    description = top.get("description", str, "")
    regions = _parse_regions(source, top.get("regions", dict))
    dcs = _parse_dcs(source, top.get("dcs", dict))
    names = [r.name for r in regions] + [d.name for d in dcs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        top.fail(f"site name '{sorted(dup)[0]}' is used by both a region and a DC", sub="dcs")
    wan_pool = top.get("wan_pool", as_subnet_any, ipaddress.IPv4Network("10.255.0.0/16"))
    _check_overlaps(top, regions, dcs, wan_pool)
    links = _parse_links(source, top.get("links", list), set(names))
    dns = parse_dns(source, top.get("dns", dict, {}), regions, names)
    lan_bw = top.number("lan_bw_mbps", None, minimum=0.1)
    scenario = Scenario(name=name, description=description, source=source,
                        regions=tuple(regions), dcs=tuple(dcs), links=tuple(links), dns=dns,
                        wan_pool=wan_pool, lan_bw_mbps=lan_bw)
    _check_connected(top, scenario)
    return scenario


def _site_name(fields: Fields, name: Any) -> str:
    if not isinstance(name, str) or not SITE_NAME.match(name):
        fields.fail(f"bad site name {name!r}: use 1-4 lowercase letters/digits, starting "
                    "with a letter (names end up in 15-character interface names)", sub=str(name))
    return name


def _parse_regions(source: str, data: dict) -> list[Region]:
    holder = Fields(source, "regions", data, set(map(str, data)))
    if not data:
        holder.fail("at least one region is needed")
    out = []
    for name, spec in data.items():
        _site_name(holder, name)
        f = Fields(source, f"regions.{name}", spec, {"subnet", "clients", "resolver", "ecs",
                                                      "population"})
        clients = f.get("clients", as_count, 2)
        if not 1 <= clients <= 40:
            f.fail(f"must be between 1 and 40, got {clients}", sub="clients")
        resolver = f.get("resolver", as_boolean, True)
        population = None
        if f.data.get("population") is not None:
            if not resolver:
                f.fail("a population needs the region's resolver host (resolver: true): its "
                       "resolvers run there", sub="population")
            population = _parse_population(source, f"regions.{name}.population",
                                           f.data["population"])
        out.append(Region(name=name, subnet=f.get("subnet", as_subnet), clients=clients,
                          resolver=resolver, ecs=f.get("ecs", as_boolean, True),
                          population=population))
    return out


def _parse_population(source: str, path: str, data: Any) -> Population:
    f = Fields(source, path, data, {"users", "user_prefix", "resolvers", "spread", "zipf_s",
                                     "users_per_subnet", "public_share", "behaviours",
                                     "stub_cache", "rate_rps", "retry_delay_s",
                                     "think_time_s", "workloads", "upload_kb"})
    users = f.get("users", as_count)
    if not 1 <= users <= MAX_USERS:
        f.fail(f"must be between 1 and {MAX_USERS}, got {users}", sub="users")
    prefix = f.get("user_prefix", as_subnet_any)
    if prefix.prefixlen > 23:
        f.fail(f"{prefix} is too small: the first /24 holds the resolvers, users need at "
               "least one more (use /23 or larger)", sub="user_prefix")
    per_subnet = f.get("users_per_subnet", as_count, 50)
    if not 1 <= per_subnet <= 250:
        f.fail(f"must be between 1 and 250, got {per_subnet}", sub="users_per_subnet")
    room = 2 ** (24 - prefix.prefixlen) - 1
    if -(-users // per_subnet) > room:
        f.fail(f"{users} users at {per_subnet} per /24 need {-(-users // per_subnet)} /24 "
               f"subnets; {prefix} has {room} after the resolvers'", sub="user_prefix")
    resolvers = f.get("resolvers", as_count, 1)
    if not 1 <= resolvers <= MAX_RESOLVERS:
        f.fail(f"must be between 1 and {MAX_RESOLVERS}, got {resolvers}", sub="resolvers")
    if "think_time_s" in f.data and "rate_rps" in f.data:
        f.fail("give rate_rps (open loop) or think_time_s (closed loop), not both",
               sub="think_time_s")
    upload_kb = f.get("upload_kb", as_count, 256)
    if not 1 <= upload_kb <= 100_000:
        f.fail(f"must be between 1 and 100000 (KB), got {upload_kb}", sub="upload_kb")
    return Population(
        users=users, user_prefix=prefix, resolvers=resolvers,
        spread=f.choice("spread", SPREADS, "uniform"),
        zipf_s=f.number("zipf_s", 1.0, minimum=0, maximum=5), users_per_subnet=per_subnet,
        public_share=f.number("public_share", 0.0, minimum=0, maximum=1),
        behaviours=_weights(f, "behaviours", BEHAVIOURS),
        stub_cache=f.get("stub_cache", as_boolean, False),
        rate_rps=f.number("rate_rps", 0.05, minimum=0.0001, maximum=100),
        retry_delay_s=f.number("retry_delay_s", 1.0, minimum=0.01, maximum=60),
        think_time_s=(f.number("think_time_s", minimum=0.01, maximum=3600)
                      if "think_time_s" in f.data else 0.0),
        workloads=_weights(f, "workloads", POP_WORKLOADS), upload_kb=upload_kb)


def _weights(f: Fields, key: str, names: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """`behaviours` or `workloads`: a mapping name -> weight (weights > 0, normalised), or
    one name (the first of `names` when absent)."""
    raw = f.data.get(key, {names[0]: 1})
    if isinstance(raw, str):
        raw = {raw: 1}
    if not isinstance(raw, dict) or not raw:
        f.fail(f"expected a mapping like {{{names[0]}: 0.5, {names[1]}: 0.5}} or one of "
               f"{', '.join(names)}, got {raw!r}", sub=key)
    out = []
    for name, weight in raw.items():
        if name not in names:
            f.fail(f"'{name}' is not one of {', '.join(names)}", sub=f"{key}.{name}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            f.fail(f"weight must be a number above 0, got {weight!r}", sub=f"{key}.{name}")
        out.append((str(name), float(weight)))
    total = sum(w for _, w in out)
    return tuple((name, w / total) for name, w in out)


def _parse_dcs(source: str, data: dict) -> list[DataCenter]:
    holder = Fields(source, "dcs", data, set(map(str, data)))
    if not data:
        holder.fail("at least one DC is needed")
    out = []
    for name, spec in data.items():
        _site_name(holder, name)
        f = Fields(source, f"dcs.{name}", spec, {"subnet", "vip", "backends", "capacity_rps",
                                                  "mode", "algorithm", "conntrack",
                                                  "conntrack_impl", "remote_backends",
                                                  "lbs", "hash_impl", "overload",
                                                  "overload_queue_s", "max_concurrent"})
        subnet = f.get("subnet", as_subnet)
        vip = f.get("vip", as_address)
        if vip not in subnet:
            f.fail(f"VIP {vip} is not inside the DC subnet {subnet}", sub="vip")
        if vip in (subnet.network_address, subnet.broadcast_address, subnet.network_address + 1):
            f.fail(f"VIP {vip} collides with the network, broadcast or router address",
                   sub="vip")
        backends = f.get("backends", as_count, 4)
        if not 1 <= backends <= 40:
            f.fail(f"must be between 1 and 40, got {backends}", sub="backends")
        lbs, mode, impl = _lb_tier(f)
        overload = f.choice("overload", OVERLOADS, "none")
        for key in ("overload_queue_s", "max_concurrent"):
            if key in f.data and overload == "none":
                f.fail("applies only with overload: shed or queue", sub=key)
        concurrent = f.get("max_concurrent", as_count, None)
        if concurrent is not None and not 1 <= concurrent <= 100_000:
            f.fail(f"must be between 1 and 100000, got {concurrent}", sub="max_concurrent")
        out.append(DataCenter(
            name=name, subnet=subnet, vip=vip, backends=backends,
            capacity_rps=f.number("capacity_rps", 1000.0, minimum=1),
            mode=mode, algorithm=f.choice("algorithm", ALGORITHMS, "maglev"),
            conntrack=f.get("conntrack", as_boolean, True), conntrack_impl=impl,
            hash_impl=f.choice("hash_impl", HASH_IMPLS, "dp_hash"),
            remote_backends=tuple(f.get("remote_backends", _dc_name_list, [])), lbs=lbs,
            overload=overload, max_concurrent=concurrent,
            overload_queue_s=f.number("overload_queue_s", 0.5, minimum=0.01, maximum=60)))
        if out[-1].remote_backends and out[-1].mode != "gre":
            f.fail("remote backends are reached through GRE only: set mode: gre",
                   sub="remote_backends")
    names = {d.name for d in out}
    for d in out:
        for other in d.remote_backends:
            if other not in names or other == d.name:
                raise ScenarioError(f"{source}: dcs.{d.name}.remote_backends: '{other}' is "
                                    f"not another DC (DCs: {', '.join(sorted(names))})")
    return out


MAX_LBS = 4


def _lb_tier(f: Fields) -> tuple[int, str, str]:
    """`lbs`, `mode` and `conntrack_impl` of a DC, checked together: K > 1 LBs behind ECMP
    see one direction of each connection and any of them may get its next packet."""
    lbs = f.get("lbs", as_count, 1)
    if not 1 <= lbs <= MAX_LBS:
        f.fail(f"must be between 1 and {MAX_LBS}, got {lbs}", sub="lbs")
    mode = f.choice("mode", MODES, "nat")
    if lbs > 1 and mode == "nat":
        f.fail("mode nat needs one LB: replies must return through the LB that holds the "
               "translation, and the router's ECMP hash may send them to another (use dsr)",
               sub="mode")
    impl = f.choice("conntrack_impl", CONNTRACK_IMPLS, "ct" if lbs == 1 else "learn")
    if lbs > 1 and impl == "ct":
        f.fail("conntrack_impl ct needs one LB: a one-armed LB sees only the client's "
               "direction, and conntrack marks such a connection invalid (use learn)",
               sub="conntrack_impl")
    return lbs, mode, impl


def _dc_name_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of names, e.g. [eu1]")
    return list(value)


def _check_overlaps(top: Fields, regions: list[Region], dcs: list[DataCenter],
                    wan_pool: ipaddress.IPv4Network) -> None:
    nets = [(f"regions.{r.name}.subnet", r.subnet) for r in regions] + \
        [(f"dcs.{d.name}.subnet", d.subnet) for d in dcs] + \
        [(f"regions.{r.name}.population.user_prefix", r.population.user_prefix)
         for r in regions if r.population is not None] + [("wan_pool", wan_pool)]
    for i, (path_a, net_a) in enumerate(nets):
        for path_b, net_b in nets[i + 1:]:
            if net_a.overlaps(net_b):
                raise ScenarioError(f"{top.source}: {path_b}: {net_b} overlaps {net_a} "
                                    f"({path_a})")


def _parse_links(source: str, data: list, sites: set[str]) -> list[Link]:
    out, seen = [], set()
    for i, spec in enumerate(data):
        f = Fields(source, f"links[{i}]", spec, {"a", "b", "delay_ms", "bw_mbps", "loss_pct"})
        ends = []
        for key in ("a", "b"):
            site = f.get(key, str)
            if site not in sites:
                f.fail(f"unknown site '{site}' (sites: {', '.join(sorted(sites))})", sub=key)
            ends.append(site)
        if ends[0] == ends[1]:
            f.fail(f"a link needs two different sites, got '{ends[0]}' twice", sub="b")
        pair = frozenset(ends)
        if pair in seen:
            f.fail(f"duplicate link between '{ends[0]}' and '{ends[1]}'")
        seen.add(pair)
        out.append(Link(a=ends[0], b=ends[1],
                        delay_ms=f.number("delay_ms", minimum=0, maximum=5000),
                        bw_mbps=f.number("bw_mbps", None, minimum=0.1, maximum=100000),
                        loss_pct=f.number("loss_pct", 0.0, minimum=0, maximum=100)))
    return out


def _check_connected(top: Fields, scenario: Scenario) -> None:
    """Every site must reach every other one over WAN links, or routing cannot work."""
    adjacency: dict[str, set[str]] = {s: set() for s in scenario.sites}
    for link in scenario.links:
        adjacency[link.a].add(link.b)
        adjacency[link.b].add(link.a)
    start = scenario.sites[0]
    seen, todo = {start}, [start]
    while todo:
        for nxt in adjacency[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    missing = sorted(set(scenario.sites) - seen)
    if missing:
        top.fail(f"site '{missing[0]}' is not connected to '{start}' by any chain of links",
                 sub="links")


def resolve_path(name_or_file: str) -> Path:
    """A scenario given as a name (three-dc) or a path to a YAML file."""
    candidate = Path(name_or_file)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ScenarioError(f"{name_or_file}: no such scenario file")
        return candidate
    builtin = SCENARIO_DIR / f"{name_or_file}.yaml"
    if not builtin.is_file():
        raise ScenarioError(f"unknown scenario '{name_or_file}' "
                            f"(built-in: {', '.join(builtin_names())}; or give a .yaml path)")
    return builtin


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load(name_or_file: str) -> Scenario:
    path = resolve_path(name_or_file)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"{path.name}: {where}: {problem}") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    return dataclasses.replace(parse(data, path.name), source_path=str(path),
                               sha256=hashlib.sha256(path.read_bytes()).hexdigest())
