"""The userspace GRE decapsulator's header parsing (topologies/gredecap.py): every GRE flag
combination OVS or a kernel may send is stripped correctly, and anything malformed is dropped
with a named reason, never an exception."""
from __future__ import annotations

import random
import struct

import pytest

from topologies import gre, gredecap
from topologies.gredecap import DROP_REASONS, build_gre, internet_checksum, parse


def inner_packet(payload: bytes = b"hello, backend", src="10.1.0.11",
                 dst="10.101.0.100") -> bytes:
    import socket
    total = 20 + 20 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 63, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x18, 65535, 0, 0)
    return ip + tcp + payload


INNER = inner_packet()


@pytest.mark.parametrize("key", [None, 0, 0xDEADBEEF])
@pytest.mark.parametrize("seq", [None, 7])
@pytest.mark.parametrize("checksum", [False, True])
def test_optional_fields_are_stripped(key, seq, checksum):
    pkt = build_gre(INNER, key=key, seq=seq, checksum=checksum)
    off, length, reason = parse(pkt)
    assert reason == ""
    assert pkt[off:off + length] == INNER
    expected_gre = 4 + 4 * checksum + 4 * (key is not None) + 4 * (seq is not None)
    assert off == 20 + expected_gre


def test_outer_ip_options_are_skipped():
    pkt = bytearray(build_gre(INNER))
    # rebuild with IHL 6 (4 bytes of options: NOP x4)
    hdr = bytes([0x46]) + pkt[1:20] + b"\x01\x01\x01\x01"
    hdr = bytearray(hdr)
    struct.pack_into("!H", hdr, 2, len(pkt) + 4)
    off, length, reason = parse(bytes(hdr) + bytes(pkt[20:]))
    assert reason == "" and off == 24 + 4 and length == len(INNER)


def test_trailing_bytes_beyond_inner_total_length_are_not_written():
    pkt = build_gre(INNER) + b"\0" * 6   # Ethernet padding-like tail
    off, length, reason = parse(pkt)
    assert reason == "" and length == len(INNER)


def test_n_limits_the_packet_in_a_reused_buffer():
    pkt = build_gre(INNER)
    buf = bytearray(65535)
    buf[:len(pkt)] = pkt
    assert parse(buf, len(pkt)) == (24, len(INNER), "")
    assert parse(buf, 23)[2] == "short_gre"


@pytest.mark.parametrize("mutate,reason", [
    (lambda p: p[:10], "short_outer"),
    (lambda p: bytes([0x65]) + p[1:], "not_ipv4_outer"),
    (lambda p: bytes([0x44]) + p[1:], "bad_outer_ihl"),
    (lambda p: (bytes([0x4F]) + p[1:])[:50], "bad_outer_ihl"),        # IHL 60 > packet
    (lambda p: p[:6] + b"\x20\x00" + p[8:], "outer_fragment"),        # MF
    (lambda p: p[:6] + b"\x00\x10" + p[8:], "outer_fragment"),        # offset
    (lambda p: p[:9] + b"\x06" + p[10:], "not_gre"),
    (lambda p: p[:22], "short_gre"),
    (lambda p: p[:20] + b"\x00\x01" + p[22:], "gre_version"),         # version 1 (PPTP)
    (lambda p: p[:20] + b"\x40\x00" + p[22:], "gre_routing"),
    (lambda p: p[:20] + b"\x08\x00" + p[22:], "gre_reserved"),        # strict source route
    (lambda p: p[:20] + b"\x00\x80" + p[22:], "gre_reserved"),
    (lambda p: p[:22] + b"\x65\x58" + p[24:], "not_ipv4_inner"),      # Ethernet over GRE
    (lambda p: p[:22] + b"\x86\xdd" + p[24:], "not_ipv4_inner"),      # IPv6
    (lambda p: p[:34], "short_inner"),
    (lambda p: p[:24] + bytes([0x60]) + p[25:], "bad_inner"),
    (lambda p: p[:24] + bytes([0x43]) + p[25:], "bad_inner"),
    (lambda p: p[:26] + b"\xff\xff" + p[28:], "bad_inner"),          # inner longer than data
])
def test_malformed_packets_are_dropped_with_a_reason(mutate, reason):
    out = parse(mutate(build_gre(INNER)))
    assert out == (0, 0, reason)
    assert reason in DROP_REASONS


def test_flags_claim_optional_fields_that_are_missing():
    # key + sequence flags but the packet ends right after the base header
    pkt = build_gre(b"")[:20] + struct.pack("!HH", 0x3000, 0x0800)
    assert parse(pkt)[2] == "short_gre"


