"""lblab's flow IR: flows and actions as plain data, and the diff that resynchronises a switch.

Pure (no Ryu, no Mininet). Both apps compute their flows in this form: the VIP balancer
(controller/vipflows.py) and the base L2 app (controller/l2logic.py). controller/ofmsg.py
turns them into OpenFlow 1.3 messages, controller/ofctl.py into `ovs-ofctl add-flow` lines,
and the tests' fake flow table (tests/support/fakeoftable.py) executes them, so unit tests
can run the flows of both apps in one table and ask where a packet goes.

Field names are Ryu's OXM names (ipv4_dst, tcp_dst, eth_type, reg0...), and `dp_hash` for
the datapath's hash (Ryu spells it `_dp_hash`; only ever a Move source); masked IPv4 values
are written "a.b.c.d/len". Actions are applied in order; `Goto` (an instruction in OpenFlow
terms) may only come last.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

IN_PORT = "IN_PORT"               # Output(IN_PORT): back out of the port it came in on
FLOOD = "FLOOD"                   # Output(FLOOD): every port but the ingress one
LOCAL_PORT = 0xFFFFFFFE           # match in_port: the bridge's own (LOCAL) port, OF1.3


@dataclass(frozen=True)
class Output:
    port: Union[int, str]             # a port number, IN_PORT or FLOOD


@dataclass(frozen=True)
class Controller:
    max_len: int = 0xFFFF             # whole packet (OFPCML_NO_BUFFER)


@dataclass(frozen=True)
class SetField:
    field: str
    value: Any


@dataclass(frozen=True)
class Move:
    """move: src -> dst, the whole field, or bits [0, n_bits) of both when n_bits is set."""

    src: str
    dst: str
    n_bits: int | None = None


@dataclass(frozen=True)
class Multipath:
    """multipath(fields, basis, algorithm, n_links, arg, dst[0..n_bits-1])."""

    n_links: int
    dst: str = "reg0"
    n_bits: int = 16
    fields: str = "symmetric_l3l4+udp"
    basis: int = 0
    algorithm: str = "modulo_n"
    arg: int = 0


@dataclass(frozen=True)
class Group:
    """group:G: run group G (lblab's are select groups that make the datapath compute
    dp_hash, see GroupSpec); the flow's last action, since a bucket runs as a clone
    otherwise and its register changes would not outlive it."""

    group_id: int


@dataclass(frozen=True)
class GroupSpec:
    """A select group of equal buckets. With no selection method given, OVS (2.10 and
    later) selects by dp_hash: the first pass emits hash(sym_l4(0)) and recirculates, so
    the datapath, not the slow path, hashes the 5-tuple, and the buckets see dp_hash set."""

    group_id: int
    buckets: tuple[tuple["Action", ...], ...]


@dataclass(frozen=True)
class Resubmit:
    """Nicira resubmit(,table): run the table now and come back (register changes stay)."""

    table: int


@dataclass(frozen=True)
class Goto:
    """OpenFlow goto_table: go on in `table` after this flow's actions (last, once)."""

    table: int


@dataclass(frozen=True)
class Learn:
    """learn(): add a flow to `table` matching `fixed` values and the current packet's values
    of `copy` fields, whose actions load constants (`load`: (value, field))."""

    table: int
    priority: int
    cookie: int
    idle_timeout: int = 0
    hard_timeout: int = 0
    fin_idle_timeout: int = 0
    fixed: tuple[tuple[str, int], ...] = ()
    copy: tuple[str, ...] = ()
    load: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Ct:
    """ct(): the packet through the datapath's connection tracker in `zone`, then (with
    `table`) a recirculation into that table with ct_state and ct_mark set; `table` makes it
    the flow's last action. `nat`: apply a tracked connection's translation (either
    direction). `commit`: store the connection, with `mark` into ct_mark and, with
    `nat_dst`, a destination NAT to that IPv4 address."""

    zone: int
    table: int | None = None
    commit: bool = False
    nat: bool = False
    nat_dst: str | None = None
    mark: int | None = None


# ct_state bits (OVS_CS_F_*), matched as "+trk+new" / "+trk-new" strings in the IR
CT_STATE_BITS = {"new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10,
                 "trk": 0x20}


def ct_state_bits(text: str) -> tuple[int, int]:
    """"+trk-new" -> (value, mask)."""
    value = mask = 0
    for sign, name in re.findall(r"([+-])([a-z]+)", text):
        bit = CT_STATE_BITS[name]
        mask |= bit
        value |= bit if sign == "+" else 0
    return value, mask


