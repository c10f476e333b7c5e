"""The real server on 127.0.0.1, port 0: answers, ECS echo, errors, fuzzing, control channel.

No root and loopback only, so it runs with the unit tests. Readiness is the bound socket
returned by running_server (it returns after bind), never a sleep.
"""
import json
import random
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from gslb.config import example_config
from gslb.lifecycle import ServerThread, running_server

HOST = "127.0.0.1"
EAST, CENTRAL, WEST = "10.100.1.1", "10.100.2.1", "10.100.3.1"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with running_server(example_config(policy="geo", ttl_s=7), seed=1) as s:
        yield s


def ask(s: ServerThread, name: str = "www.lblab.test", rdtype: str = "A",
        ecs: dns.edns.Option | None = None, edns: bool = True,
        tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns or ecs else False,
                               options=[ecs] if ecs else None)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(q, HOST, port=s.port, timeout=2)


def ecs_of(r: dns.message.Message) -> dns.edns.ECSOption | None:
    found = [o for o in r.options if o.otype == dns.edns.ECS]
    assert len(found) <= 1
    return found[0] if found else None


def a_records(r: dns.message.Message) -> list[str]:
    return [rd.address for rrset in r.answer for rd in rrset if rrset.rdtype == dns.rdatatype.A]


@pytest.mark.parametrize("subnet, vip", [("10.1.7.0", EAST), ("10.2.0.0", CENTRAL),
                                         ("10.3.255.0", WEST)])
def test_ecs_picks_nearest_and_echoes_with_scope(server: ServerThread, subnet: str,
                                                  vip: str) -> None:
    r = ask(server, ecs=dns.edns.ECSOption(subnet, 24))
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert a_records(r) == [vip]
    assert r.answer[0].ttl == 7
    opt = ecs_of(r)
    assert opt is not None
    assert (opt.address, opt.srclen, opt.scopelen) == (subnet, 24, 16)


def test_ipv6_ecs(server: ServerThread) -> None:
    r = ask(server, ecs=dns.edns.ECSOption("fd00:3::", 56))
    assert a_records(r) == [WEST]
    assert ecs_of(r).scopelen == 48


def test_no_ecs_no_option_and_resolver_address_used(server: ServerThread) -> None:
    r = ask(server)
    assert ecs_of(r) is None
    # 127.0.0.1 is in no region: the documented fallback is every healthy DC
    assert sorted(a_records(r)) == [EAST, CENTRAL, WEST]


def test_source_zero_answers_without_location(server: ServerThread) -> None:
    r = ask(server, ecs=dns.edns.ECSOption("0.0.0.0", 0))
    assert sorted(a_records(r)) == [EAST, CENTRAL, WEST]
    assert ecs_of(r).scopelen == 0


def raw_ecs_query(option_data: bytes) -> bytes:
    q = dns.message.make_query("www.lblab.test", "A", use_edns=0,
                               options=[dns.edns.GenericOption(dns.edns.ECS, option_data)])
    return q.to_wire()


