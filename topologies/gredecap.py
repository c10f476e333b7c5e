"""Userspace GRE decapsulator for a backend host whose kernel has no ip_gre (`gre_decap:
userspace`).

Runs inside one backend's network namespace (started by lab/gre.py, one process per
backend): a raw IPv4 socket for IP protocol 47 receives every GRE packet addressed to the
host (no kernel module needed), `parse()` strips the outer IPv4 header and the GRE header
(RFC 2784/2890: optional checksum, key and sequence number fields), and the inner IPv4 packet
is written to a TUN device (IFF_TUN | IFF_NO_PI, name `lbg-tun`), where the kernel receives
it as if it had arrived on that interface: the VIP sits on `lo`, rp_filter is off, so the
local server answers and its reply leaves by the ordinary default route (direct return).

Anything that is not a well-formed GRE-in-IPv4 packet carrying IPv4 is dropped and counted
by reason, never a crash. Counters (and the process's own CPU time) go to `--stats` as one
JSON object on SIGUSR1 and on exit.

Run (inside the backend): python -m topologies.gredecap --tun lbg-tun --stats FILE
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import time
from collections import Counter

IPPROTO_GRE = 47
ETH_P_IP = 0x0800
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
TUN_NAME = "lbg-tun"
BUF_SIZE = 65535

# GRE flag bits (first 16 bits of the header)
GRE_C = 0x8000   # checksum present (+4 bytes: checksum, reserved1)
GRE_R = 0x4000   # routing present (RFC 1701, deprecated: never produced by OVS)
GRE_K = 0x2000   # key present (+4)
GRE_S = 0x1000   # sequence number present (+4)
GRE_SSR = 0x0800  # strict source route (RFC 1701)
GRE_RECUR = 0x0700
GRE_VERSION = 0x0007

DROP_REASONS = ("short_outer", "not_ipv4_outer", "bad_outer_ihl", "outer_fragment",
                "not_gre", "short_gre", "gre_version", "gre_routing", "gre_reserved",
                "gre_checksum", "not_ipv4_inner", "short_inner", "bad_inner")


def internet_checksum(data: bytes | memoryview) -> int:
    """RFC 1071 ones'-complement sum, folded and complemented (0 when a packet that carries
    its own checksum is intact)."""
    b = bytes(data)
    if len(b) % 2:
        b += b"\0"
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse(packet: bytes | bytearray | memoryview, n: int | None = None,
          verify_checksum: bool = True) -> tuple[int, int, str]:
    """Locate the inner IPv4 packet in an outer IPv4+GRE packet (as a raw socket returns it).

    Returns (offset, length, "") of the inner packet, or (0, 0, reason) when it must be
    dropped; `reason` is one of DROP_REASONS. Never raises on any input."""
    n = len(packet) if n is None else n
    if n < 20:
        return 0, 0, "short_outer"
    b0 = packet[0]
    if b0 >> 4 != 4:
        return 0, 0, "not_ipv4_outer"
    ihl = (b0 & 0x0F) * 4
    if ihl < 20 or ihl > n:
        return 0, 0, "bad_outer_ihl"
    frag = (packet[6] << 8) | packet[7]
    if frag & 0x3FFF:            # MF set or a fragment offset: the kernel reassembles first,
        return 0, 0, "outer_fragment"   # so this is never a whole packet
    if packet[9] != IPPROTO_GRE:
        return 0, 0, "not_gre"
    total = (packet[2] << 8) | packet[3]
    end = min(n, total) if total >= ihl else n
    g = ihl
    if end - g < 4:
        return 0, 0, "short_gre"
    flags = (packet[g] << 8) | packet[g + 1]
    proto = (packet[g + 2] << 8) | packet[g + 3]
    if flags & GRE_VERSION:
        return 0, 0, "gre_version"
    if flags & GRE_R:
        return 0, 0, "gre_routing"
    if flags & (GRE_SSR | GRE_RECUR | 0x00F8):
        return 0, 0, "gre_reserved"
    hlen = 4 + 4 * bool(flags & GRE_C) + 4 * bool(flags & GRE_K) + 4 * bool(flags & GRE_S)
    if end - g < hlen:
        return 0, 0, "short_gre"
    if flags & GRE_C and verify_checksum:
        if internet_checksum(memoryview(packet)[g:end]) != 0:
            return 0, 0, "gre_checksum"
    if proto != ETH_P_IP:
        return 0, 0, "not_ipv4_inner"
    off = g + hlen
    length = end - off
    if length < 20:
        return 0, 0, "short_inner"
    ib0 = packet[off]
    inner_total = (packet[off + 2] << 8) | packet[off + 3]
    if ib0 >> 4 != 4 or (ib0 & 0x0F) < 5 or inner_total < (ib0 & 0x0F) * 4 \
            or inner_total > length:
        return 0, 0, "bad_inner"
    return off, inner_total, ""


def build_gre(inner: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2", key: int | None = None,
              seq: int | None = None, checksum: bool = False, proto: int = ETH_P_IP,
              flags_extra: int = 0) -> bytes:
    """An outer IPv4 + GRE packet around `inner` (for tests and the self-check)."""
    flags = flags_extra
    opt = b""
    if checksum:
        flags |= GRE_C
    if key is not None:
        flags |= GRE_K
    if seq is not None:
        flags |= GRE_S
    if key is not None:
        opt += struct.pack("!I", key)
    if seq is not None:
        opt += struct.pack("!I", seq)
    if checksum:
        body = struct.pack("!HH", flags, proto) + b"\0\0\0\0" + opt + inner
        csum = internet_checksum(body)
        gre = struct.pack("!HHHH", flags, proto, csum, 0) + opt
    else:
        gre = struct.pack("!HH", flags, proto) + opt
    total = 20 + len(gre) + len(inner)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, IPPROTO_GRE, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:]
    return hdr + gre + inner


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


class Decapsulator:
    def __init__(self, tun: str, stats_path: str | None, verify_checksum: bool = True):
        self.tun_name = tun
        self.stats_path = stats_path
        self.verify = verify_checksum
        self.counts: Counter = Counter()
        self.bytes_out = 0
        self.started = time.monotonic()
        self.stop = False
        self.seq = 0    # stats written so far: a reader that asked for fresh ones waits for it

    def write_stats(self) -> None:
        if not self.stats_path:
            return
        t = os.times()
        self.seq += 1
        data = {"pid": os.getpid(), "tun": self.tun_name, "seq": self.seq,
                "received": self.counts["received"], "decapsulated": self.counts["ok"],
                "inner_bytes": self.bytes_out,
                "dropped": {r: self.counts[r] for r in DROP_REASONS if self.counts[r]},
                "write_errors": self.counts["write_error"],
                "cpu_s": round(t.user + t.system, 3),
                "wall_s": round(time.monotonic() - self.started, 3)}
        tmp = f"{self.stats_path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.stats_path)

    def run(self, ready=None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        fd = open_tun(self.tun_name)
        if ready:
            ready()
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        counts = self.counts
        write = os.write
        while not self.stop:
            try:
                n = sock.recv_into(buf)
            except InterruptedError:
                continue
            except OSError:
                if self.stop:
                    break
                raise
            counts["received"] += 1
            off, length, reason = parse(buf, n, self.verify)
            if reason:
                counts[reason] += 1
                continue
            try:
                write(fd, mv[off:off + length])
            except OSError:
                counts["write_error"] += 1
                continue
            counts["ok"] += 1
            self.bytes_out += length


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tun", default=TUN_NAME)
    ap.add_argument("--stats", default=None, help="JSON counters file (SIGUSR1, exit)")
    ap.add_argument("--mtu", type=int, default=1500, help="MTU of the TUN device")
    ap.add_argument("--no-verify-checksum", action="store_true")
    args = ap.parse_args(argv)
    dec = Decapsulator(args.tun, args.stats, not args.no_verify_checksum)

    def on_term(signum, frame):
        dec.stop = True
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda s, f: dec.write_stats())

    def ready():
        # The device exists once TUNSETIFF returned: bring it up, relax reverse-path checks.
        os.system(f"ip link set dev {args.tun} mtu {args.mtu} up && "
                  f"sysctl -qw net.ipv4.conf.{args.tun}.rp_filter=0 "
                  f"net.ipv4.conf.all.rp_filter=0 net.ipv6.conf.{args.tun}.disable_ipv6=1")
        dec.write_stats()

    try:
        dec.run(ready)
    finally:
        dec.write_stats()
    return 0


if __name__ == "__main__":
    sys.exit(main())
