"""Strict parsing of incoming queries and rendering of replies.

Queries are small and regular (header, one question, at most an OPT record), so we walk them
ourselves with dnspython's name decoder (which rejects compression loops and forward
pointers). That lets us tell apart "drop" (no usable header) from FORMERR, and apply RFC 7871's
ECS checks before anything trusts the option. Replies are rendered by dnspython, once per
distinct answer: the server caches them and patches the id.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gslb.ecs import ECS_CODE, ClientSubnet, EcsError, parse_ecs

HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
OPT_TYPE = 41
TSIG_TYPE = 250
IXFR_TYPE = 251
SOA_TYPE = 6
CLASS_ANY = 255
SERVER_PAYLOAD = 1232  # our EDNS UDP size (DNS flag day 2020: avoids IP fragmentation)
MIN_UDP = 512  # RFC 1035 limit without EDNS
TCP_MAX = 65535
QR, RD = 0x8000, 0x0100


class Drop(Exception):
    """Not worth an answer: no full header, or a response (never answer those: no loops)."""


class QueryError(Exception):
    """A query we answer only with an error rcode (FORMERR, NOTIMP, BADVERS)."""

    def __init__(self, rcode: int, qid: int, flags: int, question: bytes = b"",
                 edns: bool = False, why: str = "") -> None:
        super().__init__(why or dns.rcode.to_text(rcode))
        self.rcode, self.qid, self.flags = rcode, qid, flags
        self.question, self.edns = question, edns


@dataclass(frozen=True, slots=True)
class Query:
    qid: int
    flags: int
    qname: dns.name.Name
    qtype: int
    qclass: int
    question: bytes  # raw question section as sent (keeps the client's 0x20 case)
    edns: bool
    payload: int  # requester's UDP payload size (512 without EDNS)
    dnssec_ok: bool
    ecs: ClientSubnet | None
    # a TSIG record (the last of the additional section): (key name, rdata as sent)
    tsig: tuple[dns.name.Name, bytes] | None = None

    def udp_limit(self) -> int:
        """Largest UDP reply allowed: the requester's size, capped at ours, at least 512."""
        return max(MIN_UDP, min(self.payload, SERVER_PAYLOAD)) if self.edns else MIN_UDP


def parse_query(data: bytes) -> Query:
    """Parse a query; raise Drop or QueryError (carrying what is needed to reply)."""
    if len(data) < HEADER.size:
        raise Drop("short header")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        raise Drop("a response")
    if (flags >> 11) & 0xF != 0:
        raise QueryError(dns.rcode.NOTIMP, qid, flags, why="opcode not QUERY")
    if qdcount != 1 or ancount:
        raise QueryError(dns.rcode.FORMERR, qid, flags, why="section counts")
    try:
        qname, used = dns.name.from_wire(data, HEADER.size)
    except (dns.exception.DNSException, ValueError, IndexError) as exc:
        raise QueryError(dns.rcode.FORMERR, qid, flags, why=f"qname: {exc}") from None
    if used != len(qname.to_wire()):  # a pointer could only aim at the header: nonsense
        raise QueryError(dns.rcode.FORMERR, qid, flags, why="compressed question")
    off = HEADER.size + used
    if off + 4 > len(data):
        raise QueryError(dns.rcode.FORMERR, qid, flags, why="question truncated")
    qtype, qclass = struct.unpack_from("!HH", data, off)
    off += 4
    question = bytes(data[HEADER.size:off])
    # an authority section only in an IXFR query: the client's SOA (RFC 1995 section 3)
    if nscount and not (qtype == IXFR_TYPE and nscount == 1):
        raise QueryError(dns.rcode.FORMERR, qid, flags, question, why="section counts")
    for _ in range(nscount):
        _, rtype, *_, off = _walk_rr(data, off, qid, flags, question)
        if rtype != SOA_TYPE:
            raise QueryError(dns.rcode.FORMERR, qid, flags, question, why="IXFR without SOA")
    opt, tsig, off = _parse_additional(data, off, arcount, qid, flags, question)
    if off != len(data):
        raise QueryError(dns.rcode.FORMERR, qid, flags, question, opt is not None,
                         "trailing data")
    if opt is None:
        return Query(qid, flags, qname, qtype, qclass, question, False, MIN_UDP, False, None,
                     tsig)
    payload, ttl, rdata = opt
    if (ttl >> 16) & 0xFF != 0:  # EDNS version (RFC 6891 6.1.3)
        raise QueryError(dns.rcode.BADVERS, qid, flags, question, True, "EDNS version")
    ecs = _parse_options(rdata, qid, flags, question)
    return Query(qid, flags, qname, qtype, qclass, question, True, payload,
                 bool(ttl & 0x8000), ecs, tsig)


