"""One LB switch of the VIP balancer as a state machine: events in, what to send out. Pure.

After FAUCET's Valve (faucet/valve.py): the Ryu app (controller/vipapp.py) decodes events,
keeps the xid table and one lock, and sends; every decision is made here, where unit tests
drive whole lives against a fake flow table (tests/unit/test_vipswitch.py). A VipSwitch
holds one switch's config (VIPs, backends, the hosts on its segment), the computed VIP flows
it believes installed, the health checkers' view of the backends and per-backend counters.

Life of a switch, and what each event returns (a list of operations, sent in order):
- `connected()`: install the VIPs' select groups (EnsureGroups: create-or-modify, so a
  switch that kept them from a previous controller loses nothing), then read the switch's
  computed VIP flows (ReadVipFlows). Until they arrive
  nothing is computed against it (`installed` is None): a switch that reconnects may still
  hold every flow of the previous controller.
- `reply(request, result)`: the answer to one of the requests below. For ReadVipFlows, the
  diff that turns the flows found into the desired ones (vipflows.vip_diff: the L2 app's
  flows and learned connection entries are not in it, so established connections survive a
  controller restart; only the entries of backends that left their pool go, see `_sync`).
- `health_report(report)`, `poll()`, `update(vip, change)`, `packet_in(cookie, key)`.
`installed` is updated before an event returns, so the next event diffs against the
previous one's intent; the app must therefore send one event's operations completely before
computing the next one's (its apply lock: an interleaved send once left stale buckets).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Union

from controller import ofmsg, vipflows, viprest
from controller.flows import FlowDiff, FlowSpec, GroupSpec
from controller.hashing import FlowKey
from controller.vipconfig import SwitchConfig
from controller.vipmodel import Vip, choose_backend, uses_ct


# --- what to send --------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadVipFlows:
    """Flow stats request for every computed VIP flow (all tables): answered with
    reply(this, [(ReadBack, byte_count), ...])."""

    cookie: int = vipflows.COOKIE_VIP
    mask: int = vipflows.COOKIE_PREFIX_MASK


@dataclass(frozen=True)
class ReadBytes:
    """Flow stats request for one VIP's backend table: bytes per backend flow."""

    vip: str
    table: int
    cookie: int
    mask: int


@dataclass(frozen=True)
class CountConns:
    """Aggregate stats request: the learned connection entries of one backend of one VIP
    (exact cookie); answered with reply(this, flow_count)."""

    vip: str
    backend: str
    table: int
    cookie: int


@dataclass(frozen=True)
class CountCt:
    """Not an OpenFlow message: the app dumps the datapath's conntrack entries of `zone`
    (controller/ctcount.py) and answers with reply(this, [CtEntry, ...])."""

    zone: int


@dataclass(frozen=True)
class DeleteCookie:
    """OFPFC_DELETE in every table of the flows whose cookie matches under mask."""

    cookie: int
    mask: int


@dataclass(frozen=True)
class EnsureGroups:
    """Create or modify these groups (sent before any flow that points at them). Groups a
    VIP no longer uses are left in place: deleting a group deletes the flows that point at
    it, and an unused one costs nothing."""

    groups: tuple[GroupSpec, ...]


@dataclass(frozen=True)
class Resend:
    """Send the packet-in's packet back through the pipeline (after the flows it needs)."""


Request = Union[ReadVipFlows, ReadBytes, CountConns]
Op = Union[FlowDiff, DeleteCookie, EnsureGroups, Resend, ReadVipFlows, ReadBytes, CountConns,
           CountCt]
REQUESTS = (ReadVipFlows, ReadBytes, CountConns)


def messages(dp: Any, op: Op, in_port: int | None = None, data: bytes = b"") -> list:
    """The OpenFlow messages of one operation (controller/ofmsg.py), for the app and the
    tests alike; a request's xid is the sender's to set. `in_port` and `data`: the packet
    a Resend sends back."""
    if isinstance(op, FlowDiff):
        return ofmsg.diff_messages(dp, op)
    if isinstance(op, DeleteCookie):
        return [ofmsg.delete_by_cookie(dp, op.cookie, op.mask)]
    if isinstance(op, EnsureGroups):
        return [ofmsg.group_mod(dp, g) for g in op.groups]
    if isinstance(op, Resend):
        return [ofmsg.packet_out_to_table(dp, in_port, data)]
    if isinstance(op, ReadVipFlows):
        return [ofmsg.flow_stats_request(dp, op.cookie, op.mask)]
    if isinstance(op, ReadBytes):
        return [ofmsg.flow_stats_request(dp, op.cookie, op.mask, op.table)]
    if isinstance(op, CountConns):
        return [ofmsg.count_request(dp, op.table, op.cookie)]
    raise TypeError(f"unknown operation {op!r}")


