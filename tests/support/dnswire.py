"""DNS messages at the byte level for the authority's tests (test_gslb_hardening,
test_gslb_nsd): records appended by hand, queries signed with a key no server has, and
the small readers that walk a reply without trusting a parser."""
from __future__ import annotations

import struct
import time

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype


def with_additional(wire: bytes, record: bytes) -> bytes:
    """`wire` with one more record at the end of its additional section."""
    head = bytearray(wire[:12])
    struct.pack_into("!H", head, 10, struct.unpack_from("!H", wire, 10)[0] + 1)
    return bytes(head) + wire[12:] + record


def a_record_after(wire: bytes) -> bytes:
    """An A record after everything else (after a TSIG: the TSIG is then not last)."""
    return with_additional(wire, dns.name.from_text("x.lblab.test.").to_wire()
                           + struct.pack("!HHIH", 1, 1, 0, 4) + bytes([1, 2, 3, 4]))


def signed_query(edns: bool) -> bytes:
    """A query signed with HMAC-SHA256 by key `nokey.`, which the server does not have:
    the TSIG record built by hand (dnspython's signer keeps module-level tables that other
    tests' imports may replace)."""
    from dns.rdtypes.ANY.TSIG import TSIG
    q = dns.message.make_query("www.lblab.test", "A", use_edns=0 if edns else None)
    rdata = TSIG(dns.rdataclass.ANY, dns.rdatatype.TSIG, dns.name.from_text("hmac-sha256."),
                 int(time.time()), 300, bytes(32), q.id, 0, b"").to_wire()
    return with_additional(q.to_wire(), dns.name.from_text("nokey.").to_wire()
                           + struct.pack("!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0,
                                         len(rdata)) + rdata)


def name_end(data: bytes, off: int) -> int:
    """The offset after the (possibly compressed) name at `off`."""
    while data[off]:
        if data[off] & 0xC0:
            return off + 2
        off += data[off] + 1
    return off + 1


def recv_up_to(sock, n: int) -> bytes:
    """`n` bytes from a stream socket, or fewer if the peer closed first."""
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            return out
        out += chunk
    return out
