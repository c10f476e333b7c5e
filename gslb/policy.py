"""Answer policies: which VIPs to put in the A RRset, and which client prefix that depended on.

Pure: the inputs are the config, a GlobalView snapshot, the client's location and a counter or
rng; nothing here reads the clock or the network, so every decision is testable and repeatable.

Availability rule shared by all policies (documented choice):
  1. a DC is *eligible* for a service when healthy and not *full* for it: full once the
     service's load there exceeds its capacity there (the DC's capacity_rps times the
     service's capacity_share), and again not full only once the load falls below
     (1 - hysteresis) of it (``update_full``; without a history, full = over capacity);
  2. if no DC is eligible but some are healthy (all overloaded), the healthy ones are used:
     overloaded service is better than none; the capacity policy then answers by its
     ``overload`` setting: ``spill`` the least loaded DC (relative to its capacity),
     ``shed`` each client's nearest (whose backends refuse the excess fast), the others
     still order them by their own rule;
  3. if no DC is healthy, every configured VIP is answered (fail open, as Route 53 does).
     SERVFAIL would be cached by resolvers (RFC 9520) and turn a wrong health view - e.g. the
     prober cut off from DCs that clients can still reach - into a certain outage.
"""
from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from gslb.config import WHOLE_DC, GslbConfig, IpNetwork, ServiceInfo
from gslb.ecs import FAMILY_BITS


@dataclass(frozen=True, slots=True)
class DcState:
    """What the global view knows about one DC at one instant."""

    healthy: bool = True
    load: float = 0.0  # same unit as capacity_rps (requests/s)
    # the load per service class (ServiceInfo.key -> requests/s), where the backends count it
    by_service: tuple[tuple[str, float], ...] = ()
    # how full the WAN link from each region to this DC is (region -> carried / bandwidth,
    # the busier direction), where the DC measures it; a region not listed: unknown, free
    wan: tuple[tuple[str, float], ...] = ()


Snapshot = Mapping[str, DcState]  # dc name -> state; a missing DC counts as healthy, idle


@dataclass(frozen=True, slots=True)
class ClientLocation:
    """Where the client is, and how many prefix bits decided that.

    ``scope`` is what the ECS reply carries if the answer depends on the location: the length
    of the matched region subnet (or longer when a more specific region subnet overlaps the
    client's prefix, so a resolver does not reuse the answer for clients elsewhere).
    """

    region: str | None
    scope: int = 0


UNKNOWN = ClientLocation(None, 0)


class RegionMap:
    """Longest-prefix match of addresses and ECS prefixes to regions."""

    def __init__(self, config: GslbConfig) -> None:
        entries = [(net, r.name) for r in config.regions for net in r.subnets]
        # most specific first, so the first containing subnet is the longest match
        self._entries: list[tuple[IpNetwork, str]] = sorted(
            entries, key=lambda e: -e[0].prefixlen)

    def locate_address(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address
                       ) -> ClientLocation:
        """The resolver's source address -> region (no ECS: scope is irrelevant)."""
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            return UNKNOWN
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for net, region in self._entries:
            if net.version == addr.version and addr in net:
                return ClientLocation(region, net.prefixlen)
        return UNKNOWN

    def locate_prefix(self, client: IpNetwork | None) -> ClientLocation:
        """An ECS prefix -> region and scope.

        A region subnet matches when it contains the whole client prefix. The scope is the
        matched length, raised to the length of any region subnet nested inside the client
        prefix (the answer there would differ). No match: region None, scope = SOURCE, so the
        fallback answer is cached only for that prefix. SOURCE 0 (None): unknown, scope 0.
        """
        if client is None:
            return UNKNOWN
        scope = 0
        region: str | None = None
        for net, name in self._entries:
            if net.version != client.version:
                continue
            if net.prefixlen <= client.prefixlen and client.subnet_of(net):  # type: ignore
                if region is None:
                    region, scope = name, max(scope, net.prefixlen)
            elif net.prefixlen > client.prefixlen and net.subnet_of(client):  # type: ignore
                scope = max(scope, net.prefixlen)
        if region is None:
            return ClientLocation(None, max(scope, client.prefixlen))
        return ClientLocation(region, min(scope, FAMILY_BITS[1 if client.version == 4 else 2]))


@dataclass(frozen=True, slots=True)
class Answer:
    vips: tuple[IPv4Address, ...]
    scope: int  # ECS SCOPE PREFIX-LENGTH: 0 when the answer did not depend on the client


