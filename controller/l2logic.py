"""Pure decisions of lblab's base L2 app: MAC learning per switch.

Kept free of Ryu so it is unit-tested without a switch; the Ryu glue (l2app.py) only turns
the returned decisions into OpenFlow messages.
"""
from __future__ import annotations

from dataclasses import dataclass, field

FLOOD = "flood"
# Cookie of every flow the base app installs; the runner's readiness check looks for it.
BASE_COOKIE = 0x1B1AB00000000000
L2_PRIORITY = 10
TABLE_MISS_PRIORITY = 0


@dataclass(frozen=True)
class Forward:
    """Send the packet out `out_port` (or FLOOD); `install` says whether a flow is worth
    installing (only when the destination is known, so later packets skip the controller)."""

    out_port: int | str
    install: bool


@dataclass
class MacTables:
    """MAC -> port per datapath id (one int type for dpids everywhere)."""

    by_dpid: dict[int, dict[str, int]] = field(default_factory=dict)

    def packet_in(self, dpid: int, in_port: int, src: str, dst: str) -> Forward:
        table = self.by_dpid.setdefault(dpid, {})
        if not _is_group(src):
            table[src] = in_port
        out = table.get(dst)
        if out is None or _is_group(dst):
            return Forward(FLOOD, install=False)
        if out == in_port:
            # Would hairpin: the learned location is stale; flood to relearn.
            return Forward(FLOOD, install=False)
        return Forward(out, install=True)

    def forget(self, dpid: int) -> None:
        self.by_dpid.pop(dpid, None)


def _is_group(mac: str) -> bool:
    """Broadcast/multicast MACs have the low bit of the first octet set."""
    return int(mac.split(":")[0], 16) & 1 == 1
