"""Pure decisions of lblab's base L2 app: MAC learning per switch, and the flows it installs
(in the flow IR of controller/flows.py), forwarding in the switch.

Two tables, so that no data packet ever has to be re-sent by the controller:
  table 0 (SRC_TABLE): a known (in_port, eth_src) goes on to table 1; anything else is
      copied to the controller (headers only) *and* goes on to table 1;
  table 1 (DST_TABLE): a known eth_dst is output to its port; anything else is flooded.
The switch forwards every packet itself. This matters on the userspace datapath: a TCP
segment with checksum offload pending, sent to the controller and packet-out back, arrives
with a bad checksum and is dropped (the first SYN of every new pair then waits 1 s for its
retransmission). Every flow carries BASE_COOKIE at priority <= L2_PRIORITY, which is what
the VIP app's flows are placed above (controller/vipflows.py states the contract; the unit
tests run both apps' flows in one fake table). Kept free of Ryu so it is unit-tested
without a switch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from controller.flows import FLOOD, Controller, FlowSpec, Goto, Output, make_flow

# Cookie of every flow the base app installs; the runner's readiness check looks for it.
BASE_COOKIE = 0x1B1AB00000000000
SRC_TABLE = 0
DST_TABLE = 1
L2_PRIORITY = 10
TABLE_MISS_PRIORITY = 0
PACKET_IN_BYTES = 128  # headers are all the app needs


@dataclass(frozen=True)
class Learn:
    """Install: table 0 in_port+eth_src -> table 1, and table 1 eth_dst -> out port.
    `moved_from` is the previous port when a station moved (its old table-0 flow goes)."""

    mac: str
    port: int
    moved_from: int | None = None


@dataclass
class MacTables:
    """MAC -> port per datapath id (one int type for dpids everywhere)."""

    by_dpid: dict[int, dict[str, int]] = field(default_factory=dict)

    def packet_in(self, dpid: int, in_port: int, src: str) -> Learn | None:
        if is_group(src):
            return None
        table = self.by_dpid.setdefault(dpid, {})
        old = table.get(src)
        if old == in_port:
            return None  # already known: a copy raced the flow install
        table[src] = in_port
        return Learn(src, in_port, moved_from=old)

    def forget(self, dpid: int) -> None:
        self.by_dpid.pop(dpid, None)


def is_group(mac: str) -> bool:
    """Broadcast/multicast MACs have the low bit of the first octet set."""
    return int(mac.split(":")[0], 16) & 1 == 1


def table_miss_flows() -> list[FlowSpec]:
    """Installed when a switch connects. A restarted controller keeps the switch's learned
    flows (traffic keeps flowing) and relearns into empty tables; re-adding an identical
    flow replaces it, so nothing is duplicated."""
    return [make_flow(SRC_TABLE, TABLE_MISS_PRIORITY, {},
                      [Controller(PACKET_IN_BYTES), Goto(DST_TABLE)], cookie=BASE_COOKIE),
            make_flow(DST_TABLE, TABLE_MISS_PRIORITY, {}, [Output(FLOOD)],
                      cookie=BASE_COOKIE)]


def source_flow(mac: str, port: int) -> FlowSpec:
    return make_flow(SRC_TABLE, L2_PRIORITY, {"in_port": port, "eth_src": mac},
                     [Goto(DST_TABLE)], cookie=BASE_COOKIE)


def learn_flows(learn: Learn) -> tuple[list[FlowSpec], list[FlowSpec]]:
    """(flows to delete strictly, flows to add, in order) for one learnt station: the old
    source flow of a station that moved goes; then the destination flow first, so the
    station is reachable before its source flow stops the copies to the controller."""
    delete = [source_flow(learn.mac, learn.moved_from)] if learn.moved_from is not None else []
    add = [make_flow(DST_TABLE, L2_PRIORITY, {"eth_dst": learn.mac}, [Output(learn.port)],
                     cookie=BASE_COOKIE),
           source_flow(learn.mac, learn.port)]
    return delete, add
