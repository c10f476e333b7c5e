"""A small OpenFlow table simulator for the flow IR (controller/flows.py), after FAUCET's
clib/fakeoftable.py. Test support, not shipped code.

Unit tests install the computed flows of both apps here (the L2 app's and the VIP app's) and
ask "where does this packet go, with which headers?" without a switch. It executes what
lblab's flows use: matches with IPv4 prefixes, output (IN_PORT and FLOOD included),
controller, set_field, move (whole fields or low bits), multipath (with the model hash of
controller.hashing, not OVS's), select groups of one bucket that compute dp_hash first (the
model hash again; a group that was never installed is an error, as OVS refuses the flow),
resubmit with the Nicira semantics (register changes persist, a miss is a no-op),
goto_table, learn (adds an exact flow to the target table; fin_idle_timeout is not
modelled, idle and hard timeouts are, through `expire(now)`), and ct with a small model of
the datapath's connection tracker: per zone, committed connections by original and reply
5-tuple; +new until the first reply, then +est (+rpl for replies); ct_mark; a commit's
destination NAT and its reverse on replies when the lookup asks for nat (TCP states and
timeouts are not modelled). `read_back()` answers a flow
stats request the way a switch does: table, priority, match and cookie, no actions.

Like FAUCET's, it refuses ambiguous tables: two different flows with the same priority that
one packet could both match raise FakeOFTableError, since a real switch would pick either.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller import hashing
from controller.flows import (CT_STATE_BITS, FLOOD, IN_PORT, Controller, Ct, FlowDiff,
                              FlowSpec, Goto, Group, GroupSpec, Learn, Move, Multipath,
                              Output, ReadBack,
                              Resubmit, SetField, ct_state_bits, make_flow, normalize_match)

MAX_RESUBMIT_DEPTH = 64  # OVS's limit on nested resubmits
CONTROLLER = "CONTROLLER"


class FakeOFTableError(Exception):
    """An inconsistent table or pipeline (overlap, resubmit loop)."""


@dataclass(frozen=True)
class Out:
    """One packet leaving the switch: the port (or CONTROLLER) and its header fields at
    that moment (registers omitted)."""

    port: Any
    fields: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


@dataclass
class Entry:
    spec: FlowSpec
    packets: int = 0
    installed: float = 0.0
    last_used: float = 0.0


class _Group:
    """Flows of one table with the same priority and the same matched fields (exact or
    prefix): indexed by their exact values, so 60k bucket flows stay fast to search."""

    def __init__(self, priority: int, signature: tuple[tuple[str, bool], ...]) -> None:
        self.priority = priority
        self.signature = signature
        self.exact = tuple(k for k, pfx in signature if not pfx)
        self.prefix = tuple(k for k, pfx in signature if pfx)
        self.index: dict[tuple, list[Entry]] = {}

    def key_of(self, values: Mapping[str, Any]) -> tuple:
        return tuple(values.get(k) for k in self.exact)

    def entries(self) -> list[Entry]:
        return [e for bucket in self.index.values() for e in bucket]


def _signature(spec: FlowSpec) -> tuple[tuple[str, bool], ...]:
    """(field, not indexable): prefixes and ct_state flags are checked one by one."""
    return tuple((k, k == "ct_state" or (isinstance(v, str) and "/" in v))
                 for k, v in spec.match)


@dataclass
class Conn:
    """A committed connection of the fake tracker."""

    orig: tuple
    reply: tuple
    mark: int = 0
    nat_dst: str | None = None
    orig_dst: str | None = None
    replied: bool = False


def _five_tuple(pkt: Mapping[str, Any]) -> tuple:
    return (pkt.get("ipv4_src"), pkt.get("tcp_src"), pkt.get("ipv4_dst"), pkt.get("tcp_dst"),
            pkt.get("ip_proto"))


@dataclass
class Trace:
    outputs: list[Out] = field(default_factory=list)
    hits: list[FlowSpec] = field(default_factory=list)   # every flow executed, in order
    misses: list[int] = field(default_factory=list)      # tables where nothing matched
    learned: list[FlowSpec] = field(default_factory=list)


def _field_matches(name: str, want: Any, have: Any) -> bool:
    if name == "ct_state":
        value, mask = ct_state_bits(want)
        return (have or 0) & mask == value
    if have is None:
        return False
    if isinstance(want, str) and "/" in want:
        return ipaddress.IPv4Address(have) in ipaddress.IPv4Network(want)
    if isinstance(want, str):
        return want.lower() == str(have).lower()
    return want == have


def _values_overlap(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str) and ("/" in a or "/" in b):
        na, nb = ipaddress.IPv4Network(a), ipaddress.IPv4Network(b)
        return na.overlaps(nb)
    return str(a).lower() == str(b).lower() if isinstance(a, str) else a == b


def _ct_states_overlap(a: str, b: str) -> bool:
    (va, ma), (vb, mb) = ct_state_bits(a), ct_state_bits(b)
    return (va ^ vb) & ma & mb == 0


def overlaps(x: FlowSpec, y: FlowSpec) -> bool:
    """Could one packet match both (fields absent from a match are wildcards)?"""
    mx, my = x.match_dict, y.match_dict
    return all(_ct_states_overlap(mx[k], my[k]) if k == "ct_state" else
               _values_overlap(mx[k], my[k]) for k in mx.keys() & my.keys())


class FakeOFTable:
    """Flow tables of one switch: apply specs, then lookup packets."""

    def __init__(self) -> None:
        self._groups: dict[int, list[_Group]] = {}            # table -> by priority desc
        self._by_id: dict[tuple, tuple[_Group, Entry]] = {}
        self._conns: dict[tuple, tuple[Conn, bool]] = {}      # (zone, 5-tuple) -> (conn, reply?)
        self.groups: dict[int, GroupSpec] = {}

    def apply_vips(self, switch, vips, loads=None, now: float = 0.0) -> None:
        """Install what the VIP app installs for these VIPs: their groups, then their flows."""
        from controller import vipflows
        self.add_vip_groups(switch, vips)
        self.apply(vipflows.desired_flows(switch, list(vips), loads), now)

    def add_vip_groups(self, switch, vips) -> None:
        """The VIPs' select groups (vipflows.vip_groups), as the app sends them."""
        from controller import vipflows
        for g in vipflows.vip_groups(switch, list(vips)):
            self.add_group(g)

    def add_group(self, group: GroupSpec) -> None:
        """A group mod with OVS's ADD_OR_MOD: create or replace."""
        if len(group.buckets) != 1:
            raise FakeOFTableError(f"only one-bucket select groups are modelled: {group}")
        self.groups[group.group_id] = group

    def conntrack(self, zone: int | None = None) -> list[Conn]:
        """Committed connections (of one zone), like `ovs-appctl dpctl/dump-conntrack`."""
        return [c for (z, _), (c, rpl) in self._conns.items()
                if not rpl and (zone is None or z == zone)]

    def flush_conntrack(self) -> None:
        self._conns.clear()

    # --- table maintenance -----------------------------------------------------------------
    def add(self, spec: FlowSpec, now: float = 0.0) -> None:
        """OFPFC_ADD: replaces a flow with the same table/priority/match; refuses a flow that
        overlaps another at the same priority."""
        if spec.identity in self._by_id:
            self._remove(spec.identity)
        groups = self._groups.setdefault(spec.table, [])
        sig = _signature(spec)
        home = None
        for g in groups:
            if g.priority != spec.priority:
                continue
            if g.signature == sig:
                home = g
                others = g.index.get(g.key_of(spec.match_dict), [])
            else:
                others = g.entries()
            for e in others:
                if overlaps(e.spec, spec):
                    raise FakeOFTableError(f"overlapping flows at priority {spec.priority}:"
                                           f"\n  {e.spec}\n  {spec}")
        if home is None:
            home = _Group(spec.priority, sig)
            groups.append(home)
            groups.sort(key=lambda g: -g.priority)
        entry = Entry(spec, installed=now, last_used=now)
        home.index.setdefault(home.key_of(spec.match_dict), []).append(entry)
        self._by_id[spec.identity] = (home, entry)

    def _remove(self, identity: tuple) -> None:
        found = self._by_id.pop(identity, None)
        if found is None:
            return
        g, e = found
        k = g.key_of(e.spec.match_dict)
        g.index[k].remove(e)
        if not g.index[k]:
            del g.index[k]

    def apply(self, specs: Iterable[FlowSpec], now: float = 0.0) -> None:
        for s in specs:
            self.add(s, now)

    def delete_strict(self, spec: Any) -> None:
        """OFPFC_DELETE_STRICT of a FlowSpec or anything with table, priority, match."""
        self._remove((spec.table, spec.priority, normalize_match(spec.match)))

    def delete_cookie(self, cookie: int, mask: int = 0xFFFFFFFFFFFFFFFF) -> int:
        """OFPFC_DELETE by cookie/mask in all tables; returns how many went."""
        gone = [i for i, (_, e) in self._by_id.items() if e.spec.cookie & mask == cookie & mask]
        for i in gone:
            self._remove(i)
        return len(gone)

    def apply_diff(self, d: FlowDiff, now: float = 0.0) -> None:
        """As the glue sends it: adds and modifies as ADD, then strict deletes."""
        self.apply(d.add, now)
        self.apply(d.modify, now)
        for f in d.delete:
            self.delete_strict(f)

    def expire(self, now: float) -> int:
        """Drop flows whose idle or hard timeout has passed; returns how many."""
        gone = []
        for i, (_, e) in self._by_id.items():
            s = e.spec
            if (s.idle_timeout and now - e.last_used >= s.idle_timeout) or \
                    (s.hard_timeout and now - e.installed >= s.hard_timeout):
                gone.append(i)
        for i in gone:
            self._remove(i)
        return len(gone)

    def flows(self, table: int | None = None, cookie: int | None = None,
              mask: int = 0xFFFFFFFFFFFFFFFF) -> list[FlowSpec]:
        """Installed flows (like a flow stats reply), optionally by table and cookie/mask;
        ordered by table, then priority (highest first)."""
        out = [e.spec for _, e in self._by_id.values()
               if (table is None or e.spec.table == table)
               and (cookie is None or e.spec.cookie & mask == cookie & mask)]
        return sorted(out, key=lambda f: (f.table, -f.priority, f.match))

    def read_back(self, cookie: int = 0, mask: int = 0) -> list[ReadBack]:
        """The flows a flow stats request with this cookie/mask returns, as a switch
        reports them (controller/ofmsg.read_back's type)."""
        return [ReadBack(f.table, f.priority, f.match, f.cookie)
                for f in self.flows(cookie=cookie, mask=mask)]

    def packets(self, spec: FlowSpec) -> int:
        """Packet counter of an installed flow."""
        return self._by_id[spec.identity][1].packets

    def __str__(self) -> str:
        from controller.ofctl import to_ofctl
        return "\n".join(to_ofctl(f) for f in self.flows())

    # --- packet processing -----------------------------------------------------------------
    def trace(self, packet: Mapping[str, Any], now: float = 0.0) -> Trace:
        """Run a packet through the pipeline from table 0 (learn side effects included)."""
        pkt = {k: (v.lower() if isinstance(v, str) else v) for k, v in packet.items()}
        for r in range(8):
            pkt.setdefault(f"reg{r}", 0)   # OVS zeroes registers for every packet
        pkt.setdefault("ct_state", 0)      # and a packet starts untracked
        pkt.setdefault("ct_mark", 0)
        pkt.setdefault("dp_hash", 0)       # 0: not computed yet
        tr = Trace()
        self._run_table(0, pkt, tr, now, depth=0)
        return tr

    def lookup(self, packet: Mapping[str, Any], now: float = 0.0) -> list[Out]:
        """Where does this packet go? The packets that leave, with their headers."""
        return self.trace(packet, now).outputs

    def _match(self, table_id: int, pkt: Mapping[str, Any]) -> Entry | None:
        for g in self._groups.get(table_id, []):
            for e in g.index.get(g.key_of(pkt), ()):
                if all(_field_matches(k, v, pkt.get(k)) for k, v in e.spec.match):
                    return e   # no overlaps at one priority: the first match is the match
        return None

    def _run_table(self, table_id: int, pkt: dict, tr: Trace, now: float, depth: int) -> None:
        if depth > MAX_RESUBMIT_DEPTH:
            raise FakeOFTableError(f"resubmit depth > {MAX_RESUBMIT_DEPTH}: a loop")
        e = self._match(table_id, pkt)
        if e is None:
            tr.misses.append(table_id)   # table-miss: nothing (lblab tables have no-op misses)
            return
        e.packets += 1
        e.last_used = now
        tr.hits.append(e.spec)
        for a in e.spec.actions:
            self._exec(a, pkt, tr, now, depth)

    def _exec(self, a: Any, pkt: dict, tr: Trace, now: float, depth: int) -> None:
        if isinstance(a, Output):
            if a.port == FLOOD:
                tr.outputs.append(Out(FLOOD, _headers(pkt)))
                return
            port = pkt.get("in_port") if a.port == IN_PORT else a.port
            if a.port != IN_PORT and port == pkt.get("in_port"):
                return  # OpenFlow never sends back out of the ingress port implicitly
            tr.outputs.append(Out(port, _headers(pkt)))
        elif isinstance(a, Controller):
            tr.outputs.append(Out(CONTROLLER, _headers(pkt, keep_regs=True)))
        elif isinstance(a, SetField):
            pkt[a.field] = a.value.lower() if isinstance(a.value, str) else a.value
        elif isinstance(a, Move):
            if a.n_bits is None:
                pkt[a.dst] = pkt.get(a.src)
            else:
                mask = (1 << a.n_bits) - 1
                pkt[a.dst] = (int(pkt.get(a.dst) or 0) & ~mask) | (int(pkt.get(a.src)) & mask)
        elif isinstance(a, Group):
            group = self.groups.get(a.group_id)
            if group is None:
                raise FakeOFTableError(f"group {a.group_id:#x} does not exist")
            if not pkt["dp_hash"]:   # the datapath's hash action, then the recirculation
                pkt["dp_hash"] = hashing.dp_hash_of(hashing.FlowKey.from_fields(pkt))
            for b in _action_set(group.buckets[0]):
                self._exec(b, pkt, tr, now, depth + 1)
        elif isinstance(a, Multipath):
            key = hashing.FlowKey.from_fields(pkt)
            pkt[a.dst] = hashing.bucket_of(key, a.n_links, a.basis)
        elif isinstance(a, (Resubmit, Goto)):
            # goto is last in a flow's actions (make_flow checks), so running the next
            # table here is the same as after the actions
            self._run_table(a.table, pkt, tr, now, depth + 1)
        elif isinstance(a, Learn):
            match = dict(a.fixed)
            match.update({f: pkt.get(f) for f in a.copy})
            spec = make_flow(a.table, a.priority, match,
                             [SetField(f, v) for v, f in a.load], cookie=a.cookie,
                             idle_timeout=a.idle_timeout, hard_timeout=a.hard_timeout)
            self.add(spec, now)
            tr.learned.append(spec)
        elif isinstance(a, Ct):
            self._ct(a, pkt)
            if a.table is not None:   # recirculation: the flow's last action
                self._run_table(a.table, pkt, tr, now, depth + 1)
        else:
            raise FakeOFTableError(f"cannot execute {a!r}")

    def _ct(self, a: Ct, pkt: dict) -> None:
        found = self._conns.get((a.zone, _five_tuple(pkt)))
        conn, reply = found if found else (None, False)
        bits = CT_STATE_BITS
        state = bits["trk"]
        if conn is None:
            state |= bits["new"]
        elif reply:
            conn.replied = True
            state |= bits["est"] | bits["rpl"]
        else:
            state |= bits["est"] if conn.replied else bits["new"]
        if a.nat and conn is not None and conn.nat_dst:
            if reply:
                pkt["ipv4_src"] = conn.orig_dst
            else:
                pkt["ipv4_dst"] = conn.nat_dst
        if a.commit:
            if conn is None:
                orig = _five_tuple(pkt)
                src, sport, dst, dport, proto = orig
                conn = Conn(orig, (a.nat_dst or dst, dport, src, sport, proto),
                            nat_dst=a.nat_dst, orig_dst=dst)
                self._conns[(a.zone, conn.orig)] = (conn, False)
                self._conns[(a.zone, conn.reply)] = (conn, True)
                if a.nat_dst:
                    pkt["ipv4_dst"] = a.nat_dst
            if a.mark is not None:
                conn.mark = a.mark
        pkt["ct_state"] = state
        pkt["ct_mark"] = conn.mark if conn is not None else 0


def _action_set(actions) -> list:
    """A group bucket is an OpenFlow action set (ofpacts_execute_action_set): its set_field
    and move actions in order, then only the last of its final actions (ct, resubmit,
    output, group, by that priority); anything else is not allowed in a set."""
    final_rank = {Ct: 0, Resubmit: 1, Output: 2, Group: 3}
    sets, final = [], None
    for a in actions:
        if isinstance(a, (SetField, Move)):
            sets.append(a)
        elif type(a) in final_rank:
            if final is None or final_rank[type(a)] >= final_rank[type(final)]:
                final = a
        else:
            raise FakeOFTableError(f"{a!r} is not allowed in a group bucket (an action set)")
    return sets + ([final] if final is not None else [])


def _headers(pkt: Mapping[str, Any], keep_regs: bool = False) -> dict[str, Any]:
    return {k: v for k, v in pkt.items()
            if keep_regs or not k.startswith(("reg", "ct_", "dp_hash"))}
