"""Typed, validated settings of the GSLB authority.

The lead fills these from the scenario YAML (``GslbConfig.from_dict``); everything downstream
(policy, server) trusts them, so every check lives here and fails with one line naming the field.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any

import dns.name

POLICIES = ("all", "geo", "capacity", "spare")
# what the capacity policy does when every DC is full (gslb/policy.py)
OVERLOADS = ("spill", "shed")
# a service's load_key for "judge by the DC's whole load, whatever the class" (one policy
# for every name, as a single service name would be)
WHOLE_DC = "*"
MAX_TTL_S = 86400  # a day: longer makes run-time policy changes meaningless


class GslbConfigError(ValueError):
    """A bad DNS setting in the scenario; the message is one line naming the field."""


IpNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True)
class DcInfo:
    """One data centre: the VIP the authority hands out and what it can serve."""

    name: str
    vip: IPv4Address
    capacity_rps: float


@dataclass(frozen=True)
class RegionInfo:
    """A client region: the subnets (clients or resolvers) that are located there."""

    name: str
    subnets: tuple[IpNetwork, ...]


@dataclass(frozen=True)
class ServiceInfo:
    """A service name of the zone with its own answer policy and TTL (a traffic class:
    search.lblab.test for latency, upload.lblab.test for success). `capacity_share`: the
    share of each DC's capacity the class may fill, against the class's own load (the
    backends count requests per path; `load_key` names the path, default the name's first
    label; WHOLE_DC: the DC's whole load); `max_distance_ms`: the spare policy's latency
    bound (one-way, region -> DC)."""

    name: str                        # relative to the zone (search), or absolute with '.'
    policy: str = "geo"
    ttl_s: int = 30
    capacity_share: float = 1.0
    max_distance_ms: float | None = None
    load_key: str | None = None

    @property
    def key(self) -> str:
        return self.load_key or self.name.split(".")[0]


@dataclass(frozen=True)
class SoaParams:
    """SOA timers; ``minimum_s`` is the negative-caching TTL (RFC 2308)."""

    rname: str = "hostmaster"
    serial: int = 1
    refresh_s: int = 3600
    retry_s: int = 600
    expire_s: int = 86400
    minimum_s: int = 5


@dataclass(frozen=True)
class GslbConfig:
    """Everything the authority needs; frozen so a run-time change is a whole new object."""

    dcs: tuple[DcInfo, ...]
    regions: tuple[RegionInfo, ...]
    # (region name, dc name) -> one-way distance in ms; every pair must be present.
    distance_ms: Mapping[tuple[str, str], float]
    zone: str = "lblab.test"
    service: str = "www"
    ttl_s: int = 30
    policy: str = "geo"
    authority_ns_name: str = "ns1"  # relative to the zone unless it ends with '.'
    authority_address: IPv4Address = IPv4Address("127.0.0.1")
    soa: SoaParams = field(default_factory=SoaParams)
    # capacity policy: a DC starts shedding new answers when less than this fraction of its
    # capacity is spare, and sheds all of them when full.
    spill_headroom: float = 0.2
    # capacity policy with every DC full: spill (the least loaded DC, relative to its
    # capacity) or shed (each client's nearest: its backends refuse the excess fast)
    overload: str = "spill"
    # a DC that filled up counts as full until its load falls below (1 - hysteresis) of
    # its capacity, so answers do not flap at the threshold
    hysteresis: float = 0.1
    # further service names, each with its own policy and TTL (the `service` name above
    # keeps `policy` and `ttl_s`, and the run-time overrides)
    services: tuple[ServiceInfo, ...] = ()

    def __post_init__(self) -> None:
        _validate(self)

    # -- derived names (dnspython objects, absolute) --------------------------------------
    @property
    def zone_name(self) -> dns.name.Name:
        return dns.name.from_text(self.zone)

    @property
    def service_name(self) -> dns.name.Name:
        return dns.name.from_text(self.service, origin=self.zone_name)

    @property
    def ns_name(self) -> dns.name.Name:
        return dns.name.from_text(self.authority_ns_name, origin=self.zone_name)

    @property
    def service_fqdn(self) -> str:
        """The service name as text, without the final dot (www.lblab.test)."""
        return self.service_name.to_text(omit_final_dot=True)

    @property
    def primary(self) -> ServiceInfo:
        """The `service` name as a ServiceInfo (its policy and TTL are the config's own)."""
        return ServiceInfo(self.service, self.policy, self.ttl_s)

    def all_services(self) -> tuple[ServiceInfo, ...]:
        return (self.primary, *self.services)

    def service_dns_name(self, service: ServiceInfo) -> dns.name.Name:
        return dns.name.from_text(service.name, origin=self.zone_name)

    def dc(self, name: str) -> DcInfo:
        for dc in self.dcs:
            if dc.name == name:
                return dc
        raise KeyError(name)

    def nearest_dc(self, region: str) -> str:
        """The DC at the smallest distance from a region (ties: the first listed)."""
        return min(self.dcs, key=lambda d: self.distance_ms[(region, d.name)]).name

    def replace(self, **changes: Any) -> GslbConfig:
        """A validated copy with ``changes`` (used for run-time policy/TTL changes)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "dns") -> GslbConfig:
        """Build from the scenario's ``dns:`` mapping; unknown keys are errors (typos)."""
        return _from_dict(data, where)

    def to_dict(self) -> dict[str, Any]:
        """The ``from_dict`` shape (JSON-safe): how a config reaches another process."""
        distance: dict[str, dict[str, float]] = {}
        for (region, dc), ms in self.distance_ms.items():
            distance.setdefault(region, {})[dc] = ms
        return {
            "zone": self.zone, "service": self.service, "ttl_s": self.ttl_s,
            "policy": self.policy, "spill_headroom": self.spill_headroom,
            "overload": self.overload, "hysteresis": self.hysteresis,
            "services": [{"name": v.name, "policy": v.policy, "ttl_s": v.ttl_s,
                          "capacity_share": v.capacity_share,
                          "max_distance_ms": v.max_distance_ms, "load_key": v.load_key}
                         for v in self.services],
            "dcs": [{"name": d.name, "vip": str(d.vip), "capacity_rps": d.capacity_rps}
                    for d in self.dcs],
            "regions": [{"name": r.name, "subnets": [str(n) for n in r.subnets]}
                        for r in self.regions],
            "distance_ms": distance,
            "authority": {"ns_name": self.authority_ns_name,
                          "address": str(self.authority_address)},
        }


# ---------------------------------------------------------------------------------------
# validation


def _validate(cfg: GslbConfig) -> None:
    _check_name(cfg.zone, "zone")
    _check_name(cfg.service, "service")
    _check_name(cfg.authority_ns_name, "authority_ns_name")
    if cfg.policy not in POLICIES:
        raise GslbConfigError(f"policy: {cfg.policy!r} is not one of {', '.join(POLICIES)}")
    _check_int(cfg.ttl_s, "ttl_s", 0, MAX_TTL_S)
    if not isinstance(cfg.authority_address, IPv4Address):
        raise GslbConfigError("authority_address: must be an IPv4Address")
    if not (isinstance(cfg.spill_headroom, (int, float)) and 0 < cfg.spill_headroom <= 1):
        raise GslbConfigError("spill_headroom: must be a number in (0, 1]")
    if cfg.overload not in OVERLOADS:
        raise GslbConfigError(f"overload: {cfg.overload!r} is not one of "
                              f"{', '.join(OVERLOADS)}")
    if not (_finite_nonneg(cfg.hysteresis) and cfg.hysteresis < 1):
        raise GslbConfigError("hysteresis: must be a number in [0, 1)")
    names = []
    for i, svc in enumerate(cfg.services):
        where = f"services[{i}]"
        if not isinstance(svc, ServiceInfo):
            raise GslbConfigError(f"{where}: must be a ServiceInfo")
        _check_name(svc.name, f"{where}.name")
        if svc.policy not in POLICIES:
            raise GslbConfigError(f"{where}.policy: {svc.policy!r} is not one of "
                                  f"{', '.join(POLICIES)}")
        _check_int(svc.ttl_s, f"{where}.ttl_s", 0, MAX_TTL_S)
        if not (_finite_nonneg(svc.capacity_share) and 0 < svc.capacity_share <= 1):
            raise GslbConfigError(f"{where}.capacity_share: must be a number in (0, 1]")
        if svc.max_distance_ms is not None and not _finite_nonneg(svc.max_distance_ms):
            raise GslbConfigError(f"{where}.max_distance_ms: must be a number >= 0")
        names.append(cfg.service_dns_name(svc))
    primary = dns.name.from_text(cfg.service, origin=dns.name.from_text(cfg.zone))
    for i, name in enumerate(names):
        if name == primary or name in names[:i]:
            raise GslbConfigError(f"services[{i}].name: {name} is already a service name")
        if not name.is_subdomain(dns.name.from_text(cfg.zone)):
            raise GslbConfigError(f"services[{i}].name: {name} is not in zone {cfg.zone}")
    if not cfg.dcs:
        raise GslbConfigError("dcs: at least one data centre is needed")
    _check_unique([d.name for d in cfg.dcs], "dcs[].name")
    _check_unique([str(d.vip) for d in cfg.dcs], "dcs[].vip")
    for i, dc in enumerate(cfg.dcs):
        _check_dc(dc, f"dcs[{i}]")
    _check_unique([r.name for r in cfg.regions], "regions[].name")
    seen: dict[IpNetwork, str] = {}
    for i, region in enumerate(cfg.regions):
        _check_label(region.name, f"regions[{i}].name")
        for net in region.subnets:
            if not isinstance(net, (IPv4Network, IPv6Network)):
                raise GslbConfigError(f"regions[{i}].subnets: {net!r} is not a network")
            if net in seen:
                raise GslbConfigError(
                    f"regions[{i}].subnets: {net} is already in region {seen[net]!r}")
            seen[net] = region.name
    for region in cfg.regions:
        for dc in cfg.dcs:
            d = cfg.distance_ms.get((region.name, dc.name))
            if d is None:
                raise GslbConfigError(f"distance_ms: missing {region.name} -> {dc.name}")
            if not _finite_nonneg(d):
                raise GslbConfigError(f"distance_ms[{region.name}][{dc.name}]: must be >= 0")
    known = {(r.name, d.name) for r in cfg.regions for d in cfg.dcs}
    for key in cfg.distance_ms:
        if key not in known:
            raise GslbConfigError(f"distance_ms: unknown pair {key[0]} -> {key[1]}")
    for name in ("serial", "refresh_s", "retry_s", "expire_s", "minimum_s"):
        _check_int(getattr(cfg.soa, name), f"soa.{name}", 0, 2**32 - 1)
    _check_name(cfg.soa.rname, "soa.rname")


def _check_dc(dc: DcInfo, where: str) -> None:
    _check_label(dc.name, f"{where}.name")
    if not isinstance(dc.vip, IPv4Address):
        raise GslbConfigError(f"{where}.vip: must be an IPv4 address")
    if not (_finite_nonneg(dc.capacity_rps) and dc.capacity_rps > 0):
        raise GslbConfigError(f"{where}.capacity_rps: must be a number > 0")


def _finite_nonneg(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def _check_int(x: object, where: str, lo: int, hi: int) -> None:
    if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
        raise GslbConfigError(f"{where}: must be an integer in [{lo}, {hi}], got {x!r}")


def _check_unique(names: Sequence[str], where: str) -> None:
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise GslbConfigError(f"{where}: duplicate {sorted(dup)[0]!r}")


def _check_label(name: object, where: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 63:
        raise GslbConfigError(f"{where}: must be a non-empty string of at most 63 characters")


def _check_name(name: object, where: str) -> None:
    if not isinstance(name, str) or not name:
        raise GslbConfigError(f"{where}: must be a non-empty domain name")
    try:
        dns.name.from_text(name)
    except Exception as exc:  # dnspython raises several types for bad names
        raise GslbConfigError(f"{where}: {name!r} is not a domain name ({exc})") from None


# ---------------------------------------------------------------------------------------
# from_dict: scenario mapping -> dataclasses, with the path of the offending field

_TOP_KEYS = {"zone", "service", "ttl_s", "policy", "dcs", "regions", "distance_ms",
             "authority", "soa", "spill_headroom", "overload", "hysteresis", "services"}
_SERVICE_KEYS = {"name", "policy", "ttl_s", "capacity_share", "max_distance_ms", "load_key"}


def _from_dict(data: Mapping[str, Any], where: str) -> GslbConfig:
    _expect_mapping(data, where)
    _no_unknown(data, _TOP_KEYS, where)
    dcs = tuple(_dc_from(item, f"{where}.dcs[{i}]")
                for i, item in enumerate(_expect_list(data.get("dcs"), f"{where}.dcs")))
    regions = tuple(_region_from(item, f"{where}.regions[{i}]") for i, item in
                    enumerate(_expect_list(data.get("regions", []), f"{where}.regions")))
    kwargs: dict[str, Any] = {"dcs": dcs, "regions": regions,
                              "distance_ms": _distances_from(data.get("distance_ms", {}),
                                                             f"{where}.distance_ms")}
    for key in ("zone", "service", "ttl_s", "policy", "spill_headroom", "overload",
                "hysteresis"):
        if key in data:
            kwargs[key] = data[key]
    if "services" in data:
        services = []
        for i, item in enumerate(_expect_list(data["services"], f"{where}.services")):
            _expect_mapping(item, f"{where}.services[{i}]")
            _no_unknown(item, _SERVICE_KEYS, f"{where}.services[{i}]")
            if "name" not in item:
                raise GslbConfigError(f"{where}.services[{i}].name: missing")
            services.append(ServiceInfo(**item))
        kwargs["services"] = tuple(services)
    if "authority" in data:
        auth = data["authority"]
        _expect_mapping(auth, f"{where}.authority")
        _no_unknown(auth, {"ns_name", "address"}, f"{where}.authority")
        if "ns_name" in auth:
            kwargs["authority_ns_name"] = auth["ns_name"]
        if "address" in auth:
            kwargs["authority_address"] = _ipv4(auth["address"], f"{where}.authority.address")
    if "soa" in data:
        soa = data["soa"]
        _expect_mapping(soa, f"{where}.soa")
        names = {f.name for f in dataclasses.fields(SoaParams)}
        _no_unknown(soa, names, f"{where}.soa")
        kwargs["soa"] = SoaParams(**soa)
    try:
        return GslbConfig(**kwargs)
    except GslbConfigError as exc:
        raise GslbConfigError(f"{where}.{exc}") from None


def _dc_from(item: Any, where: str) -> DcInfo:
    _expect_mapping(item, where)
    _no_unknown(item, {"name", "vip", "capacity_rps"}, where)
    for key in ("name", "vip", "capacity_rps"):
        if key not in item:
            raise GslbConfigError(f"{where}.{key}: missing")
    return DcInfo(name=item["name"], vip=_ipv4(item["vip"], f"{where}.vip"),
                  capacity_rps=item["capacity_rps"])


def _region_from(item: Any, where: str) -> RegionInfo:
    _expect_mapping(item, where)
    _no_unknown(item, {"name", "subnets"}, where)
    if "name" not in item:
        raise GslbConfigError(f"{where}.name: missing")
    subnets = []
    for i, text in enumerate(_expect_list(item.get("subnets"), f"{where}.subnets")):
        try:
            subnets.append(ipaddress.ip_network(str(text), strict=True))
        except ValueError as exc:
            raise GslbConfigError(f"{where}.subnets[{i}]: {exc}") from None
    return RegionInfo(name=item["name"], subnets=tuple(subnets))


def _distances_from(data: Any, where: str) -> dict[tuple[str, str], float]:
    """``{region: {dc: ms}}`` (the natural YAML shape) -> ``{(region, dc): ms}``."""
    _expect_mapping(data, where)
    out: dict[tuple[str, str], float] = {}
    for region, row in data.items():
        _expect_mapping(row, f"{where}.{region}")
        for dc, ms in row.items():
            if not _finite_nonneg(ms):
                raise GslbConfigError(f"{where}.{region}.{dc}: must be a number >= 0")
            out[(str(region), str(dc))] = float(ms)
    return out


def _ipv4(text: Any, where: str) -> IPv4Address:
    try:
        return IPv4Address(str(text))
    except ValueError:
        raise GslbConfigError(f"{where}: {text!r} is not an IPv4 address") from None


def _expect_mapping(x: Any, where: str) -> None:
    if not isinstance(x, Mapping):
        raise GslbConfigError(f"{where}: must be a mapping")


def _expect_list(x: Any, where: str) -> list[Any]:
    if not isinstance(x, list):
        raise GslbConfigError(f"{where}: must be a list")
    return x


def _no_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(map(str, data)) - known)
    if extra:
        raise GslbConfigError(f"{where}: unknown key {extra[0]!r}")


def example_config(**changes: Any) -> GslbConfig:
    """Three DCs, three regions, each nearest to one DC; for tests, the bench and demos."""
    names = ("east", "central", "west")
    dcs = tuple(DcInfo(f"dc-{n}", IPv4Address(f"10.100.{i + 1}.1"), 1000.0)
                for i, n in enumerate(names))
    regions = tuple(RegionInfo(n, (IPv4Network(f"10.{i + 1}.0.0/16"),
                                   IPv6Network(f"fd00:{i + 1}::/48")))
                    for i, n in enumerate(names))
    dist = {(r, f"dc-{d}"): float(10 + 40 * abs(i - j))
            for i, r in enumerate(names) for j, d in enumerate(names)}
    cfg = GslbConfig(dcs=dcs, regions=regions, distance_ms=dist)
    return cfg.replace(**changes) if changes else cfg
