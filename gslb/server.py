"""The authoritative GSLB server: zone logic (``Authority``) and asyncio transports.

Hot path: a query's bytes after the id are the key of a cache holding either the finished
reply (static names, errors the query alone decides) or the parsed query plus its ECS
location. The policy's per-query draw then picks the VIPs, and the rendered reply for
(query, VIPs, scope) is cached too; the id is patched in. Every cache is dropped when the
GlobalView's version moves, so health, load, policy and TTL changes apply to the next query.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import signal
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
from gslb.config import GslbConfig
from gslb.globalview import GlobalView, Prober
from gslb.policy import ClientLocation, Plan, RegionMap, plan

log = logging.getLogger("lblab.gslb")

STATIC_TTL_S = 3600  # SOA/NS/glue never change during a run
CACHE_LIMIT = 20000  # entries per cache; cleared when full (junk queries cannot grow memory)
TCP_IDLE_S = 10.0  # RFC 7766 suggests seconds, not minutes
TCP_IO_S = 5.0
TCP_MAX_CONNS = 512
UDP_BATCH = 256  # datagrams per wake-up before yielding to TCP/control
IN, A, NS, SOA, ANY = (dns.rdataclass.IN, dns.rdatatype.A, dns.rdatatype.NS,
                       dns.rdatatype.SOA, dns.rdatatype.ANY)


@dataclass(slots=True)
class _Dynamic:
    """Cached parse of a query for the service name's A records."""

    query: wire.Query
    location: ClientLocation | None  # from ECS; None = locate by the source address
    limit: int


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
        self._reset()

    # -- state derived from config + view -------------------------------------------------
    def _reset(self) -> None:
        self._version = self.view.version
        self.config = self.base_config.replace(**self.view.overrides()) \
            if self.view.overrides() else self.base_config
        self.snapshot = self.view.snapshot()
        self._build_zone()
        self._plans: dict[str | None, Plan] = {}
        self._queries: tuple[dict[bytes, Any], dict[bytes, Any]] = ({}, {})  # udp, tcp
        self._replies: dict[tuple[Any, ...], bytes] = {}
        self._sources: dict[str, ClientLocation] = {}

    def _build_zone(self) -> None:
        cfg = self.config
        self.origin = cfg.zone_name
        self.service = cfg.service_name
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
        owners = [self.origin, self.service] + ([self.ns_name] if self.glue else [])
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
        p = self._plans.get(location.region)
        if p is None:
            p = self._plans[location.region] = plan(self.config, self.snapshot, location.region)
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
        if q.qclass != IN or not q.qname.is_subdomain(self.origin):
            # not ours: REFUSED, not an open resolver (RFC 8906 keeps OPT in the reply)
            return wire.render(q, dns.rcode.REFUSED, limit=limit, aa=False)[2:], True
        if q.qname == self.service and q.qtype in (A, ANY):
            loc = self.regions.locate_prefix(q.ecs.network) if q.ecs is not None else None
            return _Dynamic(q, loc, limit), True
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
        rrset = dns.rrset.from_rdata_list(q.qname, self.config.ttl_s, rdatas)
        return wire.render(q, dns.rcode.NOERROR, [rrset],
                           ecs_reply=ecs_mod.reply_option(q.ecs, scope), limit=entry.limit)


# ---------------------------------------------------------------------------------------
# transports


class _UdpEndpoint:
    """A non-blocking UDP socket drained in batches from the loop's reader callback.

    Cheaper than asyncio's DatagramProtocol, which returns to the selector after every
    datagram; here one wake-up serves up to UDP_BATCH queries.
    """

    def __init__(self, sock: socket.socket, authority: Authority) -> None:
        self.sock, self.authority = sock, authority
        self._errors = 0

    def on_readable(self) -> None:
        recvfrom, sendto, handle = self.sock.recvfrom, self.sock.sendto, self.authority.handle
        for _ in range(UDP_BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. a queued ICMP error; keep serving
            try:
                reply = handle(data, addr[0], False)
            except Exception:  # one bad packet must never stop the server
                self._errors += 1
                if self._errors <= 10:
                    log.exception("gslb: internal error on a UDP query (dropped)")
                continue
            if reply is not None:
                try:
                    sendto(reply, addr)
                except OSError:
                    pass  # full send buffer or unreachable peer: drop, as the network would


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on the same port (port 0: the kernel picks one free for both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
        except OSError as exc:
            udp.close()
            tcp.close()
            if port == 0 and exc.errno == errno.EADDRINUSE:
                continue
            raise
        udp.setblocking(False)
        tcp.setblocking(False)
        tcp.listen(128)
        return udp, tcp
    raise OSError(errno.EADDRINUSE, f"no free port pair on {host}")


@dataclass
class GslbServer:
    """A running server inside an event loop: its bound addresses and its inputs."""

    config: GslbConfig
    view: GlobalView
    authority: Authority
    udp: list[tuple[str, int]] = field(default_factory=list)
    tcp: list[tuple[str, int]] = field(default_factory=list)
    control: tuple[str, int] | None = None
    _closers: list[Any] = field(default_factory=list)
    _tcp_conns: int = 0

    @property
    def port(self) -> int:
        return self.udp[0][1]

    async def close(self) -> None:
        for closer in reversed(self._closers):
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        self._closers.clear()

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """RFC 7766 framing: 2-byte length, then the message; several per connection."""
        if self._tcp_conns >= TCP_MAX_CONNS:
            writer.close()
            return
        self._tcp_conns += 1
        peer = (writer.get_extra_info("peername") or ("", 0))[0]
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S),
                                      "big")
                if size == 0:
                    break  # a zero-length message has nothing to answer: hang up
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IO_S)
                try:
                    reply = self.authority.handle(data, peer, True)
                except Exception:
                    log.exception("gslb: internal error on a TCP query")
                    break
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await asyncio.wait_for(writer.drain(), TCP_IO_S)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._tcp_conns -= 1
            writer.close()


