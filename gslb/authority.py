"""The authoritative GSLB server's zone logic: one query's bytes in, the reply's bytes out. Pure
(no sockets): unit-tested directly, and served by gslb/server.py.

Hot path: a query's bytes after the id are the key of a cache holding either the finished
reply (static names, errors the query alone decides) or the parsed query plus its ECS
location. The policy's per-query draw then picks the VIPs, and the rendered reply for
(query, VIPs, scope) is cached too; the id is patched in. Every cache is dropped when the
GlobalView's version moves, so health, load, policy and TTL changes apply to the next query.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rrset

from gslb import ecs as ecs_mod
from gslb import wire
from gslb.config import GslbConfig, ServiceInfo
from gslb.globalview import GlobalView
from gslb.policy import ClientLocation, Plan, RegionMap, plan, update_admit, update_full

STATIC_TTL_S = 3600  # SOA/NS/glue never change during a run
CACHE_LIMIT = 20000  # entries per cache; cleared when full (junk queries cannot grow memory)
IN, A, NS, SOA, ANY = (dns.rdataclass.IN, dns.rdatatype.A, dns.rdatatype.NS,
                       dns.rdatatype.SOA, dns.rdatatype.ANY)
AXFR, IXFR, CLASS_ANY = dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdataclass.ANY


@dataclass(slots=True)
class _Dynamic:
    """Cached parse of a query for a service name's A records."""

    query: wire.Query
    location: ClientLocation | None  # from ECS; None = locate by the source address
    limit: int
    service: int = 0                 # index into config.all_services()


