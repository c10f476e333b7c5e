"""The holes a differential test against NSD found, closed: TCP slots per client (one host
holding every slot no longer locks the others out), zone transfers refused, TSIG with an
unknown key answered NOTAUTH/BADKEY, QCLASS ANY answered as IN, stray records in the
additional section a FORMERR. Real sockets on loopback (127.0.0.2 and up are other
sources on the same lo)."""
from __future__ import annotations

import socket
import struct
import time

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from gslb import server as gslb_server
from gslb.config import example_config
from gslb.lifecycle import running_server
from support.dnswire import a_record_after, name_end, recv_up_to, signed_query

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def s():
    with running_server(example_config(policy="geo"), control_port=None) as srv:
        yield srv


def _recv(sock, n: int) -> bytes:
    out = recv_up_to(sock, n)
    assert len(out) == n, "connection closed"
    return out


def _raw(srv, wire: bytes, tcp: bool) -> bytes:
    if tcp:
        with socket.create_connection((HOST, srv.port), timeout=3) as sock:
            sock.sendall(len(wire).to_bytes(2, "big") + wire)
            size = int.from_bytes(_recv(sock, 2), "big")
            return _recv(sock, size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, (HOST, srv.port))
        return sock.recv(65535)


def _header(reply: bytes) -> tuple[int, int, int, int, int, int]:
    return struct.unpack_from("!HHHHHH", reply)