def udp_exchange(s: ServerThread, wire: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(wire, (HOST, s.port))
        return sock.recv(65535)


@pytest.mark.parametrize("option", [
    struct.pack("!HBB", 3, 24, 0) + bytes(3),            # unknown family
    struct.pack("!HBB", 1, 24, 0) + bytes([10, 1, 2, 0]),  # address longer than source
    struct.pack("!HBB", 1, 20, 0) + bytes([10, 1, 0xFF]),  # bits past source
    struct.pack("!HBB", 1, 40, 0) + bytes(5),            # source longer than IPv4
])
def test_bad_ecs_gets_formerr(server: ServerThread, option: bytes) -> None:
    reply = dns.message.from_wire(udp_exchange(server, raw_ecs_query(option)))
    assert reply.rcode() == dns.rcode.FORMERR
    assert ecs_of(reply) is None


def test_outside_zone_refused(server: ServerThread) -> None:
    r = ask(server, "www.example.com")
    assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA and not r.answer


def test_nxdomain_and_nodata_carry_soa(server: ServerThread) -> None:
    r = ask(server, "nope.lblab.test")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].rdtype == dns.rdatatype.SOA
    r = ask(server, "www.lblab.test", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_apex_soa_ns_and_glue(server: ServerThread) -> None:
    assert ask(server, "lblab.test", "SOA").answer[0].rdtype == dns.rdatatype.SOA
    r = ask(server, "lblab.test", "NS", tcp=True)
    assert str(r.answer[0][0].target) == "ns1.lblab.test."
    assert r.additional[0][0].address == "127.0.0.1"


def test_case_of_question_kept(server: ServerThread) -> None:
    r = ask(server, "WwW.LbLaB.TeSt")
    assert r.question[0].name.to_text() == "WwW.LbLaB.TeSt."


def test_udp_truncates_over_512_without_edns() -> None:
    from gslb.config import DcInfo
    import ipaddress
    base = example_config(policy="all")
    dcs = tuple(DcInfo(f"dc{i}", ipaddress.IPv4Address(f"10.200.0.{i}"), 100.0)
                for i in range(1, 41))
    dist = {(r.name, d.name): 1.0 for r in base.regions for d in dcs}
    cfg = base.replace(dcs=dcs, distance_ms=dist)
    with running_server(cfg, control_port=None) as s:
        r = ask(s, edns=False)
        assert r.flags & dns.flags.TC and not r.answer
        assert len(a_records(ask(s, edns=False, tcp=True))) == 40
        assert len(a_records(ask(s, edns=True))) == 40  # 1232 bytes allowed with EDNS


def test_all_policy_rotates() -> None:
    with running_server(example_config(policy="all"), control_port=None) as s:
        firsts = {a_records(ask(s))[0] for _ in range(6)}
    assert firsts == {EAST, CENTRAL, WEST}


# -- robustness ------------------------------------------------------------------------

def malformed(rng: random.Random, i: int) -> bytes:
    kind = i % 6
    good = dns.message.make_query("www.lblab.test", "A", use_edns=0).to_wire()
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 600))
    if kind == 1:
        return good[:rng.randrange(0, len(good))]  # truncated, zero-length included
    if kind == 2:  # question name that points at itself: a compression loop
        head = struct.pack("!HHHHHH", rng.randrange(65536), 0, 1, 0, 0, 0)
        return head + b"\xc0\x0c\x00\x01\x00\x01"
    if kind == 3:  # a good query with random bytes flipped
        b = bytearray(good)
        for _ in range(3):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 4:  # oversized: a valid header followed by junk
        return good[:12] + rng.randbytes(rng.randrange(2000, 9000))
    return b""


