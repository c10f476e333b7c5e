"""The `dns:` section of a scenario: the authority's site and policy, the service names
(traffic classes) with their own policies, resolvers shared by regions or public, TTL
bounds. Read by topologies/scenario.py (`parse`), which re-exports every name here."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from topologies.fields import Fields, ScenarioError, as_boolean, as_count

DNS_POLICIES = ("all", "geo", "capacity", "spare")
DNS_OVERLOADS = ("spill", "shed")   # the capacity policy when every DC is full (gslb/policy.py)
DNS_ANSWERS = ("first_backend", "vip")


@dataclass(frozen=True)
class SharedResolver:
    """A distant resolver shared by some clients of other regions (the authority then sees
    the resolver, not the user): the last `clients` clients of each region in
    `clients_from` use the resolver of region `site` instead of their own."""
    site: str
    clients_from: tuple[str, ...]
    clients: int = 1


@dataclass(frozen=True)
class Dns:
    authority_site: str
    policy: str
    ttl_s: int
    # TTL bounds the resolvers apply to cached answers (unbound cache-min-ttl/cache-max-ttl)
    cache_min_ttl_s: int = 0
    cache_max_ttl_s: int = 86400
    # what the A records of the service name are: each DC's VIP (served by the VIP
    # balancer), or the DC's first backend (for a network run without the VIP app)
    answers: str = "vip"
    shared_resolver: SharedResolver | None = None
    # a public resolver (the chapter's "middleman") in region `site` that users of every
    # population may use (`population.public_share`), with or without ECS
    public_resolver: "PublicResolver | None" = None
    # the capacity policy when every DC is full, and how far below capacity a full DC must
    # fall to rejoin the answers (gslb/policy.py)
    overload: str = "spill"
    hysteresis: float = 0.1
    # further names of the zone (search.lblab.test, ...), each with its own policy and TTL;
    # www.lblab.test keeps `policy` and `ttl_s`
    services: tuple["DnsService", ...] = ()


@dataclass(frozen=True)
class DnsService:
    """A traffic class's name: `name`.lblab.test, answered by `policy` with `ttl_s`, filling
    at most `capacity_share` of each DC's capacity (its load: the backends' count of
    requests to /`name`), `spare` within `max_distance_ms` of the client's region."""
    name: str
    policy: str = "geo"
    ttl_s: int = 30
    capacity_share: float = 1.0
    max_distance_ms: float | None = None


@dataclass(frozen=True)
class PublicResolver:
    """One resolver in `site` (a region with a population; address .254 of its resolver
    /24) shared by users of every region."""
    site: str
    ecs: bool = True


def parse_dns(source: str, data: Any, regions: list, names: list[str]) -> "Dns":
    f = Fields(source, "dns", data, {"authority", "policy", "ttl_s", "cache_min_ttl_s",
                                      "cache_max_ttl_s", "answers", "shared_resolver",
                                      "public_resolver", "overload", "hysteresis",
                                      "services"})
    authority = f.get("authority", str, names[len(regions)] if len(names) > len(regions)
                      else "")
    if authority not in names:
        f.fail(f"unknown site '{authority}' (sites: {', '.join(names)})", sub="authority")
    min_ttl = int(f.number("cache_min_ttl_s", 0, minimum=0, maximum=86400))
    max_ttl = int(f.number("cache_max_ttl_s", 86400, minimum=0, maximum=86400))
    if min_ttl > max_ttl:
        f.fail(f"cache_min_ttl_s {min_ttl} is above cache_max_ttl_s {max_ttl}",
               sub="cache_min_ttl_s")
    shared = None
    if f.data.get("shared_resolver") is not None:
        shared = _parse_shared_resolver(source, f.data["shared_resolver"], regions)
    public = None
    if f.data.get("public_resolver") is not None:
        public = _parse_public_resolver(source, f.data["public_resolver"], regions)
    for r in regions:
        if r.population is not None and r.population.public_share > 0 and public is None:
            raise ScenarioError(f"{source}: regions.{r.name}.population.public_share: "
                                "there is no public resolver: add dns.public_resolver")
    return Dns(authority_site=authority, policy=f.choice("policy", DNS_POLICIES, "geo"),
               ttl_s=int(f.number("ttl_s", 30, minimum=0, maximum=86400)),
               cache_min_ttl_s=min_ttl, cache_max_ttl_s=max_ttl,
               answers=f.choice("answers", DNS_ANSWERS, "vip"),
               shared_resolver=shared, public_resolver=public,
               overload=f.choice("overload", DNS_OVERLOADS, "spill"),
               hysteresis=f.number("hysteresis", 0.1, minimum=0, maximum=0.9),
               services=_parse_services(source, f.data.get("services")))


SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
RESERVED_NAMES = ("www", "ns1")


def _parse_services(source: str, data: Any) -> tuple[DnsService, ...]:
    """`dns.services`: name -> {policy, ttl_s, capacity_share, max_distance_ms}."""
    if data is None:
        return ()
    holder = Fields(source, "dns.services", data, set(map(str, data))
                    if isinstance(data, dict) else set())
    if not isinstance(data, dict) or not data:
        holder.fail("expected a mapping like {search: {policy: capacity, ttl_s: 10}}")
    out = []
    for name, spec in data.items():
        if not isinstance(name, str) or not SERVICE_NAME.match(name) or \
                name in RESERVED_NAMES:
            holder.fail(f"'{name}' is not a usable name (a DNS label: lowercase letters, "
                        f"digits, '-'; not {' or '.join(RESERVED_NAMES)})")
        f = Fields(source, f"dns.services.{name}", spec if spec is not None else {},
                   {"policy", "ttl_s", "capacity_share", "max_distance_ms"})
        distance = f.number("max_distance_ms", None, minimum=0, maximum=10_000)
        policy = f.choice("policy", DNS_POLICIES, "geo")
        if distance is not None and policy != "spare":
            f.fail("applies only with policy: spare", sub="max_distance_ms")
        out.append(DnsService(
            name=name, policy=policy,
            ttl_s=int(f.number("ttl_s", 30, minimum=0, maximum=86400)),
            capacity_share=f.number("capacity_share", 1.0, minimum=0.01, maximum=1),
            max_distance_ms=distance))
    return tuple(out)


def _parse_public_resolver(source: str, data: Any, regions: list) -> PublicResolver:
    f = Fields(source, "dns.public_resolver", data, {"site", "ecs"})
    hosts = [r.name for r in regions if r.population is not None and r.resolver]
    site = f.get("site", str)
    if site not in hosts:
        f.fail(f"'{site}' is not a region with a population and a resolver host (those "
               f"are: {', '.join(hosts) or 'none'})", sub="site")
    return PublicResolver(site=site, ecs=f.get("ecs", as_boolean, True))


def _name_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of region names like [ap], got {value!r}")
    return value


def _parse_shared_resolver(source: str, data: Any, regions: list) -> SharedResolver:
    f = Fields(source, "dns.shared_resolver", data, {"site", "clients_from", "clients"})
    by_name = {r.name: r for r in regions}
    with_resolver = [r.name for r in regions if r.resolver]
    site = f.get("site", str)
    if site not in with_resolver:
        f.fail(f"'{site}' is not a client region with a resolver (those are: "
               f"{', '.join(with_resolver) or 'none'})", sub="site")
    raw = f.get("clients_from", _name_list)
    if not raw:
        f.fail("list at least one client region", sub="clients_from")
    for i, name in enumerate(raw):
        if name not in by_name:
            f.fail(f"unknown region '{name}' (regions: {', '.join(by_name)})",
                   sub=f"clients_from[{i}]")
        if name == site:
            f.fail(f"'{name}' is the shared resolver's own region", sub=f"clients_from[{i}]")
    if len(set(raw)) != len(raw):
        f.fail("a region is listed twice", sub="clients_from")
    clients = f.get("clients", as_count, 1)
    fewest = min(by_name[n].clients for n in raw)
    if not 1 <= clients <= fewest:
        f.fail(f"must be between 1 and {fewest} (clients of the smallest listed region), "
               f"got {clients}", sub="clients")
    return SharedResolver(site=site, clients_from=tuple(raw), clients=clients)
