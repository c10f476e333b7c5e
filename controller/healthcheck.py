"""Backend health checks from inside the emulated network (run in the DC router's namespace).

Each backend is probed with a TCP connect every `interval` seconds; `fall` consecutive
failures mark it down, `rise` successes bring it back (so one lost SYN does not flap it).
State changes are written atomically to a JSON file that the VIP app polls: files cross
network namespaces, the controller's loopback REST port does not.
Run: python -m controller.healthcheck --out FILE --target IP:PORT [--target ...]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass


@dataclass
class Tracker:
    """fall/rise hysteresis for one backend. Starts up: a pool is usable at once, and a dead
    backend is found within fall * interval."""

    fall: int = 2
    rise: int = 2
    up: bool = True
    streak: int = 0

    def observe(self, ok: bool) -> bool:
        """Feed one probe result; return True when the state changed."""
        if ok == self.up:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.rise if ok else self.fall):
            self.up, self.streak = ok, 0
            return True
        return False


def probe(ip: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def write_state(path: str, states: dict[str, bool], seq: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump({"seq": seq, "time": time.time(),
                   "backends": {ip: "up" if up else "down" for ip, up in states.items()}}, fh)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--target", action="append", required=True, help="IP:PORT")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=0.4)
    parser.add_argument("--fall", type=int, default=2)
    parser.add_argument("--rise", type=int, default=2)
    args = parser.parse_args(argv)
    targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in args.target]
    trackers = {ip: Tracker(args.fall, args.rise) for ip, _ in targets}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    seq = 0
    write_state(args.out, {ip: t.up for ip, t in trackers.items()}, seq)
    while True:
        started = time.monotonic()
        changed = False
        for ip, port in targets:
            changed |= trackers[ip].observe(probe(ip, port, args.timeout))
        if changed:
            seq += 1
            write_state(args.out, {ip: t.up for ip, t in trackers.items()}, seq)
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
