"""Network plan -> the authority's GslbConfig, and who resolves through which resolver.
Pure: no network, no root.

The authority's view of the world comes entirely from the network plan:
- one ``DcInfo`` per DC: its *service address* (what the A records name) and capacity_rps;
- one region per client region, located by its subnet;
- distances = the routed one-way delay region -> DC (``plan.one_way_ms``), so "nearest" is
  what a packet actually experiences, not the length of some direct link;
- the authority's own address = the ``lba-`` host (glue for ``ns1``); policy and TTL from
  the scenario's ``dns:`` section, with its further service names (``dns.services``), the
  capacity policy's overload behaviour and the hysteresis.

Service address: the scenario's ``dns.answers`` says ``vip`` (the DC's VIP, served by the VIP
balancer) or ``first_backend`` (the DC's first backend, for networks where nothing answers on
the VIP yet). Switching to VIPs is that one setting; every consumer (answers, health probes,
experiments) asks ``service_addresses``.
"""
from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from gslb.config import DcInfo, GslbConfig, RegionInfo, ServiceInfo
from topologies.plan import SERVICE_PORT, HostPlan, NetworkPlan
from topologies.scenario import DNS_ANSWERS


def service_addresses(plan: NetworkPlan, answers: str | None = None) -> dict[str, IPv4Address]:
    """DC name -> the address its A record names (VIP or first backend)."""
    answers = answers or plan.scenario.dns.answers
    if answers not in DNS_ANSWERS:
        raise ValueError(f"answers: {answers!r} is not one of {', '.join(DNS_ANSWERS)}")
    if answers == "vip":
        return {dc.name: dc.vip for dc in plan.scenario.dcs}
    return {dc.name: plan.hosts_in(dc.name, "backend")[0].ip for dc in plan.scenario.dcs}


def authority_host(plan: NetworkPlan) -> HostPlan:
    return plan.by_role("authority")[0]


def gslb_config(plan: NetworkPlan, *, answers: str | None = None, policy: str | None = None,
                ttl_s: int | None = None,
                capacity_rps: Mapping[str, float] | None = None) -> GslbConfig:
    """The authority's settings for this network; keyword arguments override the scenario."""
    scen = plan.scenario
    capacity = dict(capacity_rps or {})
    unknown = sorted(set(capacity) - {d.name for d in scen.dcs})
    if unknown:
        raise ValueError(f"capacity_rps: unknown DC {unknown[0]!r}")
    addresses = service_addresses(plan, answers)
    dcs = tuple(DcInfo(dc.name, addresses[dc.name], float(capacity.get(dc.name,
                                                                        dc.capacity_rps)))
                for dc in scen.dcs)
    # a region is located by its hosts' subnet and its population's user block (ECS carries
    # a user's /24; the region's resolvers have addresses in that block too)
    regions = tuple(RegionInfo(r.name, (r.subnet,) + ((r.population.user_prefix,)
                                                      if r.population else ()))
                    for r in scen.regions)
    distance = {(r.name, dc.name): float(plan.one_way_ms[(r.name, dc.name)])
                for r in scen.regions for dc in scen.dcs}
    return GslbConfig(dcs=dcs, regions=regions, distance_ms=distance,
                      ttl_s=scen.dns.ttl_s if ttl_s is None else ttl_s,
                      policy=policy or scen.dns.policy,
                      authority_address=authority_host(plan).ip,
                      overload=scen.dns.overload, hysteresis=scen.dns.hysteresis,
                      services=tuple(ServiceInfo(v.name, v.policy, v.ttl_s, v.capacity_share,
                                                 v.max_distance_ms)
                                     for v in scen.dns.services))


def probe_targets(config: GslbConfig, plan: NetworkPlan,
                  port: int = SERVICE_PORT) -> dict[str, tuple[str, int]]:
    """What the authority's prober connects to: each DC's answered address, as a client
    would. Exception: a VIP in the authority's own DC subnet is probed at that DC's first
    backend, because the NAT balancer does not hairpin (a host on the DC's LAN cannot reach
    its own DC's VIP: the reply comes back from the backend's address)."""
    own_site = authority_host(plan).site
    out = {}
    for dc in config.dcs:
        target = dc.vip
        if dc.name == own_site and target == plan.scenario.dc(dc.name).vip:
            target = plan.hosts_in(dc.name, "backend")[0].ip
        out[dc.name] = (str(target), port)
    return out


# ---------------------------------------------------------------------------------------
# resolvers: which client uses which one


def resolver_of(plan: NetworkPlan, client: str) -> HostPlan | None:
    """The resolver host a client uses: its region's, or the shared distant one when the
    scenario's ``dns.shared_resolver`` names this client (the last N of its region).
    None when the client's region has no resolver and it is not sent to a shared one."""
    host = plan.host(client)
    if host.role != "client":
        raise ValueError(f"{client} is not a client host")
    shared = plan.scenario.dns.shared_resolver
    if shared is not None and host.site in shared.clients_from:
        region = plan.scenario.region(host.site)
        if host.index > region.clients - shared.clients:
            return _resolver_in(plan, shared.site)
    return _resolver_in(plan, host.site)


def _resolver_in(plan: NetworkPlan, site: str) -> HostPlan | None:
    found = plan.hosts_in(site, "resolver")
    return found[0] if found else None


def resolver_clients(plan: NetworkPlan) -> dict[str, list[str]]:
    """Resolver host name -> the client hosts that use it (every resolver listed)."""
    out: dict[str, list[str]] = {h.name: [] for h in plan.by_role("resolver")}
    for client in plan.by_role("client"):
        res = resolver_of(plan, client.name)
        if res is not None:
            out[res.name].append(client.name)
    return out
