"""Scenario -> network plan: names, addresses, links and static routes. Pure data.

Model: every site (client region or DC) is one IP subnet behind one Linux router, with one
Open vSwitch edge switch joining the router and the site's hosts (the DC's switch is the one
that later serves the VIP). WAN links join routers point to point, each with its own /30
from the scenario's `wan_pool`; routes follow the lowest one-way delay, so the configured
RTT of any host pair is known before the network exists and can be checked against it.

Names carry lblab's prefix (`lb` + role letter + `-`) so `lblab clean` can tell lblab's
interfaces from everybody else's: router lbr-SITE, switch lbs-SITE, client lbc-SITEn,
backend lbb-SITEn, resolver lbd-SITE, DNS authority lba-SITE, LB speaker lbk-DC-k and LB
switch lbs-DC-k (a DC with `lbs: K > 1`, below), WAN relay lbw-N, GRE
tunnel port lbg-DC and decapsulator TUN device lbg-tun (topologies/gre.py), scratch namespaces
lbprobe-PID (lab/mechanisms.py).

The LB tier (`lbs: K > 1`): the DC switch lbs-DC is then the DC's plain L2 fabric (router
and backends), and each of the K LB instances is a one-armed LB as Maglev runs them: its
own OVS switch lbs-DC-k (own datapath, controller connection and connection table), port 1
to the fabric, port 2 to its speaker host lbk-DC-k (address .SPEAKER_HOST+k on the DC
subnet), which announces the DC's VIP to the router over BGP with itself as next hop. The
router's ECMP route sends VIP packets to a speaker's MAC, so they enter LB switch k, whose
VIP flows rewrite them to a backend (DSR) and send them back out of port 1 with the LB's
own MAC as source (lab/bgp.py brings the routing up).
"""
from __future__ import annotations

import heapq
import ipaddress
from dataclasses import dataclass

from topologies.scenario import Link, Scenario

NAME_PREFIXES = ("lbr-", "lbs-", "lbc-", "lbb-", "lbd-", "lba-", "lbk-", "lbw-", "lbg-")
ROUTER_HOST = 1        # .1 in every site subnet
ROUTER_PORT = 1        # the router is port 1 of its site switch (the LB's uplink)
FIRST_HOST = 11        # clients / backends from .11
RESOLVER_HOST = 53
AUTHORITY_HOST = 54
SPEAKER_HOST = 55      # LB k's speaker is .55+k (k = 1..4): inside a /26, above the others
LB_UPLINK_PORT = 1     # an LB switch's port to the DC fabric
LB_SPEAKER_PORT = 2    # ... and to its speaker
# The service's TCP port: every backend serves HTTP on it, every VIP forwards it, health
# checkers and the DNS authority's probes connect to it.
SERVICE_PORT = 80


def mac_for(ip: ipaddress.IPv4Address, kind: int = 0x1B) -> str:
    """A stable, locally administered MAC derived from an IPv4 address: the controller can
    be told every host's MAC before the network exists (0x1B hosts, 0x1C VIPs)."""
    return ":".join(f"{b:02x}" for b in (0x02, kind, *ip.packed))


@dataclass(frozen=True)
class HostPlan:
    name: str
    site: str
    role: str          # client | backend | resolver | authority
    ip: ipaddress.IPv4Address
    prefixlen: int
    gateway: ipaddress.IPv4Address
    index: int = 0
    switch_port: int = 0   # OpenFlow port on the site switch (fixed, so flows can name it)
    switch: str = ""       # the switch it hangs off when not its site's (an LB's speaker)

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"

    @property
    def mac(self) -> str:
        return mac_for(self.ip)


@dataclass(frozen=True)
class RouterPlan:
    name: str
    site: str
    lan_ip: ipaddress.IPv4Address
    prefixlen: int
    switch_port: int = ROUTER_PORT

    @property
    def lan_mac(self) -> str:
        return mac_for(self.lan_ip)


@dataclass(frozen=True)
class SwitchPlan:
    name: str
    site: str
    dpid: int
    role: str = "site"     # site (the site's LAN) | lb (one LB instance of a DC's tier)

    @property
    def dpid_hex(self) -> str:
        return f"{self.dpid:016x}"


@dataclass(frozen=True)
class LbPlan:
    """One LB instance of a DC with `lbs: K > 1` (see the module docstring)."""
    dc: str
    k: int                 # 1..K
    switch: SwitchPlan
    speaker: HostPlan
    fabric_port: int       # its uplink's port on the DC fabric

    @property
    def mac(self) -> str:
        """The LB's own MAC (its speaker's): the source of every packet it forwards."""
        return self.speaker.mac