@dataclass(frozen=True, slots=True)
class Plan:
    """A policy decision for one (config, snapshot, region), before the per-query draw.

    Precomputed so the server's hot path does only ``pick``. ``stay`` holds, nearest first,
    the probability that a query stops at that VIP (capacity policy); ``rotate`` means answer
    all ``vips`` with the order rotated per query (all policy, and geo's fallback).
    """

    vips: tuple[IPv4Address, ...]
    rotate: bool
    stay: tuple[float, ...] | None
    depends_on_client: bool

    def pick(self, counter: int, rng: random.Random | None = None) -> tuple[IPv4Address, ...]:
        if self.stay is not None:
            draw = (rng or random).random
            for vip, p in zip(self.vips, self.stay):
                if p >= 1.0 or draw() < p:
                    return (vip,)
            return (self.vips[-1],)
        if self.rotate and len(self.vips) > 1:
            k = counter % len(self.vips)
            return self.vips[k:] + self.vips[:k]
        return self.vips


def service_load(state: DcState, service: ServiceInfo) -> float:
    """A service's load at a DC: its own class's rate where known, else the DC's total
    (always the total for a service whose load_key is WHOLE_DC)."""
    if service.key == WHOLE_DC:
        return state.load
    for key, value in state.by_service:
        if key == service.key:
            return value
    return state.load


def service_capacity(config: GslbConfig, dc: str, service: ServiceInfo) -> float:
    return config.dc(dc).capacity_rps * service.capacity_share


def admit_target(config: GslbConfig, dc: str, service: ServiceInfo) -> float:
    """The load the capacity policy steers a DC towards: (1 - spill_headroom) of it."""
    return (1 - config.spill_headroom) * service_capacity(config, dc, service)


Full = frozenset  # of (service name, dc name): full, by update_full's hysteresis


def update_full(config: GslbConfig, snapshot: Snapshot, before: Full | None = None) -> Full:
    """Which (service, DC) pairs are full now: over capacity, or full before and not yet
    below (1 - hysteresis) of it."""
    out = set()
    for svc in config.all_services():
        for dc in config.dcs:
            load = service_load(snapshot.get(dc.name, DcState()), svc)
            cap = service_capacity(config, dc.name, svc)
            was = before is not None and (svc.name, dc.name) in before
            if load > cap or (was and load >= (1 - config.hysteresis) * cap):
                out.add((svc.name, dc.name))
    return frozenset(out)


Admit = dict  # (service name, dc name) -> the share of a region's queries a DC keeps


ADMIT_MIN = 0.02
ADMIT_GAIN = 0.5     # of the correction applied per loop delay (TTL + the feed's 1 s window)


def update_admit(config: GslbConfig, snapshot: Snapshot, before: Admit | None,
                 dt_s: float) -> Admit:
    """The capacity policy's memory: for each (service, DC) the share of the queries that
    would go to it that it keeps (the rest spill to the next-nearest). Integral control in
    log space: over dt_s the share moves by (target / load) ** (gain * dt_s / delay), with
    target (1 - spill_headroom) of the capacity and delay the service's TTL + 1 s (how
    long an answer takes to show in the load), so a DC settles just under its capacity
    instead of leaving the answers whole and coming back whole."""
    out = {}
    for svc in config.all_services():
        delay = max(1.0, float(svc.ttl_s)) + 1.0
        for dc in config.dcs:
            key = (svc.name, dc.name)
            f = 1.0 if before is None else before.get(key, 1.0)
            load = service_load(snapshot.get(dc.name, DcState()), svc)
            ratio = min(2.0, admit_target(config, dc.name, svc) / load) if load > 0 else 2.0
            f *= ratio ** (ADMIT_GAIN * max(0.0, dt_s) / delay)
            out[key] = min(1.0, max(ADMIT_MIN, f))
    return out


def candidates(config: GslbConfig, snapshot: Snapshot, service: ServiceInfo | None = None,
               full: Full | None = None) -> tuple[list[str], bool, bool]:
    """DC names to answer from (config order), whether that is the fail-open set, and
    whether every healthy DC is full (the overloaded set)."""
    svc = service or config.primary
    full = update_full(config, snapshot) if full is None else full
    healthy = [d.name for d in config.dcs if snapshot.get(d.name, DcState()).healthy]
    eligible = [n for n in healthy if (svc.name, n) not in full]
    if eligible:
        return eligible, False, False
    if healthy:
        return healthy, False, True
    return [d.name for d in config.dcs], True, False


def _by_distance(config: GslbConfig, names: list[str], region: str) -> list[str]:
    # ties keep config order (sorted is stable), so equal distances are deterministic
    return sorted(names, key=lambda n: config.distance_ms[(region, n)])


def _spare(config: GslbConfig, snapshot: Snapshot, name: str, svc: ServiceInfo) -> float:
    return service_capacity(config, name, svc) - service_load(
        snapshot.get(name, DcState()), svc)


SPARE_TIE = 0.1     # the spare policy: room within this of the most counts as the most


