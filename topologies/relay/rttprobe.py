"""ICMP echo RTT probe with microsecond resolution (standalone script, stdlib only).

Why not `ping`: iputils ping prints per-packet RTTs with 3 significant digits (100 ms -> "100"),
too coarse to check a relay against a 0.5 ms target, and gives no median. This sends echo
requests on a raw socket and timestamps replies with the kernel receive time (SO_TIMESTAMPNS),
so Python's own scheduling hardly affects the result.

Run inside a namespace:  ip netns exec NS python3 rttprobe.py DST --count N --interval S
Prints one JSON object: {"dst":..., "sent": N, "rtts_ms": [float|null, ...]} (null = lost).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def probe(dst: str, count: int, interval: float, timeout: float = 2.0, size: int = 56) -> list:
    """RTTs in ms per echo request (None when no reply arrived within timeout)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    sent_at: dict[int, int] = {}
    rtts: list = [None] * count
    t0 = time.monotonic()
    seq = 0
    last_send = None
    while True:
        now = time.monotonic()
        if seq < count and now >= t0 + seq * interval:
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
            pkt = struct.pack("!BBHHH", 8, 0, _csum(hdr + payload), ident, seq & 0xFFFF) + payload
            sent_at[seq] = time.time_ns()
            sock.sendto(pkt, (dst, 0))
            seq += 1
            last_send = time.monotonic()
            continue
        if seq >= count and (last_send is None or now > last_send + timeout
                             or all(r is not None for r in rtts)):
            break
        wait = (t0 + seq * interval - now) if seq < count else (last_send + timeout - now)
        r, _, _ = select.select([sock], [], [], max(0.0, wait))
        if not r:
            continue
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(65535, 64)
            except BlockingIOError:
                break
            rx = None
            for level, typ, val in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", val[:16])
                    rx = sec * 1_000_000_000 + nsec
            rx = rx or time.time_ns()
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8:
                continue
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ != 0 or rid != ident:
                continue
            # map 16-bit seq back to the latest matching request
            for s in range(rseq, count, 65536):
                if s in sent_at and rtts[s] is None:
                    rtts[s] = (rx - sent_at[s]) / 1e6
                    break
    sock.close()
    return rtts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dst")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--start-at", type=float, default=None, metavar="UNIX_TIME",
                    help="wait until this wall-clock time before the first echo, so probes "
                         "started together do not measure each other's start-up")
    a = ap.parse_args(argv)
    if a.start_at is not None:
        time.sleep(max(0.0, a.start_at - time.time()))
    rtts = probe(a.dst, a.count, a.interval, a.timeout, a.size)
    json.dump({"dst": a.dst, "sent": a.count, "rtts_ms": rtts}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