@dataclass(frozen=True)
class WanPlan:
    index: int
    link: Link
    a_router: str
    b_router: str
    a_ip: ipaddress.IPv4Address
    b_ip: ipaddress.IPv4Address
    prefixlen: int

    @property
    def relay_name(self) -> str:
        return f"lbw-{self.index}"


@dataclass(frozen=True)
class Route:
    router: str
    dst: ipaddress.IPv4Network
    via: ipaddress.IPv4Address


@dataclass(frozen=True)
class NetworkPlan:
    scenario: Scenario
    routers: tuple[RouterPlan, ...]
    switches: tuple[SwitchPlan, ...]
    hosts: tuple[HostPlan, ...]
    wans: tuple[WanPlan, ...]
    routes: tuple[Route, ...]
    one_way_ms: dict  # (site, site) -> one-way delay of the routed path
    lbs: tuple[LbPlan, ...] = ()

    def lbs_of(self, dc: str) -> list[LbPlan]:
        """The LB instances of a DC's tier (empty: the DC switch is its one LB)."""
        return [lb for lb in self.lbs if lb.dc == dc]

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.name == name)

    def hosts_in(self, site: str, role: str | None = None) -> list[HostPlan]:
        return [h for h in self.hosts if h.site == site and (role is None or h.role == role)]

    def by_role(self, role: str) -> list[HostPlan]:
        return [h for h in self.hosts if h.role == role]

    def router(self, site: str) -> RouterPlan:
        return next(r for r in self.routers if r.site == site)

    def switch(self, site: str) -> SwitchPlan:
        """The site's own switch (its LAN; for a DC with an LB tier, the fabric)."""
        return next(s for s in self.switches if s.site == site and s.role == "site")

    def configured_rtt_ms(self, site_a: str, site_b: str) -> float:
        return 2 * self.one_way_ms[(site_a, site_b)]

    def path_wans(self, site_a: str, site_b: str) -> list[WanPlan]:
        """The WAN links a packet from site_a to site_b crosses, in order."""
        nxt = _shortest_paths(self.scenario)
        hops, here = [], site_a
        while here != site_b:
            step = nxt[(here, site_b)]
            hops.append(next(w for w in self.wans if {w.link.a, w.link.b} == {here, step}))
            here = step
        return hops


def population_host(region: str) -> str:
    """The client host that emulates a region's population (all its user addresses)."""
    return f"lbc-{region}1"


def site_subnets(scenario: Scenario) -> dict[str, ipaddress.IPv4Network]:
    return {**{r.name: r.subnet for r in scenario.regions},
            **{d.name: d.subnet for d in scenario.dcs}}


def _shortest_paths(scenario: Scenario) -> dict[tuple[str, str], str]:
    """(src, dst) -> next site on the lowest-delay path (ties broken by name, so stable)."""
    adjacency: dict[str, list[tuple[float, str]]] = {s: [] for s in scenario.sites}
    for link in scenario.links:
        adjacency[link.a].append((link.delay_ms, link.b))
        adjacency[link.b].append((link.delay_ms, link.a))
    nxt = {}
    for src in scenario.sites:
        best = {src: (0.0, src)}
        heap = [(0.0, src, src)]
        while heap:
            dist, site, first = heapq.heappop(heap)
            if best.get(site, (float("inf"), ""))[0] < dist:
                continue
            for delay, neighbour in sorted(adjacency[site]):
                hop = neighbour if site == src else first
                cand = (dist + delay, hop)
                if neighbour not in best or cand < best[neighbour]:
                    best[neighbour] = cand
                    heapq.heappush(heap, (cand[0], neighbour, hop))
        for dst, (_, hop) in best.items():
            if dst != src:
                nxt[(src, dst)] = hop
    return nxt


def _one_way(scenario: Scenario, nxt: dict) -> dict[tuple[str, str], float]:
    delay = {frozenset((l.a, l.b)): l.delay_ms for l in scenario.links}
    out = {}
    for src in scenario.sites:
        out[(src, src)] = 0.0
        for dst in scenario.sites:
            if dst == src:
                continue
            total, here = 0.0, src
            while here != dst:
                step = nxt[(here, dst)]
                total += delay[frozenset((here, step))]
                here = step
            out[(src, dst)] = total
    return out