async def start_server(config: GslbConfig,
                       listen: Sequence[tuple[str, int]] = (("127.0.0.1", 5353),),
                       control: tuple[str, int] | None = None,
                       view: GlobalView | None = None,
                       probe_targets: Mapping[str, tuple[str, int]] | None = None,
                       seed: int | None = None, **probe_options: Any) -> GslbServer:
    """Bind and start serving in the running loop; returns once every socket is bound."""
    from gslb.control import start_control  # late import: control depends on this module

    view = view or GlobalView(d.name for d in config.dcs)
    server = GslbServer(config, view, Authority(config, view, seed))
    loop = asyncio.get_running_loop()
    try:
        for host, port in listen:
            udp_sock, tcp_sock = _bind_pair(host, port)
            endpoint = _UdpEndpoint(udp_sock, server.authority)
            loop.add_reader(udp_sock.fileno(), endpoint.on_readable)
            server._closers.append(udp_sock.close)
            server._closers.append(lambda fd=udp_sock.fileno(): loop.remove_reader(fd))
            tcp_server = await asyncio.start_server(server._tcp_client, sock=tcp_sock)
            server._closers.append(tcp_server.close)
            server.udp.append(udp_sock.getsockname()[:2])
            server.tcp.append(tcp_sock.getsockname()[:2])
        if control is not None:
            server.control, close_control = await start_control(server, *control)
            server._closers.append(close_control)
        if probe_targets:
            task = loop.create_task(Prober(view, probe_targets, **probe_options).run())
            server._closers.append(task.cancel)
    except BaseException:
        await server.close()
        raise
    log.info("gslb: serving %s policy=%s ttl=%ss on udp %s tcp %s control %s", config.zone,
             config.policy, config.ttl_s, _fmt(server.udp), _fmt(server.tcp),
             _fmt([server.control]) if server.control else "off")
    return server


def _fmt(addrs: Sequence[tuple[str, int] | None]) -> str:
    return ",".join(f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"
                    for a in addrs if a)


def serve(config: GslbConfig, listen: Sequence[tuple[str, int]] = (("127.0.0.1", 5353),),
          control: tuple[str, int] | None = ("127.0.0.1", 8053), **options: Any) -> None:
    """Blocking entry point for ``lblab dns serve``: runs until SIGINT/SIGTERM."""
    async def main() -> None:
        await run_until_signal(await start_server(config, listen, control, **options))

    asyncio.run(main())


async def run_until_signal(server: "GslbServer", background: Sequence[Any] = ()) -> None:
    """Serve until SIGINT/SIGTERM, with optional background coroutines (cancelled at the
    end), then close the server."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(coro) for coro in background]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await server.close()


@dataclass
class ServerThread:
    """A server running in its own thread and loop (tests, bench, experiments' helpers)."""

    server: GslbServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def control(self) -> tuple[str, int] | None:
        return self.server.control

    @property
    def view(self) -> GlobalView:
        return self.server.view

    def stop(self, timeout_s: float = 5.0) -> None:
        if not self.thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self.server.close(), self.loop)
        with contextlib.suppress(Exception):
            fut.result(timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout_s)


def run_server_in_thread(config: GslbConfig, listen: Sequence[tuple[str, int]] = (
                         ("127.0.0.1", 0),), control: tuple[str, int] | None = ("127.0.0.1", 0),
                         ready_timeout_s: float = 10.0, **options: Any) -> ServerThread:
    """Start a server in a daemon thread; returns once bound (raises what binding raised)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["server"] = loop.run_until_complete(
                start_server(config, listen, control, **options))
        except BaseException as exc:  # hand the failure to the caller
            box["error"] = exc
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="gslb-server", daemon=True)
    thread.start()
    if not started.wait(ready_timeout_s):
        raise TimeoutError("gslb server did not bind in time")
    if "error" in box:
        thread.join(ready_timeout_s)
        raise box["error"]
    return ServerThread(box["server"], loop, thread)


@contextlib.contextmanager
def running_server(config: GslbConfig, port: int = 0, host: str = "127.0.0.1",
                   control_port: int | None = 0, **options: Any) -> Iterator[ServerThread]:
    """``with running_server(cfg) as s: ... s.port, s.control`` - stopped on exit."""
    control = (host, control_port) if control_port is not None else None
    st = run_server_in_thread(config, [(host, port)], control, **options)
    try:
        yield st
    finally:
        st.stop()