def wan_used(state: DcState, region: str) -> float:
    """The share of the region -> DC WAN link in use (0 where not measured)."""
    for name, value in state.wan:
        if name == region:
            return value
    return 0.0


def spare_score(config: GslbConfig, snapshot: Snapshot, name: str, svc: ServiceInfo,
                region: str) -> float:
    """The spare policy's measure of room for one more transfer from `region`: the
    scarcest of the class's spare share of the DC, the DC's spare capacity over all
    classes (they share the backends) and the headroom of the WAN link from the region,
    each a fraction of its whole."""
    state = snapshot.get(name, DcState())
    capacity = config.dc(name).capacity_rps
    own = _spare(config, snapshot, name, svc) / max(service_capacity(config, name, svc), 1e-9)
    whole = (capacity - state.load) / capacity if capacity > 0 else 0.0
    return min(own, whole, 1.0 - wan_used(state, region))


def _stay_probability(config: GslbConfig, snapshot: Snapshot, name: str,
                      svc: ServiceInfo) -> float:
    """Nearest first, shedding as the DC fills: 1 until spare < headroom, 0 when full."""
    capacity = service_capacity(config, name, svc)
    spare = _spare(config, snapshot, name, svc)
    return max(0.0, min(1.0, spare / (config.spill_headroom * capacity)))


def _admitted(config: GslbConfig, snapshot: Snapshot, name: str, svc: ServiceInfo,
              admit: Admit) -> float:
    """The share a DC keeps: its admitted share, cut at once to what would fit when its
    load is over the target (the memory then catches up)."""
    load = service_load(snapshot.get(name, DcState()), svc)
    target = admit_target(config, name, svc)
    share = admit.get((svc.name, name), 1.0)
    return min(share, target / load) if load > target else share


def plan(config: GslbConfig, snapshot: Snapshot, region: str | None,
         service: ServiceInfo | None = None, full: Full | None = None,
         admit: Admit | None = None) -> Plan:
    """The decision for a client in ``region`` (None: location unknown) for ``service``
    (default the config's own name and policy); ``full`` from update_full, ``admit`` from
    update_admit (the capacity policy then keeps each DC's admitted share instead of
    judging by its spare capacity alone, and a full DC is not dropped whole)."""
    svc = service or config.primary
    names, fail_open, overloaded = candidates(config, snapshot, svc, full)
    if admit is not None and svc.policy == "capacity" and not overloaded:
        # the admitted shares steer: a full DC keeps its share; only all-full is overload
        names, fail_open, overloaded = candidates(config, snapshot, svc, frozenset())
    vip = {d.name: d.vip for d in config.dcs}
    all_vips = tuple(vip[n] for n in names)
    if fail_open or svc.policy == "all" or region is None or len(names) == 1:
        # no location to use (or nothing to choose): every candidate, rotated. Geo/capacity
        # answers still differ between regions when several DCs exist, hence the flag.
        depends = svc.policy != "all" and not fail_open and len(names) > 1
        return Plan(all_vips, rotate=True, stay=None, depends_on_client=depends)
    ordered = _by_distance(config, names, region)
    if svc.policy == "geo":
        return Plan((vip[ordered[0]],), rotate=False, stay=None, depends_on_client=True)
    if svc.policy == "spare":
        bound = svc.max_distance_ms
        near = [n for n in ordered if bound is None or config.distance_ms[(region, n)] <= bound]
        scores = {n: spare_score(config, snapshot, n, svc, region) for n in near or ordered[:1]}
        top = max(scores.values())
        # the nearest of those within SPARE_TIE of the most room: a sliver more room (an
        # idle link against one carrying DNS and health checks) is no reason to go further
        best = next(n for n in scores if scores[n] >= top - SPARE_TIE)
        return Plan((vip[best],), rotate=False, stay=None, depends_on_client=True)
    if overloaded:
        if config.overload == "shed":
            return Plan((vip[ordered[0]],), rotate=False, stay=None, depends_on_client=True)
        least = min(ordered, key=lambda n: service_load(snapshot.get(n, DcState()), svc)
                    / service_capacity(config, n, svc))
        return Plan((vip[least],), rotate=False, stay=None, depends_on_client=True)
    stay = tuple(_admitted(config, snapshot, n, svc, admit) if admit is not None
                 else _stay_probability(config, snapshot, n, svc) for n in ordered)
    return Plan(tuple(vip[n] for n in ordered), rotate=False, stay=stay,
                depends_on_client=True)


def decide(config: GslbConfig, snapshot: Snapshot, location: ClientLocation, counter: int,
           rng: random.Random | None = None, service: ServiceInfo | None = None) -> Answer:
    """One query's answer: VIPs in order and the ECS scope they depended on."""
    p = plan(config, snapshot, location.region, service)
    return Answer(p.pick(counter, rng), location.scope if p.depends_on_client else 0)