def build_plan(scenario: Scenario) -> NetworkPlan:
    subnets = site_subnets(scenario)
    routers, switches, hosts = [], [], []
    for i, site in enumerate(scenario.sites):
        net = subnets[site]
        gw = net.network_address + ROUTER_HOST
        routers.append(RouterPlan(f"lbr-{site}", site, gw, net.prefixlen))
        switches.append(SwitchPlan(f"lbs-{site}", site, dpid=0x1B1A_0000 + i + 1))

    next_port = {site: ROUTER_PORT + 1 for site in scenario.sites}

    def add(name, site, role, host_no, index=0):
        net = subnets[site]
        hosts.append(HostPlan(name, site, role, net.network_address + host_no, net.prefixlen,
                              net.network_address + ROUTER_HOST, index, next_port[site]))
        next_port[site] += 1

    for region in scenario.regions:
        for n in range(1, region.clients + 1):
            add(f"lbc-{region.name}{n}", region.name, "client", FIRST_HOST + n - 1, n)
        if region.resolver:
            add(f"lbd-{region.name}", region.name, "resolver", RESOLVER_HOST)
    for dc in scenario.dcs:
        for n in range(1, dc.backends + 1):
            add(f"lbb-{dc.name}{n}", dc.name, "backend", FIRST_HOST + n - 1, n)
    add(f"lba-{scenario.dns.authority_site}", scenario.dns.authority_site, "authority",
        AUTHORITY_HOST)
    lbs = []
    for i, dc in enumerate(scenario.dcs):
        if dc.lbs <= 1:
            continue
        net = subnets[dc.name]
        for k in range(1, dc.lbs + 1):
            sw = SwitchPlan(f"lbs-{dc.name}-{k}", dc.name, 0x1B1A_1000 + (i + 1) * 16 + k,
                            role="lb")
            ip = net.network_address + SPEAKER_HOST + k
            if ip == dc.vip:
                raise ValueError(f"dcs.{dc.name}.vip {dc.vip} is LB {k}'s speaker address: "
                                 f"with lbs > 1, .{SPEAKER_HOST + 1}-.{SPEAKER_HOST + dc.lbs}"
                                 " of the DC subnet are taken")
            speaker = HostPlan(f"lbk-{dc.name}-{k}", dc.name, "speaker", ip, net.prefixlen,
                               net.network_address + ROUTER_HOST, k, LB_SPEAKER_PORT,
                               switch=sw.name)
            switches.append(sw)
            hosts.append(speaker)
            lbs.append(LbPlan(dc.name, k, sw, speaker, next_port[dc.name]))
            next_port[dc.name] += 1

    wan_nets = scenario.wan_pool.subnets(new_prefix=30)
    wans = []
    for i, link in enumerate(scenario.links):
        try:
            net = next(wan_nets)
        except StopIteration:
            raise ValueError(f"wan_pool {scenario.wan_pool} is too small for "
                             f"{len(scenario.links)} links") from None
        wans.append(WanPlan(i, link, f"lbr-{link.a}", f"lbr-{link.b}",
                            net.network_address + 1, net.network_address + 2, 30))

    nxt = _shortest_paths(scenario)
    routes = []
    populated = {r.name: r.population for r in scenario.populations}
    for src in scenario.sites:
        for dst in scenario.sites:
            if dst == src:
                continue
            step = nxt[(src, dst)]
            wan = next(w for w in wans if {w.link.a, w.link.b} == {src, step})
            via = wan.b_ip if wan.link.a == src else wan.a_ip
            routes.append(Route(f"lbr-{src}", subnets[dst], via))
            if dst in populated:   # a population's user block goes where its region is
                routes.append(Route(f"lbr-{src}", populated[dst].user_prefix, via))
    for region in scenario.populations:
        # in the region: the users' block to the host that emulates them, its first /24 (the
        # resolvers') to the resolver host (a longer prefix: it wins)
        pop = region.population
        routes.append(Route(f"lbr-{region.name}", pop.user_prefix,
                            next(h.ip for h in hosts if h.name == population_host(region.name))))
        routes.append(Route(f"lbr-{region.name}", pop.resolver_subnet,
                            next(h.ip for h in hosts if h.name == f"lbd-{region.name}")))
    return NetworkPlan(scenario, tuple(routers), tuple(switches), tuple(hosts), tuple(wans),
                       tuple(routes), _one_way(scenario, nxt), tuple(lbs))


# What carries a client region's LAN: a Linux bridge (no OpenFlow needed there: nothing but
# MAC learning; 0.08 ms round trip against 0.44 ms through OVS userspace) or OVS like a DC's.
REGION_LANS = ("bridge", "ovs")


def lan_carriers(plan: NetworkPlan, region_lan: str) -> dict[str, str]:
    """Site -> what carries its LAN: "ovs" (every DC: the LB is OpenFlow) or "linux-bridge"."""
    if region_lan not in REGION_LANS:
        raise ValueError(f"region_lan must be one of {REGION_LANS}")
    dcs = {d.name for d in plan.scenario.dcs}
    return {sw.site: "ovs" if sw.site in dcs or region_lan == "ovs" else "linux-bridge"
            for sw in plan.switches}