def test_fuzz_then_valid_query_answered_fast(server: ServerThread) -> None:
    rng = random.Random(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sent = 0
        while sent < 10_000:
            try:
                sock.sendto(malformed(rng, sent), (HOST, server.port))
                sent += 1
            except BlockingIOError:
                time.sleep(0.001)  # our own send buffer is full: pace the sender
    # TCP gets junk too: a compression loop, then a zero-length message
    with socket.create_connection((HOST, server.port), timeout=2) as t:
        loop = malformed(rng, 2)
        t.sendall(len(loop).to_bytes(2, "big") + loop + b"\x00\x00")
        reply = t.recv(2 + 512)
        assert dns.message.from_wire(reply[2:]).rcode() == dns.rcode.FORMERR
    deadline = time.monotonic() + 5
    while True:  # the server may still be draining junk from its buffer; bounded retry
        q = dns.message.make_query("www.lblab.test", "A")
        start = time.monotonic()
        try:
            r = dns.query.udp(q, HOST, port=server.port, timeout=0.1)
            break
        except dns.exception.Timeout:
            assert time.monotonic() < deadline, "server stalled after fuzzing"
    assert time.monotonic() - start < 0.1 and r.rcode() == dns.rcode.NOERROR
    # and once the backlog is gone, a fresh query is answered well within 100 ms
    start = time.monotonic()
    r = dns.query.udp(dns.message.make_query("www.lblab.test", "A"), HOST, port=server.port,
                      timeout=0.1)
    assert time.monotonic() - start < 0.1 and a_records(r)


def test_compression_loop_gets_formerr(server: ServerThread) -> None:
    packet = struct.pack("!HHHHHH", 4242, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    reply = udp_exchange(server, packet)
    assert struct.unpack("!H", reply[:2])[0] == 4242 and reply[3] & 0xF == dns.rcode.FORMERR


# -- control channel -------------------------------------------------------------------

def http(s: ServerThread, method: str, path: str, body: bytes | None = None
         ) -> tuple[int, dict]:
    host, port = s.control
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_control_changes_answers_and_rejects_bad_requests() -> None:
    with running_server(example_config(policy="geo")) as s:
        west = dns.edns.ECSOption("10.3.0.0", 24)
        status, state = http(s, "GET", "/state")
        assert status == 200 and state["policy"] == "geo"
        version = state["version"]
        assert http(s, "POST", "/policy", b"{not json")[0] == 400
        assert http(s, "POST", "/policy", b'{"policy": "nearest"}')[0] == 400
        assert http(s, "POST", "/dc/dc-west", b'{"healthy": "no"}')[0] == 400
        assert http(s, "POST", "/dc/dc-west", b'{"healthy": false, "load": -1}')[0] == 400
        assert http(s, "POST", "/dc/dc-nowhere", b'{"healthy": false}')[0] == 404
        assert http(s, "GET", "/state")[1]["version"] == version  # nothing changed
        assert a_records(ask(s, ecs=west)) == [WEST]
        assert http(s, "POST", "/dc/dc-west", b'{"healthy": false}')[0] == 200
        assert a_records(ask(s, ecs=west)) == [CENTRAL]
        assert http(s, "POST", "/dc/dc-west", b'{"healthy": true, "load": 5000}')[0] == 200
        assert a_records(ask(s, ecs=west)) == [CENTRAL]  # over capacity: left out
        assert http(s, "POST", "/ttl", b'{"ttl_s": 3}')[0] == 200
        assert http(s, "POST", "/policy", b'{"policy": "all"}')[1]["policy"] == "all"
        r = ask(s, ecs=west)
        assert len(a_records(r)) == 2 and r.answer[0].ttl == 3 and ecs_of(r).scopelen == 0


def test_prober_drops_dead_dc_within_2s() -> None:
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    targets = {"dc-west": (HOST, port)}
    west = dns.edns.ECSOption("10.3.0.0", 24)
    with running_server(example_config(), probe_targets=targets, interval_s=0.2) as s:
        assert a_records(ask(s, ecs=west)) == [WEST]
        listener.close()  # the DC dies: connects are refused from now on
        died = time.monotonic()
        while a_records(ask(s, ecs=west)) == [WEST]:
            assert time.monotonic() - died < 2.0, "dead DC still answered after 2 s"
            time.sleep(0.05)  # polling the observable, bounded by the assert above


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed")
def test_dig_subnet(server: ServerThread) -> None:
    out = subprocess.run(["dig", f"@{HOST}", "-p", str(server.port), "+subnet=10.2.3.0/24",
                          "+norec", "+tries=1", "+time=2", "www.lblab.test", "A"],
                         capture_output=True, text=True, timeout=10).stdout
    assert "status: NOERROR" in out and CENTRAL in out
    assert "CLIENT-SUBNET: 10.2.3.0/24/16" in out
    bad = subprocess.run(["dig", f"@{HOST}", "-p", str(server.port), "+ednsopt=8:00030000",
                          "+tries=1", "+time=2", "www.lblab.test"],
                         capture_output=True, text=True, timeout=10).stdout
    assert "status: FORMERR" in bad


def test_each_service_name_has_its_policy_and_ttl_and_the_state_says_why() -> None:
    """search (capacity, TTL 10) and upload (spare within 60 ms, TTL 60) from the same
    client name different DCs when east is busy with searches; www keeps geo and TTL 30."""
    from gslb.config import ServiceInfo
    cfg = example_config(policy="geo", services=(
        ServiceInfo("search", "capacity", 10, capacity_share=0.6),
        ServiceInfo("upload", "spare", 60, capacity_share=0.4, max_distance_ms=60)))
    with running_server(cfg, seed=1) as s:
        east = dns.edns.ECSOption("10.1.0.0", 24)
        assert http(s, "POST", "/dc/dc-east",
                    b'{"load": 500, "load_by_service": {"search": 400, "upload": 100}}'
                    )[0] == 200
        assert http(s, "POST", "/dc/dc-central",
                    b'{"load": 100, "load_by_service": {"search": 90, "upload": 10}}')[0] == 200
        search, upload, www = (ask(s, f"{n}.lblab.test", ecs=east)
                               for n in ("search", "upload", "www"))
        assert a_records(search) == [EAST] and search.answer[0].ttl == 10
        assert a_records(upload) == [CENTRAL] and upload.answer[0].ttl == 60
        assert a_records(www) == [EAST] and www.answer[0].ttl == 30
        state = http(s, "GET", "/state")[1]
        assert state["services"]["upload.lblab.test"]["policy"] == "spare"
        assert state["dcs"]["dc-central"]["load_by_service"] == {"search": 90.0,
                                                                  "upload": 10.0}
        # search overfills east's share (700 of 600): east keeps only what fits of search's
        # answers (its target, 480 of 700: the rest spill to central), and all of www's
        assert http(s, "POST", "/dc/dc-east", b'{"load_by_service": {"search": 700}}'
                    )[0] == 200
        got = Counter(a_records(ask(s, "search.lblab.test", ecs=east))[0] for _ in range(200))
        assert set(got) == {EAST, CENTRAL} and 0.6 < got[EAST] / 200 < 0.95, got
        assert a_records(ask(s, "www.lblab.test", ecs=east)) == [EAST]
        state = http(s, "GET", "/state")[1]
        assert state["services"]["search.lblab.test"]["full"] == ["dc-east"]
        assert state["services"]["search.lblab.test"]["admit"]["dc-east"] <= 1.0
        assert [t[1:] for t in state["transitions"]] == [["search", "dc-east", True]]
        assert http(s, "POST", "/dc/dc-east", b'{"load_by_service": {"search": -1}}'
                    )[0] == 400
        assert ask(s, "nothere.lblab.test").rcode() == dns.rcode.NXDOMAIN


def test_policy_and_overload_change_together_or_not_at_all() -> None:
    with running_server(example_config(policy="geo")) as s:
        bad = http(s, "POST", "/policy", b'{"policy": "capacity", "overload": "drop"}')
        assert bad[0] == 400 and "overload" in bad[1]["error"]
        assert http(s, "GET", "/state")[1]["policy"] == "geo"    # nothing applied
        state = http(s, "POST", "/policy", b'{"policy": "capacity", "overload": "shed"}')[1]
        assert (state["policy"], state["overload"]) == ("capacity", "shed")
        # every DC full: shed answers the client's nearest (east), spill the least loaded
        for dc, load in (("dc-east", 3000), ("dc-central", 1500), ("dc-west", 2000)):
            assert http(s, "POST", f"/dc/{dc}", f'{{"load": {load}}}'.encode())[0] == 200
        east = dns.edns.ECSOption("10.1.0.0", 24)
        assert a_records(ask(s, ecs=east)) == [EAST]
        assert http(s, "POST", "/policy", b'{"overload": "spill"}')[0] == 200
        assert a_records(ask(s, ecs=east)) == [CENTRAL]