def _walk_rr(data: bytes, off: int, qid: int, flags: int, question: bytes
             ) -> tuple[dns.name.Name, int, int, int, bytes, int]:
    """One resource record at `off` -> (owner, type, class, ttl, rdata, offset after it)."""
    try:
        owner, used = dns.name.from_wire(data, off)
    except (dns.exception.DNSException, ValueError, IndexError):
        raise QueryError(dns.rcode.FORMERR, qid, flags, question, why="rr name") from None
    off += used
    if off + _RR_FIXED.size > len(data):
        raise QueryError(dns.rcode.FORMERR, qid, flags, question, why="rr truncated")
    rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, off)
    off += _RR_FIXED.size
    if off + rdlen > len(data):
        raise QueryError(dns.rcode.FORMERR, qid, flags, question, why="rdata truncated")
    return owner, rtype, rclass, ttl, bytes(data[off:off + rdlen]), off + rdlen


def _parse_additional(data: bytes, off: int, count: int, qid: int, flags: int,
                      question: bytes
                      ) -> tuple[tuple[int, int, bytes] | None,
                                 tuple[dns.name.Name, bytes] | None, int]:
    """Walk the additional section: at most one OPT and one TSIG, the TSIG last (RFC 8945
    section 5.1); any other record is a FORMERR, as NSD answers."""
    opt: tuple[int, int, bytes] | None = None
    tsig: tuple[dns.name.Name, bytes] | None = None
    for i in range(count):
        owner, rtype, rclass, ttl, rdata, off = _walk_rr(data, off, qid, flags, question)
        if rtype == OPT_TYPE:
            if opt is not None or owner != dns.name.root:
                raise QueryError(dns.rcode.FORMERR, qid, flags, question, True, "bad OPT")
            opt = (rclass, ttl, rdata)
        elif rtype == TSIG_TYPE and i == count - 1 and rclass == CLASS_ANY:
            tsig = (owner, rdata)
        else:
            # NSD answers these without the question (and so without OPT)
            raise QueryError(dns.rcode.FORMERR, qid, flags, b"", False,
                             "TSIG not last" if rtype == TSIG_TYPE else
                             "a record in the additional section")
    return opt, tsig, off


def _parse_options(rdata: bytes, qid: int, flags: int, question: bytes) -> ClientSubnet | None:
    ecs: ClientSubnet | None = None
    off = 0
    while off < len(rdata):
        if off + 4 > len(rdata):
            raise QueryError(dns.rcode.FORMERR, qid, flags, question, True, "option header")
        code, length = struct.unpack_from("!HH", rdata, off)
        off += 4
        if off + length > len(rdata):
            raise QueryError(dns.rcode.FORMERR, qid, flags, question, True, "option length")
        if code == ECS_CODE:
            if ecs is not None:
                raise QueryError(dns.rcode.FORMERR, qid, flags, question, True, "two ECS")
            try:
                ecs = parse_ecs(rdata[off:off + length])
            except EcsError as exc:
                raise QueryError(dns.rcode.FORMERR, qid, flags, question, True,
                                 str(exc)) from None
        off += length  # other options (cookies, padding...) are ignored, per RFC 6891
    return ecs


