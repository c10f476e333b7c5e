"""Differential test: the lblab authority against NSD (a mature authoritative server)
serving the same zone, on loopback. For a table of queries (RFC 1034/1035/2308/6891/7766
/8945 cases, over UDP and TCP) both must give the same rcode, header flags and section
counts, and the same TSIG error where one is echoed; for the policy's own name (www) the
records differ by design (NSD has every VIP, lblab its policy's choice), so only rcode and
flags are compared there. A change that makes lblab answer differently from NSD fails here
with the query named."""
from __future__ import annotations

import shutil
import socket
import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from gslb.bench import running_nsd
from gslb.config import example_config
from gslb.lifecycle import running_server
from support.dnswire import a_record_after, name_end, recv_up_to, signed_query

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("nsd") is None and not
                                 Path("/usr/sbin/nsd").exists(), reason="nsd not installed")]
HOST = "127.0.0.1"


def _q(name, rdtype, **kw) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


def _edit(name, rdtype, edit, **kw) -> bytes:
    q = dns.message.make_query(name, rdtype, **kw)
    edit(q)
    return q.to_wire()


def _opcode(q, code):
    q.set_opcode(code)


SOA_TEXT = "ns1.lblab.test. hostmaster.lblab.test. 1 3600 600 86400 5"
CASES = {   # name -> (query bytes, compare records too)
    "apex SOA": (_q("lblab.test", "SOA"), True),
    "apex NS": (_q("lblab.test", "NS"), True),
    "glue A": (_q("ns1.lblab.test", "A"), True),
    "NXDOMAIN": (_q("nope.lblab.test", "A"), True),
    "NODATA at the apex": (_q("lblab.test", "A"), True),
    "NODATA AAAA of www": (_q("www.lblab.test", "AAAA"), True),
    "www A": (_q("www.lblab.test", "A"), False),
    "www A with EDNS and DO": (_q("www.lblab.test", "A", use_edns=0, want_dnssec=True), False),
    "out of zone": (_q("example.com", "A"), True),
    "case kept": (_q("LbLaB.TeSt", "SOA"), True),
    "AXFR": (_q("lblab.test", "AXFR"), True),
    "IXFR with its SOA": (_edit("lblab.test", "IXFR", lambda q: q.authority.append(
        dns.rrset.from_text("lblab.test.", 0, "IN", "SOA", SOA_TEXT))), True),
    "TSIG, unknown key, EDNS": (signed_query(True), True),
    "TSIG, unknown key": (signed_query(False), True),
    "TSIG not last": (a_record_after(signed_query(False)), True),
    "stray additional record": (_edit("lblab.test", "SOA", lambda q: q.additional.append(
        dns.rrset.from_text("x.lblab.test.", 0, "IN", "A", "1.2.3.4"))), True),
    "QCLASS ANY, apex SOA": (_q("lblab.test", "SOA", rdclass="ANY"), True),
    "QCLASS ANY, www A": (_q("www.lblab.test", "A", rdclass="ANY"), False),
    "QCLASS CH": (_q("lblab.test", "SOA", rdclass="CH"), True),
    "opcode 15": (_edit("lblab.test", "SOA", lambda q: _opcode(q, 15)), True),
    "opcode 15 without RD": (_edit("lblab.test", "SOA", lambda q: (
        _opcode(q, 15), setattr(q, "flags", q.flags & ~dns.flags.RD))), True),
    "EDNS version 1": (_q("lblab.test", "SOA", use_edns=1), True),
}


def _exchange(port: int, wire: bytes, tcp: bool) -> bytes | None:
    try:
        if tcp:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                sock.sendall(len(wire).to_bytes(2, "big") + wire)
                head = recv_up_to(sock, 2)
                return recv_up_to(sock, int.from_bytes(head, "big")) if head else None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(wire, (HOST, port))
            return sock.recv(65535)
    except (socket.timeout, ConnectionError):
        return None


def digest(reply: bytes | None, records: bool) -> tuple:
    """What the two servers must agree on: rcode, flags, counts, the TSIG error echoed."""
    if reply is None:
        return ("no reply",)
    _, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
    out = ["rcode", flags & 0xF, "flags", dns.flags.to_text(flags & 0x87B0)]
    if not records:
        return tuple(out + ["question", qd, "answers", an > 0])
    out += ["counts", qd, an, ns, ar]
    off = 12
    for _ in range(qd):
        off = name_end(reply, off) + 4
    types = []
    for _ in range(an + ns + ar):
        off = name_end(reply, off)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", reply, off)
        types.append(dns.rdatatype.to_text(rtype))
        if rtype == dns.rdatatype.TSIG:
            rd = dns.rdata.from_wire(dns.rdataclass.ANY, rtype, reply, off + 10, rdlen)
            types.append(f"tsig error {rd.error}, mac {len(rd.mac)} bytes")
        off += 10 + rdlen
    return tuple(out + ["records", types])


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    cfg = example_config(policy="geo")
    with running_nsd(cfg, tmp_path_factory.mktemp("nsd")) as nsd_port, \
            running_server(cfg, control_port=None) as lblab:
        yield nsd_port, lblab.port


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", list(CASES))
def test_lblab_answers_as_nsd_does(servers, case, tcp):
    nsd_port, lblab_port = servers
    wire, records = CASES[case]
    want = digest(_exchange(nsd_port, wire, tcp), records)
    got = digest(_exchange(lblab_port, wire, tcp), records)
    assert got == want, f"{case} over {'TCP' if tcp else 'UDP'}: lblab {got}, NSD {want}"
