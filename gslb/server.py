"""The authoritative GSLB server's transports: UDP (drained in batches) and TCP (RFC 7766
framing) on each listen address, the control channel, the health prober, in one asyncio
loop. The zone logic is gslb/authority.py; ways to run a server are gslb/lifecycle.py.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gslb.authority import Authority
from gslb.config import GslbConfig
from gslb.globalview import GlobalView, Prober

log = logging.getLogger("lblab.gslb")

TCP_IDLE_S = 10.0  # RFC 7766 suggests seconds, not minutes
TCP_IO_S = 5.0
TCP_MAX_CONNS = 512
TCP_PER_SOURCE = 64   # connections one address may hold (its oldest idle one gives way)
UDP_BATCH = 256  # datagrams per wake-up before yielding to TCP/control


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
    # open TCP connections: writer -> [peer, idle since (loop time) or None while a query
    # is in hand, the connection's task]
    _tcp: dict[Any, list[Any]] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.udp[0][1]

    async def close(self) -> None:
        for closer in reversed(self._closers):
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        self._closers.clear()
        tasks = [conn[2] for conn in self._tcp.values()]
        for writer in list(self._tcp):     # open connections end with the server
            writer.transport.abort()
        if tasks:                          # and their tasks finish before the loop does
            await asyncio.wait(tasks, timeout=2.0)

    def _tcp_admit(self, peer: str) -> bool:
        """Room for a new connection from `peer`: beyond TCP_PER_SOURCE of its own, or
        with the table full, the oldest idle connection (of that peer, or of anyone) is
        closed to make room, as mature servers do (RFC 7766 section 6.2.3: a client
        holding many idle connections must not lock the others out); False when every
        connection that would have to give way is busy with a query."""
        mine = [w for w, conn in self._tcp.items() if conn[0] == peer]
        if len(mine) >= TCP_PER_SOURCE:
            pool = mine
        elif len(self._tcp) >= TCP_MAX_CONNS:
            pool = list(self._tcp)
        else:
            return True
        idle = [w for w in pool if self._tcp[w][1] is not None]
        if not idle:
            return False
        oldest = min(idle, key=lambda w: self._tcp[w][1])
        del self._tcp[oldest]
        oldest.transport.abort()   # at once: a close would wait for unsent data to drain
        return True

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """RFC 7766 framing: 2-byte length, then the message; several per connection."""
        peer = (writer.get_extra_info("peername") or ("", 0))[0]
        if not self._tcp_admit(peer):
            writer.close()
            return
        loop = asyncio.get_running_loop()
        conn = self._tcp[writer] = [peer, loop.time(), asyncio.current_task()]
        try:
            while writer in self._tcp:
                conn[1] = loop.time()          # idle: waiting for the next query
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S),
                                      "big")
                conn[1] = None
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
        except asyncio.TimeoutError:
            # idle too long, or a peer that does not read its answers: no graceful close
            # (it would wait for the unsent data)
            writer.transport.abort()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._tcp.pop(writer, None)
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