def _query(srv, name="lblab.test", rdtype="SOA", tcp=False, **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    return dns.message.from_wire(_raw(srv, q.to_wire(), tcp))


@pytest.mark.parametrize("tcp, rcode", [(False, dns.rcode.NOTIMP), (True, dns.rcode.REFUSED)])
def test_axfr_is_refused_over_tcp_and_not_implemented_over_udp(s, tcp, rcode):
    r = _query(s, rdtype="AXFR", tcp=tcp)
    assert r.rcode() == rcode and not r.answer and not r.flags & dns.flags.AA


@pytest.mark.parametrize("tcp", [False, True])
def test_an_ixfr_query_with_its_soa_is_refused_not_a_formerr(s, tcp):
    q = dns.message.make_query("lblab.test", "IXFR")
    q.authority.append(dns.rrset.from_text("lblab.test.", 0, "IN", "SOA", "ns1.lblab.test. "
                                           "hostmaster.lblab.test. 1 3600 600 86400 5"))
    r = dns.message.from_wire(_raw(s, q.to_wire(), tcp))
    assert r.rcode() == dns.rcode.REFUSED and len(r.question) == 1


def _last_rr(reply: bytes) -> tuple[int, bytes]:
    """(type, rdata) of the reply's last record (the TSIG, when there is one)."""
    off = 12
    qd, an, ns, ar = _header(reply)[2:]
    for _ in range(qd):
        off = name_end(reply, off) + 4
    last = None
    for _ in range(an + ns + ar):
        off = name_end(reply, off)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", reply, off)
        off += 10
        last = (rtype, reply[off:off + rdlen])
        off += rdlen
    assert off == len(reply) and last is not None
    return last


@pytest.mark.parametrize("edns", [True, False])
@pytest.mark.parametrize("tcp", [False, True])
def test_an_unknown_tsig_key_gets_notauth_badkey_unsigned_and_last(s, edns, tcp):
    reply = _raw(s, signed_query(edns), tcp)
    qid, flags, qd, an, ns, ar = _header(reply)
    assert flags & 0xF == dns.rcode.NOTAUTH and qd == an == ns == 0    # as NSD: no question
    assert ar == (2 if edns else 1)
    rtype, rdata = _last_rr(reply)
    assert rtype == dns.rdatatype.TSIG
    tsig = dns.rdata.from_wire(dns.rdataclass.ANY, dns.rdatatype.TSIG, rdata, 0, len(rdata))
    assert tsig.error == 17 and tsig.mac == b"" and tsig.original_id == qid


def test_a_tsig_that_is_not_last_or_a_stray_additional_record_is_a_formerr(s):
    q = dns.message.make_query("lblab.test", "SOA")
    q.additional.append(dns.rrset.from_text("x.lblab.test.", 0, "IN", "A", "1.2.3.4"))
    qid, flags, qd, an, ns, ar = _header(_raw(s, q.to_wire(), False))
    assert flags & 0xF == dns.rcode.FORMERR and qd == an == ns == ar == 0
    # a TSIG followed by an A record: the TSIG is not last
    _, flags, *_ = _header(_raw(s, a_record_after(signed_query(False)), False))
    assert flags & 0xF == dns.rcode.FORMERR


@pytest.mark.parametrize("name, rdtype", [("www.lblab.test", "A"), ("lblab.test", "SOA")])
def test_qclass_any_is_answered_as_in_without_aa(s, name, rdtype):
    r = _query(s, name, rdtype, rdclass="ANY")
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1
    assert r.answer[0].rdclass == dns.rdataclass.IN and not r.flags & dns.flags.AA
    assert _query(s, name, rdtype).flags & dns.flags.AA          # class IN: authoritative
    assert _query(s, "lblab.test", "SOA", rdclass="CH").rcode() == dns.rcode.REFUSED


def _connect(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect((HOST, port))
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except (socket.timeout, BlockingIOError):
        return False
    except OSError:
        return True


def _soa_over(sock: socket.socket) -> dns.message.Message:
    wire = dns.message.make_query("lblab.test", "SOA").to_wire()
    sock.settimeout(2)
    sock.sendall(len(wire).to_bytes(2, "big") + wire)
    size = int.from_bytes(_recv(sock, 2), "big")
    return dns.message.from_wire(_recv(sock, size))


def _wait(check, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_one_host_holding_every_tcp_slot_does_not_lock_out_another():
    """512 idle connections from 127.0.0.1 (the old table's whole size): the server
    keeps at most TCP_PER_SOURCE of them, closing that host's oldest idle ones, and a
    query from 127.0.0.2 is still answered."""
    with running_server(example_config(), control_port=None) as srv:
        held = [_connect("127.0.0.1", srv.port) for _ in range(gslb_server.TCP_MAX_CONNS)]
        try:
            _wait(lambda: len(srv_conns(srv)) <= gslb_server.TCP_PER_SOURCE
                  and len(srv_conns(srv)) > 0, "the server's table settling")
            open_ = [c for c in held if not _closed_by_server(c)]
            assert len(open_) == gslb_server.TCP_PER_SOURCE
            assert set(open_) == set(held[-gslb_server.TCP_PER_SOURCE:])  # the newest kept
            with _connect("127.0.0.2", srv.port) as other:
                assert _soa_over(other).rcode() == dns.rcode.NOERROR
            # and the host keeps answers on the connections it still has
            assert _soa_over(held[-1]).rcode() == dns.rcode.NOERROR
        finally:
            for c in held:
                c.close()


def test_with_the_table_full_the_oldest_idle_connection_gives_way():
    per = gslb_server.TCP_PER_SOURCE
    sources = [f"127.0.0.{10 + i}" for i in range(gslb_server.TCP_MAX_CONNS // per)]
    with running_server(example_config(), control_port=None) as srv:
        held = [_connect(src, srv.port) for src in sources for _ in range(per)]
        try:
            _wait(lambda: len(srv_conns(srv)) == gslb_server.TCP_MAX_CONNS, "a full table")
            busy = held[0]
            assert _soa_over(busy).rcode() == dns.rcode.NOERROR   # now the newest idle
            with _connect("127.0.0.2", srv.port) as newcomer:
                assert _soa_over(newcomer).rcode() == dns.rcode.NOERROR
            _wait(lambda: _closed_by_server(held[1]), "the oldest idle one closed")
            assert not _closed_by_server(busy)
        finally:
            for c in held:
                c.close()


def srv_conns(srv) -> dict:
    return srv.server._tcp