class Authority:
    """Answers one query's bytes with reply bytes (or None to drop). Not thread-safe: one
    event loop calls it; other threads change its inputs only through the GlobalView."""

    def __init__(self, config: GslbConfig, view: GlobalView, seed: int | None = None) -> None:
        self.base_config = config
        self.view = view
        self.rng = random.Random(seed)
        self.regions = RegionMap(config)
        self._counter = 0
        self._version = -1
        view.track_full(lambda snapshot, before: update_full(config, snapshot, before))
        view.track_admit(lambda snapshot, before, dt: update_admit(config, snapshot, before,
                                                                   dt))
        self._reset()

    # -- state derived from config + view -------------------------------------------------
    def _reset(self) -> None:
        self._version = self.view.version
        self.config = self.base_config.replace(**self.view.overrides()) \
            if self.view.overrides() else self.base_config
        self.snapshot = self.view.snapshot()
        self.full = self.view.full()
        self.admit = self.view.admit()
        self._build_zone()
        self._plans: dict[tuple[int, str | None], Plan] = {}
        self._queries: tuple[dict[bytes, Any], dict[bytes, Any]] = ({}, {})  # udp, tcp
        self._replies: dict[tuple[Any, ...], bytes] = {}
        self._sources: dict[str, ClientLocation] = {}

    def _build_zone(self) -> None:
        cfg = self.config
        self.origin = cfg.zone_name
        self.service = cfg.service_name
        self.services: tuple[ServiceInfo, ...] = cfg.all_services()
        self.service_names = {cfg.service_dns_name(svc): i
                              for i, svc in enumerate(self.services)}
        self.ns_name = cfg.ns_name
        soa = dns.rdtypes.ANY.SOA.SOA(IN, SOA, self.ns_name,
                                      dns.name.from_text(cfg.soa.rname, origin=self.origin),
                                      cfg.soa.serial, cfg.soa.refresh_s, cfg.soa.retry_s,
                                      cfg.soa.expire_s, cfg.soa.minimum_s)
        self.soa = dns.rrset.from_rdata(self.origin, STATIC_TTL_S, soa)
        # RFC 2308: negative answers are cached for min(SOA TTL, SOA MINIMUM)
        self.neg_soa = dns.rrset.from_rdata(self.origin, min(STATIC_TTL_S, cfg.soa.minimum_s),
                                            soa)
        self.ns = dns.rrset.from_rdata(self.origin, STATIC_TTL_S,
                                       dns.rdtypes.ANY.NS.NS(IN, NS, self.ns_name))
        self.glue = None
        if self.ns_name.is_subdomain(self.origin):
            self.glue = dns.rrset.from_rdata(self.ns_name, STATIC_TTL_S, dns.rdtypes.IN.A.A(
                IN, A, str(cfg.authority_address)))
        owners = [self.origin, *self.service_names] + ([self.ns_name] if self.glue else [])
        # every owner and its ancestors inside the zone exist (empty non-terminals: NODATA)
        self.existing = set()
        for name in owners:
            while name.is_subdomain(self.origin):
                self.existing.add(name)
                if name == self.origin:
                    break
                name = name.parent()

    # -- the hot path -----------------------------------------------------------------------
    def handle(self, data: bytes, source: str, tcp: bool = False) -> bytes | None:
        """Reply bytes for one query from ``source`` (an IP string), or None to drop."""
        if self.view.version != self._version:
            self._reset()
        cache = self._queries[tcp]
        key = data[2:]
        entry = cache.get(key)
        if entry is None:
            entry, cacheable = self._classify(data, tcp)
            if entry is None or not cacheable:
                return entry
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[key] = entry
        if entry.__class__ is bytes:
            return data[:2] + entry
        location = entry.location or self._locate_source(source)
        pkey = (entry.service, location.region)
        p = self._plans.get(pkey)
        if p is None:
            p = self._plans[pkey] = plan(self.config, self.snapshot, location.region,
                                         self.services[entry.service], self.full,
                                         self.admit)
        self._counter += 1
        vips = p.pick(self._counter, self.rng)
        scope = location.scope if p.depends_on_client else 0
        rkey = (key, tcp, vips, scope)
        body = self._replies.get(rkey)
        if body is None:
            body = self._render_service(entry, vips, scope)[2:]
            if len(self._replies) >= CACHE_LIMIT:
                self._replies.clear()
            self._replies[rkey] = body
        return data[:2] + body

    def _locate_source(self, source: str) -> ClientLocation:
        loc = self._sources.get(source)
        if loc is None:
            if len(self._sources) >= CACHE_LIMIT:
                self._sources.clear()
            loc = self._sources[source] = self.regions.locate_address(source)
        return loc

    # -- the slow path: parse and decide once per distinct query ---------------------------
    def _classify(self, data: bytes, tcp: bool) -> tuple[Any, bool]:
        """-> (cached body without id | _Dynamic | full error reply | None, cacheable)."""
        try:
            q = wire.parse_query(data)
        except wire.Drop:
            return None, False
        except wire.QueryError as err:
            return wire.error_response(err), False
        limit = wire.TCP_MAX if tcp else q.udp_limit()
        if q.tsig is not None:
            # signed with a key this server does not have (it has none): NOTAUTH, BADKEY
            return wire.render_badkey(q), False
        # QCLASS ANY (RFC 1035 3.2.5) asks for any class: this zone's is IN
        if q.qclass not in (IN, CLASS_ANY) or not q.qname.is_subdomain(self.origin):
            # not ours: REFUSED, not an open resolver (RFC 8906 keeps OPT in the reply)
            return wire.render(q, dns.rcode.REFUSED, limit=limit, aa=False)[2:], True
        if q.qtype in (AXFR, IXFR):
            # no zone transfers: REFUSED over TCP; AXFR over UDP is NOTIMP (RFC 5936
            # section 4.2), as NSD answers
            rcode = dns.rcode.NOTIMP if q.qtype == AXFR and not tcp else dns.rcode.REFUSED
            return wire.render(q, rcode, limit=limit, aa=False)[2:], True
        service = self.service_names.get(q.qname)
        if service is not None and q.qtype in (A, ANY):
            loc = self.regions.locate_prefix(q.ecs.network) if q.ecs is not None else None
            return _Dynamic(q, loc, limit, service), True
        ecs_reply = ecs_mod.reply_option(q.ecs, 0)  # these answers never depend on the client
        if q.qname not in self.existing:
            return wire.render(q, dns.rcode.NXDOMAIN, authority=[self.neg_soa],
                               ecs_reply=ecs_reply, limit=limit)[2:], True
        answer, additional = self._static_rrsets(q.qname, q.qtype)
        authority = [] if answer else [self.neg_soa]
        return wire.render(q, dns.rcode.NOERROR, answer, authority, additional, ecs_reply,
                           limit)[2:], True

    def _static_rrsets(self, name: dns.name.Name, qtype: int
                       ) -> tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        answer: list[dns.rrset.RRset] = []
        additional: list[dns.rrset.RRset] = []
        if name == self.origin:
            if qtype in (SOA, ANY):
                answer.append(self.soa)
            if qtype in (NS, ANY):
                answer.append(self.ns)
                if self.glue is not None:
                    additional.append(self.glue)
        elif name == self.ns_name and self.glue is not None and qtype in (A, ANY):
            answer.append(self.glue)
        return answer, additional

    def _render_service(self, entry: _Dynamic, vips: Sequence[Any], scope: int) -> bytes:
        q = entry.query
        rdatas = [dns.rdtypes.IN.A.A(IN, A, str(v)) for v in vips]
        rrset = dns.rrset.from_rdata_list(q.qname, self.services[entry.service].ttl_s, rdatas)
        return wire.render(q, dns.rcode.NOERROR, [rrset],
                           ecs_reply=ecs_mod.reply_option(q.ecs, scope), limit=entry.limit)