def test_bad_gre_checksum_is_dropped_unless_not_verified():
    pkt = bytearray(build_gre(INNER, checksum=True))
    pkt[-1] ^= 0xFF
    assert parse(bytes(pkt))[2] == "gre_checksum"
    assert parse(bytes(pkt), verify_checksum=False)[2] == ""


def test_random_garbage_never_raises():
    rng = random.Random(5)
    base = build_gre(INNER, key=1, seq=2, checksum=True)
    for _ in range(5000):
        kind = rng.random()
        if kind < 0.3:
            pkt = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        else:
            pkt = bytearray(base)
            for _ in range(rng.randrange(1, 6)):
                pkt[rng.randrange(len(pkt))] = rng.getrandbits(8)
            pkt = bytes(pkt[:rng.randrange(0, len(pkt) + 1)])
        off, length, reason = parse(pkt)
        assert reason in DROP_REASONS or (reason == "" and off + length <= len(pkt))


def test_decapsulator_counts_drops_without_crashing(monkeypatch):
    dec = gredecap.Decapsulator("lbg-test", None)

    class FakeSock:
        def __init__(self, packets):
            self.packets = list(packets)

        def setsockopt(self, *a):
            pass

        def recv_into(self, buf):
            if not self.packets:
                dec.stop = True
                raise OSError("closed")
            p = self.packets.pop(0)
            buf[:len(p)] = p
            return len(p)

    written = []
    packets = [build_gre(INNER), b"junk", build_gre(INNER, key=5)[:30], build_gre(INNER, seq=1)]
    monkeypatch.setattr(gredecap.socket, "socket", lambda *a: FakeSock(packets))
    monkeypatch.setattr(gredecap, "open_tun", lambda name: 99)
    monkeypatch.setattr(gredecap.os, "write", lambda fd, data: written.append(bytes(data)))
    dec.run()
    assert written == [INNER, INNER]
    assert dec.counts["received"] == 4 and dec.counts["ok"] == 2
    assert dec.counts["short_outer"] == 1 and dec.counts["short_inner"] == 1


def test_tep_addressing_and_marks():
    assert str(gre.tep_subnet(1)) == "198.18.1.0/29"
    assert str(gre.tep_router_ip(2)) == "198.18.2.1"
    assert str(gre.tep_lb_ip(2)) == "198.18.2.2"
    assert gre.mark_for(1) != gre.mark_for(2)
    with pytest.raises(ValueError):
        gre.tep_subnet(0)


def test_kernel_decap_commands_name_a_prefixed_device_and_every_vip():
    cmds = gre.kernel_decap_commands("10.101.0.11", ["10.101.0.100", "10.102.0.100"])
    assert cmds[0].startswith("ip link add lbg-gre type gre local 10.101.0.11")
    assert sum("dev lo" in c for c in cmds) == 2


def test_compiled_decapsulator_parses_exactly_as_the_python_one(tmp_path):
    """The C decapsulator (topologies/lblab_gredecap.c, what gre_decap userspace runs) and
    gredecap.parse(), its specification, agree on every packet of a corpus: the valid kinds,
    every malformation, and thousands of random mutations of valid packets."""
    import shutil
    import subprocess
    from topologies.system import REPO_ROOT
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to compile topologies/lblab_gredecap.c (make setup installs it)")
    binary = tmp_path / "lblab-gredecap"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary),
                    str(REPO_ROOT / "topologies" / "lblab_gredecap.c")], check=True)
    rng = random.Random(11)
    corpus = [b"", b"\x45", bytes(19)]
    for key, seq, checksum in [(None, None, False), (7, None, False), (None, 9, True),
                               (1, 2, True)]:
        corpus.append(build_gre(inner_packet(), key=key, seq=seq, checksum=checksum))
    for _ in range(4000):
        pkt = bytearray(rng.choice(corpus[3:7]))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(pkt))
            pkt[i] = rng.randrange(256) if rng.random() < 0.8 else pkt[i] ^ 0xFF
        if rng.random() < 0.2:
            pkt = pkt[:rng.randrange(len(pkt) + 1)]
        corpus.append(bytes(pkt))
    feed = b"".join(struct.pack("!I", len(p)) + p for p in corpus)
    out = subprocess.run([str(binary), "--selftest"], input=feed, capture_output=True,
                         check=True).stdout.decode().splitlines()
    assert len(out) == len(corpus)
    reasons = set()
    for packet, line in zip(corpus, out):
        off, length, reason = parse(packet)
        assert line == f"{off} {length} {reason or '-'}", packet.hex()
        reasons.add(reason)
    assert len(reasons) >= 8   # the corpus reaches most drop reasons, and ""