def _counted_by_ct(vip: Vip) -> bool:
    """Connections counted from conntrack: a ct VIP, except leastload, whose learned
    counting entries (vipflows) stay its counters, read like the learn implementation's."""
    return uses_ct(vip) and vip.algorithm != "leastload"


class VipSwitch:
    def __init__(self, config: SwitchConfig, log: Callable[[str], Any] = lambda _: None):
        self.config = config
        self.log = log
        self.connected_now = False
        self.installed: list | None = None     # computed VIP flows now in the switch
        self.groups: dict[int, GroupSpec] = {}  # select groups sent since it connected
        self.health: dict[str, str] = {}       # backend ip -> up|down (health checker)
        self.health_seq: object = None
        self.stats: dict[str, dict[str, dict]] = {}   # vip -> backend -> connections, bytes

    @property
    def dpid(self) -> int:
        return self.config.dpid

    @property
    def dc(self) -> str:
        return self.config.dc

    @property
    def vips(self) -> dict[str, Vip]:
        return self.config.vips

    # -- desired state ----------------------------------------------------------------------
    def effective_vips(self) -> list[Vip]:
        """The VIPs as the flows see them: admin state combined with health."""
        return [viprest.effective(v, self.health) for v in self.vips.values()]

    def loads(self) -> dict[str, dict[str, int]]:
        """VIP -> backend -> active connections, as last counted in the switch."""
        return {v.name: {b: s.get("connections") or 0
                         for b, s in self.stats.get(v.name, {}).items()}
                for v in self.vips.values()}

    def desired(self) -> list[FlowSpec]:
        return vipflows.desired_flows(self.config.lb, self.effective_vips(), self.loads())

    def _groups(self) -> list[Op]:
        """EnsureGroups for the groups the desired flows need that were not sent as they are."""
        want = [g for g in vipflows.vip_groups(self.config.lb, self.effective_vips())
                if self.groups.get(g.group_id) != g]
        self.groups.update({g.group_id: g for g in want})
        return [EnsureGroups(tuple(want))] if want else []

    def _sync(self) -> list[Op]:
        """The diff from what is installed to what is desired; `installed` becomes the
        desired flows at once (see the module docstring).

        A backend whose backend-table flow goes has left its VIP's pool: its learned
        connection entries would lead nowhere for a whole idle timeout, so they are deleted
        and a reused 5-tuple re-hashes. Derived from the diff, this holds for a change made
        over REST and for one found at resync (a pool changed while the switch was away).
        The deletes follow the diff (which ends with a barrier): sent first, they would let
        a new connection hashing to a bucket that still names the backend learn a fresh
        entry in the meantime. A backend flow that goes because its VIP was renumbered
        (a new config across a controller restart) while the backend still serves some
        VIP keeps its entries: they match the 5-tuple only and still lead to it."""
        if self.installed is None:
            return []
        desired = self.desired()
        change = vipflows.vip_diff(self.installed, desired)
        self.installed = desired
        if change.empty:
            return []
        groups = self._groups()
        tables = self.config.lb.tables
        indexes = {v.index for v in self.vips.values()}
        serving = {b.ip for v in self.vips.values() for b in v.backends}
        gone = sorted({(index, ip) for index, ip in (
            t for t in (vipflows.backend_flow_target(f, tables) for f in change.delete)
            if t is not None) if index in indexes or ip not in serving})
        return groups + [change] + [DeleteCookie(vipflows.conn_cookie(index, ip),
                                                 vipflows.COOKIE_ALL) for index, ip in gone]

    # -- switch lifecycle -------------------------------------------------------------------
    def connected(self) -> list[Op]:
        self.connected_now = True
        self.installed = None
        self.groups = {}
        return [*self._groups(), ReadVipFlows()]

    def disconnected(self) -> None:
        self.connected_now = False
        self.installed = None
        self.groups = {}

    def reply(self, request: Request, result: Any) -> list[Op]:
        """The switch's answer to a request this switch asked for."""
        if isinstance(request, ReadVipFlows):
            return self.flows_read(flow for flow, _ in result)
        if isinstance(request, ReadBytes):
            self._bytes_read(request.vip, result)
        elif isinstance(request, CountConns):
            self.stats.setdefault(request.vip, {}).setdefault(
                request.backend, {})["connections"] = int(result)
        elif isinstance(request, CountCt):
            self._ct_counted(result)
        return []

    def _ct_counted(self, entries) -> None:
        """Open conntrack connections per backend of each ct VIP (by VIP address and mark)."""
        counts: dict[tuple[str, int], int] = {}
        for e in entries:
            if e.open:
                counts[(e.orig_dst, e.mark)] = counts.get((e.orig_dst, e.mark), 0) + 1
        for vip in self.vips.values():
            if not _counted_by_ct(vip):
                continue
            for b in vip.backends:
                self.stats.setdefault(vip.name, {}).setdefault(b.name, {})["connections"] = \
                    counts.get((vip.address, vipflows.ipv4_int(b.ip)), 0)

    def flows_read(self, flows: Iterable[Any]) -> list[Op]:
        """The switch's actual computed VIP flows (after connected()) -> what to send."""
        self.installed = [f for f in flows if vipflows.is_computed(f.cookie)]
        self.log(f"switch {self.dpid:016x}: {len(self.installed)} VIP flows found, "
                 "resynchronising")
        return self._sync()

    def _bytes_read(self, vip_name: str, entries: Iterable[tuple[Any, int]]) -> None:
        vip = self.vips.get(vip_name)
        if vip is None:
            return
        by_address = {b.ip: b.name for b in vip.backends}
        for flow, byte_count in entries:
            target = vipflows.backend_flow_target(flow, self.config.lb.tables)
            name = by_address.get(target[1]) if target and target[0] == vip.index else None
            if name is not None:
                self.stats.setdefault(vip_name, {}).setdefault(name, {})["bytes"] = byte_count

    # -- inputs -----------------------------------------------------------------------------
    def health_report(self, report: dict) -> list[Op]:
        """A health checker's state file ({"seq": n, "backends": {ip: up|down}}); a report
        already seen (same seq) changes nothing."""
        seq = report.get("seq")
        if seq == self.health_seq:
            return []
        self.health_seq = seq
        self.health = dict(report.get("backends", {}))
        self.log(f"health {self.dc}: {self.health}")
        return self._sync()

    def poll(self) -> list[Op]:
        """Every stats interval: count each backend's connections and bytes; a leastload
        VIP also gets its bucket table rebuilt from the latest counts (new connections
        only: learned ones keep their backend)."""
        if not self.connected_now:
            return []
        tables = self.config.lb.tables
        ops: list[Op] = []
        if any(_counted_by_ct(v) for v in self.vips.values()):
            ops.append(CountCt(self.config.lb.ct_zone))
        for vip in self.vips.values():
            if not _counted_by_ct(vip):
                ops += [CountConns(vip.name, b.name, tables.conn,
                                   vipflows.conn_cookie(vip.index, b.ip))
                        for b in vip.backends]
            ops.append(ReadBytes(vip.name, tables.backend, vipflows.vip_cookie_prefix(vip.index),
                                 vipflows.COOKIE_VIP_MASK))
        if any(v.algorithm == "leastload" for v in self.vips.values()):
            ops += self._sync()
        return ops

    def update(self, vip_name: str, change: Callable[[SwitchConfig, Vip], Vip]) -> list[Op]:
        """A REST change of one VIP: compute the new VIP, validate the whole switch state
        (viprest.BadRequest, and nothing changes), then commit. Connection entries of
        removed backends go with them (_sync)."""
        return self.commit(self.prepare(vip_name, change))

    def prepare(self, vip_name: str, change: Callable[[SwitchConfig, Vip], Vip]) -> dict:
        """The switch's VIPs after a change, validated (viprest.BadRequest); nothing changes
        yet: the app prepares a change on every LB of a tier before committing any."""
        candidate = dict(self.vips)
        candidate[vip_name] = change(self.config, self.vips[vip_name])
        viprest.checked(self.config, candidate)
        return candidate

    def commit(self, candidate: dict) -> list[Op]:
        self.config.vips = candidate
        return self._sync()

    def packet_in(self, cookie: int, key: FlowKey | None) -> list[Op]:
        """Reactive mode: a new connection's first packet, sent up by a VIP's select flow.
        The controller picks the backend and installs the entry a learn would have made."""
        index = vipflows.cookie_vip_index(cookie)
        if key is None or not vipflows.is_computed(cookie):
            return []
        vip = next((v for v in self.effective_vips() if v.index == index), None)
        if vip is None:
            return []
        backend = choose_backend(vip, key, self.loads().get(vip.name))
        if backend is None:
            return []  # no backend up: the client's SYN times out, as on a real LB
        entry = vipflows.reactive_flows(vip, key, backend, self.config.lb.tables)
        return [FlowDiff(add=tuple(entry)), Resend()]

    # -- REST views -------------------------------------------------------------------------
    def describe(self, vip_name: str) -> dict:
        vip = self.vips[vip_name]
        return viprest.describe(vip, self.health, self.stats.get(vip.name, {}),
                                self.loads().get(vip.name, {}))