def ct_state_text(value: int, mask: int) -> str:
    return "".join(("+" if value & bit else "-") + name
                   for name, bit in sorted(CT_STATE_BITS.items(), key=lambda kv: kv[1])
                   if mask & bit)


Action = Union[Output, Controller, SetField, Move, Multipath, Group, Resubmit, Goto, Learn,
               Ct]
Match = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class FlowSpec:
    """One flow entry. `match` is kept as sorted (field, value) pairs so specs are hashable;
    build with `make_flow(...)` from a dict."""

    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0

    @property
    def match_dict(self) -> dict[str, Any]:
        return dict(self.match)

    @property
    def identity(self) -> tuple[int, int, Match]:
        """What OpenFlow treats as "the same flow" (strict match + priority, per table)."""
        return (self.table, self.priority, self.match)


@dataclass(frozen=True)
class ReadBack:
    """A flow as a switch reports it in a flow stats reply, reduced to what `diff` uses:
    no actions, no timeouts (controller/ofmsg.py builds these from Ryu's stats entries)."""

    table: int
    priority: int
    match: Match
    cookie: int

    @property
    def identity(self) -> tuple[int, int, Match]:
        return (self.table, self.priority, self.match)


def make_flow(table: int, priority: int, match: Mapping[str, Any], actions: Iterable[Action],
              cookie: int = 0, idle_timeout: int = 0, hard_timeout: int = 0) -> FlowSpec:
    acts = tuple(actions)
    if any(isinstance(a, (Goto, Group)) or (isinstance(a, Ct) and a.table is not None)
           for a in acts[:-1]):
        raise ValueError(f"Goto, group and ct(table=...) must be the last action: {acts}")
    return FlowSpec(table, priority, normalize_match(match), acts, cookie, idle_timeout,
                    hard_timeout)


def normalize_match(match: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Match:
    """Canonical sorted pairs; accepts Ryu's forms too ((addr, mask) tuples, upper-case MACs)
    so a match read back from the switch compares equal to the computed one."""
    items = match.items() if isinstance(match, Mapping) else match
    out = []
    for k, v in items:
        if k == "ct_state":
            v = ct_state_text(*v) if isinstance(v, tuple) else ct_state_text(
                *ct_state_bits(v)) if isinstance(v, str) else ct_state_text(v, 0xFF)
        elif isinstance(v, tuple) and len(v) == 2 and k.startswith(("ipv4_", "arp_spa", "arp_tpa")):
            net = ipaddress.IPv4Network(f"{v[0]}/{v[1]}", strict=False)
            v = str(net) if net.prefixlen < 32 else str(net.network_address)
        elif isinstance(v, str) and ":" in v:
            v = v.lower()
        elif isinstance(v, str) and v.endswith("/32"):
            v = v[:-3]
        out.append((k, v))
    return tuple(sorted(out))


# --- resynchronisation ---------------------------------------------------------------------
@dataclass(frozen=True)
class FlowDiff:
    """What to send to make the switch match the desired flows. Send add and modify as
    OFPFC_ADD (an add with the same table/priority/match replaces the flow, cookie
    included; OF1.3 MODIFY would keep the old cookie), then delete with DELETE_STRICT."""

    add: tuple[FlowSpec, ...] = ()
    modify: tuple[FlowSpec, ...] = ()
    delete: tuple[Any, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add or self.modify or self.delete)


def diff(current: Iterable[Any], desired: Iterable[FlowSpec],
         owns: Callable[[int], bool]) -> FlowDiff:
    """Compare flows read from the switch (FlowSpecs or ReadBacks: anything with table,
    priority, match and cookie) with the desired FlowSpecs of one app.

    Only flows whose cookie the app `owns` count: every other flow (the other app's,
    learned connection entries) is never touched. Two flows are the same when (table,
    priority, match) are; a same flow needs rewriting when its cookie differs (apps that
    resynchronise from read-back flows put a digest of the actions in the cookie) or, for
    two FlowSpecs, when anything else differs.
    """
    cur: dict[tuple, Any] = {}
    for f in current:
        if not owns(f.cookie):
            continue
        match = f.match if isinstance(f, FlowSpec) else normalize_match(f.match)
        cur[(f.table, f.priority, match)] = f
    add, modify = [], []
    want: set[tuple] = set()
    for d in desired:
        ident = d.identity
        want.add(ident)
        old = cur.get(ident)
        if old is d:          # the same object (kept by its builder): unchanged
            continue
        if old is None:
            add.append(d)
        elif old.cookie != d.cookie or (isinstance(old, FlowSpec) and old != d):
            modify.append(d)
    delete = [f for ident, f in cur.items() if ident not in want]
    return FlowDiff(tuple(add), tuple(modify), tuple(delete))