def _opt_rr(rcode: int = 0, dnssec_ok: bool = False, options: bytes = b"") -> bytes:
    ttl = ((rcode >> 4) << 24) | (0x8000 if dnssec_ok else 0)
    return b"\x00" + _RR_FIXED.pack(OPT_TYPE, SERVER_PAYLOAD, ttl, len(options)) + options


def error_response(err: QueryError) -> bytes:
    """Header (+ question, + OPT when the query had one) with the error rcode; no ECS."""
    flags = QR | (err.flags & 0x7800) | (err.flags & RD) | (err.rcode & 0xF)
    head = HEADER.pack(err.qid, flags, 1 if err.question else 0, 0, 0, 1 if err.edns else 0)
    return head + err.question + (_opt_rr(err.rcode) if err.edns else b"")


def render(q: Query, rcode: int, answer: Sequence[dns.rrset.RRset] = (),
           authority: Sequence[dns.rrset.RRset] = (), additional: Sequence[dns.rrset.RRset] = (),
           ecs_reply: bytes | None = None, limit: int = TCP_MAX, aa: bool = True) -> bytes:
    """Render a reply; if it exceeds ``limit``, a header+question reply with TC set."""
    msg = dns.message.Message(id=q.qid)
    # QCLASS ANY is answered (as IN) without AA, as NSD does: "any class" is more than
    # this server is authoritative for
    aa = aa and q.qclass != CLASS_ANY
    msg.flags = dns.flags.QR | (q.flags & RD) | (dns.flags.AA if aa else 0)
    msg.set_rcode(rcode)
    msg.question.append(dns.rrset.RRset(q.qname, q.qclass, q.qtype))
    if q.edns:
        options = [dns.edns.GenericOption(ECS_CODE, ecs_reply)] if ecs_reply is not None else []
        msg.use_edns(0, dns.flags.DO if q.dnssec_ok else 0, SERVER_PAYLOAD, options=options)
    msg.answer.extend(answer)
    msg.authority.extend(authority)
    msg.additional.extend(additional)
    try:
        # no shuffle: the policy chose the order (rotation), dnspython must keep it
        wire = msg.to_wire(max_size=limit, want_shuffle=False)
    except dns.exception.TooBig:
        wire = None
    if wire is not None and len(wire) <= limit:
        return _restore_question(wire, q)
    msg.answer.clear()
    msg.authority.clear()
    msg.additional.clear()
    msg.flags |= dns.flags.TC
    return _restore_question(msg.to_wire(max_size=TCP_MAX, want_shuffle=False), q)


BADKEY = 17   # TSIG error: the server does not know the key (RFC 8945 section 5.2.2)


def render_badkey(q: Query) -> bytes:
    """NOTAUTH with the client's TSIG echoed unsigned and error BADKEY (RFC 8945 sections
    5.2.2 and 5.3.2: no MAC), the TSIG last, after any OPT, and no question (as NSD
    answers); this server knows no keys."""
    assert q.tsig is not None
    name, rdata = q.tsig
    reply = error_response(QueryError(dns.rcode.NOTAUTH, q.qid, q.flags, b"", q.edns))
    try:
        tsig = dns.rdata.from_wire(dns.rdataclass.ANY, dns.rdatatype.TSIG, rdata, 0,
                                   len(rdata)).replace(mac=b"", error=BADKEY, other=b"")
    except (dns.exception.DNSException, ValueError, IndexError, struct.error):
        return reply       # a TSIG that does not parse: NOTAUTH alone
    body = tsig.to_wire()
    record = name.to_wire() + _RR_FIXED.pack(TSIG_TYPE, dns.rdataclass.ANY, 0, len(body)) \
        + body
    head = bytearray(reply[:HEADER.size])
    struct.pack_into("!H", head, 10, struct.unpack_from("!H", reply, 10)[0] + 1)
    return bytes(head) + reply[HEADER.size:] + record


def _restore_question(wire: bytes, q: Query) -> bytes:
    """Put the question back byte for byte (dnspython may re-case it through compression)."""
    end = HEADER.size + len(q.question)
    if wire[HEADER.size:end].lower() == q.question.lower():
        return wire[:HEADER.size] + q.question + wire[end:]
    return wire
