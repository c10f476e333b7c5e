"""Connections per backend from the datapath's conntrack, for VIPs whose connection table is
conntrack (vipmodel.uses_ct): `ovs-appctl dpctl/dump-conntrack zone=Z` lines parsed here
(pure); the VIP app runs the command. An entry names its VIP by the original destination and
its backend by ct_mark (the backend's IPv4 address, controller/vipflows.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass

# TCP states of a connection that is over (it lingers in the table for its timeout)
FINISHED = frozenset({"TIME_WAIT", "CLOSED", "CLOSE", "CLOSING", "LAST_ACK"})

_ORIG = re.compile(r"orig=\(src=([^,]+),dst=([^,]+),")
_MARK = re.compile(r"\bmark=(\d+)")
_ZONE = re.compile(r"\bzone=(\d+)")
_STATE = re.compile(r"protoinfo=\(state=([A-Z_]+)")


@dataclass(frozen=True)
class CtEntry:
    zone: int
    orig_dst: str
    mark: int
    state: str

    @property
    def open(self) -> bool:
        return self.state not in FINISHED


def parse(text: str) -> list[CtEntry]:
    """dump-conntrack output -> TCP entries (other protocols and odd lines skipped)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("tcp,"):
            continue
        orig = _ORIG.search(line)
        if orig is None:
            continue
        mark, zone, state = _MARK.search(line), _ZONE.search(line), _STATE.search(line)
        out.append(CtEntry(int(zone.group(1)) if zone else 0, orig.group(2),
                           int(mark.group(1)) if mark else 0,
                           state.group(1) if state else ""))
    return out


def command(zone: int) -> list[str]:
    return ["ovs-appctl", "dpctl/dump-conntrack", f"zone={zone}"]
