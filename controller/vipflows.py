"""Desired VIP state -> flows for the LB switch, in a small controller-neutral form.

Pure (no Ryu, no Mininet): `desired_flows()` returns `FlowSpec`s; controller/ofmsg.py turns
them into Ryu flow mods, `to_ofctl()` into `ovs-ofctl add-flow` lines, and
controller/fakeoftable.py executes them so unit tests can ask where a packet goes.

Table layout contract with the base L2 app (controller/l2app.py, l2logic.py)
---------------------------------------------------------------------------
- The base app uses tables 0 and 1 (0: source learning, then goto 1; 1: destination
  lookup or flood), priorities <= 10 and cookie BASE_COOKIE, which it deletes exactly on
  connect.
- lblab's VIP classifier flows live in table 0 (`TableLayout.l2`) at priorities 250..400,
  above every L2 flow, with cookies of prefix COOKIE_VIP; each app deletes only its own
  flows by cookie. Anything no VIP flow matches falls through to the L2 flows, unchanged.
- Tables `first_table`..`first_table+3` (default 10..13, leaving room after the L2 tables)
  belong to the VIP app alone, shared by all VIPs of the switch (told apart by reg2):
    conn    (10): learned exact 5-tuple flows -> reg1 := backend; miss = no-op
    select  (11): per VIP: connection known? else hash: multipath -> reg0, bucket, backend
    bucket  (12): per VIP and bucket value reg0 -> reg1 := backend (+ learn into conn)
    backend (13): per VIP and backend reg1 -> the forwarding mode's rewrites and output
  Tables are chained with Nicira `resubmit(,T)` (not goto_table) because a learned flow can
  only load registers: after `resubmit(,conn)` returns, the classifier continues with
  `resubmit(,select)` and sees reg1 set or not. VIP packets never enter the L2 tables.

Registers: reg0 = bucket (multipath output), reg1 = backend IPv4 as an integer (0 = none),
reg2 = VIP index. The backend's address (not its position in a list) is the id so that a
learned connection still names the right backend after the pool changes.

Packet walk (client -> VIP:port, TCP)
-------------------------------------
table 0, prio 300: reg2 := vip index; [resubmit(,conn)]; resubmit(,select)
select, prio 20 (reg1 == 0, i.e. no known connection): multipath(symmetric_l3l4+udp,
    basis, modulo_n, n_buckets, 0, reg0[0..15]); resubmit(,bucket); resubmit(,backend)
select, prio 10 (connection known): resubmit(,backend)
bucket: reg1 := backend ip; learn(conn: exact 5-tuple -> reg1 := backend ip, idle 60 s)
backend: nat: eth_dst, ipv4_dst := backend; output backend port
         dsr: eth_dst := backend; output backend port
         gre: tun_dst := backend ip; output the switch's GRE port
With conntrack off the conn table is not consulted (one select flow, no learn), except that
`leastload` still learns: the learned flows are its connection counters (per-backend cookie,
read with an aggregate stats request), not consulted for the decision.

Backends in state down or drain get no buckets (maglev is rebuilt without them, modn runs
over the up backends only) but keep their backend-table flow, so connections already learned
for them keep flowing: that is what drain means, and for a backend marked down by a health
check its learned entries simply idle out (a false alarm does not cut live connections).
Removing a backend from the pool removes its backend flow; its learned entries then lead
nowhere (the glue should also delete them by `conn_cookie`, so a reused 5-tuple re-hashes).

Other flows in table 0: an ARP responder for the VIP (prio 400, reply built in the switch,
no controller round trip); a drop of any other IPv4 traffic to the VIP (prio 290: nothing
behind the VIP MAC would take it, L2 would only flood it); for nat, the reverse path (prio
250): backend port + backend ip + service source port + destination outside the DC subnet
-> ipv4_src := VIP, eth_src := VIP MAC, output uplink. "Outside the subnet" is written as the
prefixes that cover the complement of the subnet (24 flows for a /24), because a flow in
table 0 cannot fall through to the L2 flows below it: traffic inside the subnet (health
checks) then matches none of them and is switched by L2, untouched.

The `reactive` option replaces the hash by the controller: select sends conn misses to the
controller, which picks a backend (`choose_backend`) and installs `reactive_flows()` (the
same exact entry a learn would make) before re-injecting the packet through table 0.

Cookies: COOKIE_VIP | index << 36 | 36-bit digest of the flow for computed flows;
COOKIE_CONN | index << 36 | backend ipv4 for learned/reactive connection entries. The digest
lets a restarted controller compare the switch's flows with the desired ones from
(table, priority, match, cookie) alone, without decoding Nicira actions (`diff`). On
reconnect the glue must resync with `diff`, not delete-all-and-reinstall: learned entries
(COOKIE_CONN) are never touched, so established connections keep their backend.

Choices, and why
----------------
- `learn` rather than `ct` for connection tracking: the entries are ordinary flows, visible in
  dump-flows, countable per backend by cookie (the learn action sits in the bucket flow, so
  its cookie names the backend), kept across controller restarts, and executable by the fake
  table; ct would need recirculation and a ct_mark per backend for the same result.
- `symmetric_l3l4+udp` rather than `symmetric_l4`: the latter also hashes the Ethernet
  addresses, which carry no information here (always the router's) and are not in FlowKey;
  for TCP both hash the same 5-tuple fields otherwise.
- multipath into a bucket table rather than an OpenFlow select group: OF1.3 select groups
  give no control over the hash or bucket order (OVS's selection_method needs OF1.5), while a
  bucket table is exactly the Maglev lookup table, updated bucket by bucket on pool changes.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from controller import hashing, maglev

# --- cookies -------------------------------------------------------------------------------
COOKIE_VIP = 0x1B1AC << 44        # computed VIP flows (base app: 0x1B1AB00000000000)
COOKIE_CONN = 0x1B1AD << 44       # learned / reactive connection entries
COOKIE_PREFIX_MASK = 0xFFFFF << 44
COOKIE_VIP_MASK = 0xFFFFFFF << 36  # prefix + VIP index
COOKIE_ALL = 0xFFFFFFFFFFFFFFFF
DIGEST_BITS = 36

# --- priorities in the shared table 0 (base app: <= 100) ---------------------------------
PRIO_ARP = 400
PRIO_VIP = 300
PRIO_VIP_OTHER = 290
PRIO_REVERSE = 250
PRIO_CONN = 100
PRIO_SELECT_NEW = 20
PRIO_SELECT_KNOWN = 10
PRIO_ENTRY = 10                   # bucket and backend tables: one exact entry per value
PRIO_MISS = 0

REG_BUCKET = "reg0"
REG_BACKEND = "reg1"
REG_VIP = "reg2"
BUCKET_BITS = 16                  # reg0[0..15]: multipath can address n_links <= 65536
MAX_BUCKETS = 1 << BUCKET_BITS
LEASTLOAD_BUCKETS = 64
ETH_IP = 0x0800
ETH_ARP = 0x0806
IN_PORT = "IN_PORT"               # Output(IN_PORT): back out of the port it came in on

MODES = ("nat", "dsr", "gre")
ALGORITHMS = ("modn", "maglev", "leastload")
STATES = ("up", "down", "drain")


class VipError(ValueError):
    """The desired VIP state cannot be turned into flows; the message says why."""


# --- desired state -------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """A pool member. `state`: up takes new connections; drain and down take none but keep
    the connections already learned for them (see the module docstring). `weight` counts for
    maglev and leastload; modn ignores it (plain hash mod N)."""

    name: str
    ip: str
    mac: str | None = None            # None allowed only for gre
    switch_port: int | None = None    # None allowed only for gre
    weight: float = 1.0
    state: str = "up"                 # up | down | drain


@dataclass(frozen=True)
class Vip:
    """Desired state of one VIP on the LB switch. `table_size` is Maglev's M (default
    maglev.default_table_size(len(backends)), the whole pool so health flaps keep M) or the
    leastload bucket count (default LEASTLOAD_BUCKETS); modn ignores it."""

    name: str
    address: str
    mac: str
    ports: tuple[int, ...] = (80,)
    mode: str = "nat"
    algorithm: str = "maglev"
    conntrack: bool = True
    table_size: int | None = None     # maglev: M (prime >= 100 N); leastload: bucket count
    backends: tuple[Backend, ...] = ()
    index: int = 1                    # 1..255, unique per switch: reg2 value, cookie bits
    reactive: bool = False
    conn_idle_timeout: int = 60
    conn_fin_timeout: int = 0         # >0: learned entry idles out this fast after FIN/RST
    hash_basis: int = 0


DEFAULT_FIRST_TABLE = 10


@dataclass(frozen=True)
class TableLayout:
    """`l2`: the base app's first table, where the VIP classifier flows go; the others are
    the VIP app's own tables (see the module docstring)."""

    l2: int = 0
    conn: int = DEFAULT_FIRST_TABLE
    select: int = DEFAULT_FIRST_TABLE + 1
    bucket: int = DEFAULT_FIRST_TABLE + 2
    backend: int = DEFAULT_FIRST_TABLE + 3

    @classmethod
    def starting_at(cls, first_table: int, l2: int = 0) -> TableLayout:
        if first_table <= l2:
            raise VipError(f"VIP tables must come after the L2 table {l2}, got {first_table}")
        return cls(l2, first_table, first_table + 1, first_table + 2, first_table + 3)


@dataclass(frozen=True)
class LbSwitch:
    """The LB switch as the VIP flows need it."""

    uplink_port: int                  # towards the DC router (clients)
    dc_subnet: str                    # the L2 segment of the backends, e.g. 10.101.0.0/24
    gre_port: int | None = None       # OVS gre port (remote_ip=flow) for mode gre
    gre_mark: int = 0                 # pkt_mark selecting this LB's underlay routes (0: none)
    tables: TableLayout = TableLayout()


# --- flow representation -------------------------------------------------------------------
@dataclass(frozen=True)
class Output:
    port: Union[int, str]             # a port number or IN_PORT


@dataclass(frozen=True)
class Controller:
    max_len: int = 0xFFFF             # whole packet (OFPCML_NO_BUFFER)


@dataclass(frozen=True)
class SetField:
    field: str
    value: Any


@dataclass(frozen=True)
class Move:
    src: str
    dst: str


@dataclass(frozen=True)
class Multipath:
    """multipath(fields, basis, algorithm, n_links, arg, dst[0..n_bits-1])."""

    n_links: int
    dst: str = REG_BUCKET
    n_bits: int = BUCKET_BITS
    fields: str = "symmetric_l3l4+udp"
    basis: int = 0
    algorithm: str = "modulo_n"
    arg: int = 0


@dataclass(frozen=True)
class Resubmit:
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


Action = Union[Output, Controller, SetField, Move, Multipath, Resubmit, Learn]
Match = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class FlowSpec:
    """One flow entry. `match` is kept as sorted (field, value) pairs so specs are hashable;
    build with `make_flow(...)` from a dict. Field names are Ryu's OXM names (ipv4_dst,
    tcp_dst, eth_type, reg0...); masked IPv4 values are written "a.b.c.d/len"."""

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


def make_flow(table: int, priority: int, match: Mapping[str, Any], actions: Iterable[Action],
              cookie: int = 0, idle_timeout: int = 0, hard_timeout: int = 0) -> FlowSpec:
    return FlowSpec(table, priority, normalize_match(match), tuple(actions), cookie,
                    idle_timeout, hard_timeout)


def normalize_match(match: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Match:
    """Canonical sorted pairs; accepts Ryu's forms too ((addr, mask) tuples, upper-case MACs)
    so a match read back from the switch compares equal to the computed one."""
    items = match.items() if isinstance(match, Mapping) else match
    out = []
    for k, v in items:
        if isinstance(v, tuple) and len(v) == 2 and k.startswith(("ipv4_", "arp_spa", "arp_tpa")):
            net = ipaddress.IPv4Network(f"{v[0]}/{v[1]}", strict=False)
            v = str(net) if net.prefixlen < 32 else str(net.network_address)
        elif isinstance(v, str) and ":" in v:
            v = v.lower()
        elif isinstance(v, str) and v.endswith("/32"):
            v = v[:-3]
        out.append((k, v))
    return tuple(sorted(out))


# --- cookies -------------------------------------------------------------------------------
def _digest(table: int, priority: int, match: Match, actions: tuple, idle: int,
            hard: int) -> int:
    data = repr((table, priority, match, actions, idle, hard)).encode()
    d = hashlib.blake2b(data, digest_size=8, person=b"lblab-flowdigest").digest()
    return int.from_bytes(d, "big") & ((1 << DIGEST_BITS) - 1)


def vip_cookie_prefix(index: int) -> int:
    """Cookie value whose COOKIE_VIP_MASK bits select all computed flows of one VIP."""
    return COOKIE_VIP | (index & 0xFF) << 36


def conn_cookie(index: int, backend_ip: str) -> int:
    """Cookie of a VIP's learned/reactive connection entries to one backend: count them
    (leastload, REST "active connections") or delete them with cookie_mask=COOKIE_ALL."""
    return COOKIE_CONN | (index & 0xFF) << 36 | int(ipaddress.IPv4Address(backend_ip))


def is_computed(cookie: int) -> bool:
    return cookie & COOKIE_PREFIX_MASK == COOKIE_VIP


def is_conn(cookie: int) -> bool:
    return cookie & COOKIE_PREFIX_MASK == COOKIE_CONN


def _flow(index: int, table: int, priority: int, match: Mapping[str, Any],
          actions: Iterable[Action]) -> FlowSpec:
    m, a = normalize_match(match), tuple(actions)
    return FlowSpec(table, priority, m, a, vip_cookie_prefix(index) | _digest(table, priority,
                                                                               m, a, 0, 0))


# --- validation ----------------------------------------------------------------------------
def validate(switch: LbSwitch, vips: Sequence[Vip]) -> None:
    """Raise VipError naming the VIP and the problem; nothing is computed from bad state."""
    subnet = _net(switch.dc_subnet, "dc_subnet")
    seen_idx: dict[int, str] = {}
    seen_addr: dict[str, str] = {}
    reverse_keys: dict[tuple[str, int], str] = {}
    for v in vips:
        where = f"VIP {v.name!r}"
        if not 1 <= v.index <= 255:
            raise VipError(f"{where}: index must be 1..255, got {v.index}")
        if v.index in seen_idx:
            raise VipError(f"{where}: index {v.index} already used by {seen_idx[v.index]!r}")
        seen_idx[v.index] = v.name
        _ip(v.address, f"{where}: address")
        if v.address in seen_addr:
            raise VipError(f"{where}: address {v.address} already used by "
                           f"{seen_addr[v.address]!r}")
        seen_addr[v.address] = v.name
        _mac(v.mac, f"{where}: mac")
        if v.mode not in MODES:
            raise VipError(f"{where}: unknown mode {v.mode!r} (one of {', '.join(MODES)})")
        if v.algorithm not in ALGORITHMS:
            raise VipError(f"{where}: unknown algorithm {v.algorithm!r} "
                           f"(one of {', '.join(ALGORITHMS)})")
        if not v.ports or any(not 1 <= p <= 65535 for p in v.ports):
            raise VipError(f"{where}: ports must be 1..65535, got {v.ports}")
        if v.mode == "gre" and switch.gre_port is None:
            raise VipError(f"{where}: mode gre needs the switch's GRE port (gre_port)")
        names = [b.name for b in v.backends]
        if len(set(names)) != len(names):
            raise VipError(f"{where}: backend names repeat: {names}")
        ips = [b.ip for b in v.backends]
        if len(set(ips)) != len(ips):
            raise VipError(f"{where}: backend addresses repeat: {ips}")
        for b in v.backends:
            bw = f"{where}: backend {b.name!r}"
            ip = _ip(b.ip, f"{bw}: ip")
            if b.state not in STATES:
                raise VipError(f"{bw}: unknown state {b.state!r} (one of {', '.join(STATES)})")
            if not b.weight > 0:
                raise VipError(f"{bw}: weight must be > 0 (use state drain), got {b.weight}")
            if v.mode in ("nat", "dsr"):
                if ip not in subnet:
                    why = ("DSR only rewrites the destination MAC, so the backend must share "
                           "the LB switch's L2 segment" if v.mode == "dsr" else
                           "NAT delivers to the backend's port on the LB switch and rewrites "
                           "its replies there")
                    raise VipError(f"{bw}: {b.ip} is outside the DC subnet {subnet}: {why}; "
                                   "use mode gre for backends elsewhere")
                if b.switch_port is None or b.mac is None:
                    raise VipError(f"{bw}: mode {v.mode} needs the backend's mac and "
                                   "switch_port")
                _mac(b.mac, f"{bw}: mac")
            if v.mode == "nat":
                for p in v.ports:
                    other = reverse_keys.get((b.ip, p))
                    if other is not None:
                        raise VipError(f"{bw}: {b.ip}:{p} already serves NAT VIP {other!r}; "
                                       "its replies could not be told apart")
                    reverse_keys[(b.ip, p)] = v.name
        if v.algorithm == "maglev" and v.backends:
            m = v.table_size or maglev.default_table_size(len(v.backends))
            try:
                maglev.validate_table_size(m, len(v.backends))
            except ValueError as e:
                raise VipError(f"{where}: {e}") from None
            if m > MAX_BUCKETS:
                raise VipError(f"{where}: Maglev table size {m} exceeds what OVS multipath "
                               f"can address (n_links <= {MAX_BUCKETS}); use <= 65521")
        if v.algorithm == "leastload" and v.table_size is not None and \
                not 1 <= v.table_size <= MAX_BUCKETS:
            raise VipError(f"{where}: leastload bucket count must be 1..{MAX_BUCKETS}")


def _net(text: str, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as e:
        raise VipError(f"{what}: not an IPv4 subnet: {text!r} ({e})") from None


def _ip(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise VipError(f"{what}: not an IPv4 address: {text!r}") from None


def _mac(text: str, what: str) -> None:
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                  for p in parts):
        raise VipError(f"{what}: not a MAC address: {text!r}")


# --- backend choice ------------------------------------------------------------------------
# Re-exported: the controller rebuilds leastload buckets from per-backend connection counts.
leastload_assignment = hashing.leastload_assignment


def eligible(vip: Vip) -> list[Backend]:
    """Backends that may take new connections."""
    return [b for b in vip.backends if b.state == "up"]


def assignment(vip: Vip, loads: Mapping[str, int] | None = None) -> list[Backend]:
    """bucket -> backend for the VIP's algorithm over its up backends ([] if none is up)."""
    up = eligible(vip)
    if not up:
        return []
    by_name = {b.name: b for b in up}
    names = [b.name for b in up]
    weights = {b.name: b.weight for b in up}
    if vip.algorithm == "modn":
        table = hashing.modn_assignment(names)
    elif vip.algorithm == "maglev":
        m = vip.table_size or maglev.default_table_size(len(vip.backends))
        table = hashing.maglev_assignment(names, m, weights)
    else:
        counts = {n: int((loads or {}).get(n, 0)) for n in names}
        table = hashing.leastload_assignment(counts, weights,
                                             vip.table_size or LEASTLOAD_BUCKETS)
    return [by_name[n] for n in table]


def choose_backend(vip: Vip, key: hashing.FlowKey,
                   loads: Mapping[str, int] | None = None) -> Backend | None:
    """The backend the fast path would pick for a new connection (used by reactive mode,
    where the controller decides, and by experiments)."""
    table = assignment(vip, loads)
    return hashing.backend_for(key, table, vip.hash_basis) if table else None


# --- flow computation ----------------------------------------------------------------------
def outside_prefixes(subnet: str) -> list[str]:
    """Prefixes that together cover exactly the IPv4 space outside `subnet` (one per prefix
    bit: the subnet's first i bits, bit i flipped)."""
    net = ipaddress.IPv4Network(subnet)
    base = int(net.network_address)
    out = []
    for i in range(net.prefixlen):
        plen = i + 1
        mask = ((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1)
        flipped = (base ^ (1 << (31 - i))) & mask
        out.append(f"{ipaddress.IPv4Address(flipped)}/{plen}")
    return out


def _ipint(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _uses_learn(vip: Vip) -> bool:
    return not vip.reactive and (vip.conntrack or vip.algorithm == "leastload")


def _consults_conn(vip: Vip) -> bool:
    return vip.conntrack or vip.reactive


def _learn(vip: Vip, tables: TableLayout, backend: Backend) -> Learn:
    return Learn(table=tables.conn, priority=PRIO_CONN,
                 cookie=conn_cookie(vip.index, backend.ip),
                 idle_timeout=vip.conn_idle_timeout, fin_idle_timeout=vip.conn_fin_timeout,
                 fixed=(("eth_type", ETH_IP), ("ip_proto", hashing.TCP)),
                 copy=("ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst"),
                 load=((_ipint(backend.ip), REG_BACKEND),))


def _mode_actions(vip: Vip, switch: LbSwitch, b: Backend) -> list[Action]:
    if vip.mode == "nat":
        return [SetField("eth_dst", b.mac), SetField("ipv4_dst", b.ip), Output(b.switch_port)]
    if vip.mode == "dsr":
        return [SetField("eth_dst", b.mac), Output(b.switch_port)]
    # gre: OVS pushes GRE + outer IPv4 to tun_dst and routes the outer packet itself, with
    # its route table entries for pkt_mark (topologies/gre.py: one underlay per LB switch).
    mark = [SetField("pkt_mark", switch.gre_mark)] if switch.gre_mark else []
    return [*mark, SetField("tun_ipv4_dst", b.ip), Output(switch.gre_port)]


def pipeline_flows(switch: LbSwitch) -> list[FlowSpec]:
    """Explicit no-op misses in the VIP tables (shared by all VIPs, VIP index 0), so a miss
    inside a resubmit means "nothing" on every switch, whatever its table-miss default."""
    t = switch.tables
    return [_flow(0, tid, PRIO_MISS, {}, []) for tid in (t.conn, t.select, t.bucket, t.backend)]


def vip_flows(switch: LbSwitch, vip: Vip, loads: Mapping[str, int] | None = None
              ) -> list[FlowSpec]:
    """All computed flows of one VIP (validate first; desired_flows does)."""
    t, i = switch.tables, vip.index
    flows: list[FlowSpec] = []
    # ARP reply built in the switch: swap addresses, answer with the VIP MAC, out IN_PORT.
    flows.append(_flow(i, t.l2, PRIO_ARP,
                       {"eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": vip.address},
                       [Move("eth_src", "eth_dst"), SetField("eth_src", vip.mac),
                        SetField("arp_op", 2), Move("arp_sha", "arp_tha"),
                        SetField("arp_sha", vip.mac), Move("arp_spa", "arp_tpa"),
                        SetField("arp_spa", vip.address), Output(IN_PORT)]))
    classify: list[Action] = [SetField(REG_VIP, i)]
    if _consults_conn(vip):
        classify.append(Resubmit(t.conn))
    classify.append(Resubmit(t.select))
    for p in vip.ports:
        flows.append(_flow(i, t.l2, PRIO_VIP, {"eth_type": ETH_IP, "ip_proto": hashing.TCP,
                                               "ipv4_dst": vip.address, "tcp_dst": p},
                           classify))
    flows.append(_flow(i, t.l2, PRIO_VIP_OTHER, {"eth_type": ETH_IP, "ipv4_dst": vip.address},
                       []))
    # select: new connection -> hash (or controller); known connection -> backend.
    table = [] if vip.reactive else assignment(vip, loads)
    if vip.reactive:
        new: list[Action] = [Controller()]
    elif table:
        new = [Multipath(len(table), basis=vip.hash_basis), Resubmit(t.bucket),
               Resubmit(t.backend)]
    else:
        new = []  # no backend up: new connections are dropped, known ones still flow
    # The IPv4/TCP prerequisites in these matches are required: OVS rejects a learn that
    # copies ip_src, or a set_field to ip_dst, in a flow whose match does not imply IPv4/TCP.
    tcp = {"eth_type": ETH_IP, "ip_proto": hashing.TCP, REG_VIP: i}
    if _consults_conn(vip):
        flows.append(_flow(i, t.select, PRIO_SELECT_NEW, {**tcp, REG_BACKEND: 0}, new))
        flows.append(_flow(i, t.select, PRIO_SELECT_KNOWN, tcp, [Resubmit(t.backend)]))
    else:
        flows.append(_flow(i, t.select, PRIO_SELECT_KNOWN, tcp, new))
    learn = _uses_learn(vip)
    per_backend: dict[str, tuple[Action, ...]] = {}   # M buckets share N action lists
    for b in {b.name: b for b in table}.values():
        acts: list[Action] = [SetField(REG_BACKEND, _ipint(b.ip))]
        if learn:
            acts.append(_learn(vip, t, b))
        per_backend[b.name] = tuple(acts)
    for bucket, b in enumerate(table):
        flows.append(_flow(i, t.bucket, PRIO_ENTRY, {**tcp, REG_BUCKET: bucket},
                           per_backend[b.name]))
    for b in vip.backends:
        flows.append(_flow(i, t.backend, PRIO_ENTRY, {**tcp, REG_BACKEND: _ipint(b.ip)},
                           _mode_actions(vip, switch, b)))
    if vip.mode == "nat":
        outside = outside_prefixes(switch.dc_subnet)
        for b in vip.backends:
            for p in vip.ports:
                for prefix in outside:
                    flows.append(_flow(i, t.l2, PRIO_REVERSE,
                                       {"in_port": b.switch_port, "eth_type": ETH_IP,
                                        "ip_proto": hashing.TCP, "ipv4_src": b.ip,
                                        "tcp_src": p, "ipv4_dst": prefix},
                                       [SetField("ipv4_src", vip.address),
                                        SetField("eth_src", vip.mac),
                                        Output(switch.uplink_port)]))
    return flows


def desired_flows(switch: LbSwitch, vips: Sequence[Vip],
                  loads: Mapping[str, Mapping[str, int]] | None = None) -> list[FlowSpec]:
    """Every computed flow for the switch. `loads`: VIP name -> backend name -> active
    connections (only leastload uses it). Raises VipError on bad state."""
    validate(switch, vips)
    flows = pipeline_flows(switch)
    for v in vips:
        flows.extend(vip_flows(switch, v, (loads or {}).get(v.name)))
    return flows


def reactive_flows(vip: Vip, key: hashing.FlowKey, backend: Backend,
                   tables: TableLayout = TableLayout()) -> list[FlowSpec]:
    """Exact-match entry for one connection, installed by the controller in reactive mode:
    the same entry a learn action would make. The glue then sends the packet back through
    the pipeline (packet-out to OFPP_TABLE) so it takes the new entry."""
    match = {"eth_type": ETH_IP, "ip_proto": key.proto, "ipv4_src": key.src,
             "ipv4_dst": key.dst, "tcp_src": key.sport, "tcp_dst": key.dport}
    return [make_flow(tables.conn, PRIO_CONN, match,
                      [SetField(REG_BACKEND, _ipint(backend.ip))],
                      cookie=conn_cookie(vip.index, backend.ip),
                      idle_timeout=vip.conn_idle_timeout)]


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


def diff(current: Iterable[Any], desired: Iterable[FlowSpec]) -> FlowDiff:
    """Compare flows read from the switch (FlowSpecs, or any objects with table, priority,
    match and cookie) with the desired FlowSpecs.

    Only computed VIP flows (COOKIE_VIP prefix) count: learned connection entries and the
    base app's flows are never touched, so established connections survive a controller
    restart. Two flows are the same when (table, priority, match) are; a same flow needs
    rewriting when its cookie differs (the cookie carries a digest of the actions).
    """
    cur: dict[tuple, Any] = {}
    for f in current:
        if not is_computed(f.cookie):
            continue
        cur[(f.table, f.priority, normalize_match(f.match))] = f
    add, modify = [], []
    want: set[tuple] = set()
    for d in desired:
        ident = d.identity
        want.add(ident)
        old = cur.get(ident)
        if old is None:
            add.append(d)
        elif old.cookie != d.cookie or (isinstance(old, FlowSpec) and old != d):
            modify.append(d)
    delete = [f for ident, f in cur.items() if ident not in want]
    return FlowDiff(tuple(add), tuple(modify), tuple(delete))


# --- ovs-ofctl rendering -------------------------------------------------------------------
_OFCTL_MATCH = {"eth_type": "dl_type", "eth_src": "dl_src", "eth_dst": "dl_dst",
                "ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "ip_proto": "nw_proto",
                "tun_ipv4_dst": "tun_dst", "tun_ipv4_src": "tun_src"}
_OFCTL_SET = {"ipv4_src": "ip_src", "ipv4_dst": "ip_dst", "tun_ipv4_dst": "tun_dst",
              "tun_ipv4_src": "tun_src"}
_NXM = {"eth_src": "NXM_OF_ETH_SRC", "eth_dst": "NXM_OF_ETH_DST",
        "eth_type": "NXM_OF_ETH_TYPE", "ip_proto": "NXM_OF_IP_PROTO",
        "ipv4_src": "NXM_OF_IP_SRC", "ipv4_dst": "NXM_OF_IP_DST",
        "tcp_src": "NXM_OF_TCP_SRC", "tcp_dst": "NXM_OF_TCP_DST",
        "udp_src": "NXM_OF_UDP_SRC", "udp_dst": "NXM_OF_UDP_DST",
        "arp_op": "NXM_OF_ARP_OP", "arp_spa": "NXM_OF_ARP_SPA", "arp_tpa": "NXM_OF_ARP_TPA",
        "arp_sha": "NXM_NX_ARP_SHA", "arp_tha": "NXM_NX_ARP_THA", "in_port": "NXM_OF_IN_PORT",
        **{f"reg{n}": f"NXM_NX_REG{n}" for n in range(8)}}


def _val(field_name: str, v: Any) -> str:
    if field_name == "eth_type":
        return f"0x{v:04x}"
    if field_name.startswith("reg") or field_name == "metadata":
        return hex(v)
    return str(v)


def ofctl_action(a: Action) -> str:
    if isinstance(a, Output):
        return "in_port" if a.port == IN_PORT else f"output:{a.port}"
    if isinstance(a, Controller):
        return f"controller:{a.max_len}"
    if isinstance(a, SetField):
        return f"set_field:{_val(a.field, a.value)}->{_OFCTL_SET.get(a.field, a.field)}"
    if isinstance(a, Move):
        return f"move:{_NXM[a.src]}[]->{_NXM[a.dst]}[]"
    if isinstance(a, Multipath):
        return (f"multipath({a.fields},{a.basis},{a.algorithm},{a.n_links},{a.arg},"
                f"{_NXM[a.dst]}[0..{a.n_bits - 1}])")
    if isinstance(a, Resubmit):
        return f"resubmit(,{a.table})"
    if isinstance(a, Learn):
        parts = [f"table={a.table}", f"priority={a.priority}", f"cookie={a.cookie:#x}"]
        if a.idle_timeout:
            parts.append(f"idle_timeout={a.idle_timeout}")
        if a.hard_timeout:
            parts.append(f"hard_timeout={a.hard_timeout}")
        if a.fin_idle_timeout:
            parts.append(f"fin_idle_timeout={a.fin_idle_timeout}")
        parts += [f"{_OFCTL_MATCH.get(f, f)}={_val(f, v)}" for f, v in a.fixed]
        parts += [f"{_NXM[f]}[]" for f in a.copy]
        parts += [f"load:{v:#x}->{_NXM[f]}[]" for v, f in a.load]
        return "learn(" + ",".join(parts) + ")"
    raise TypeError(f"unknown action {a!r}")


def to_ofctl(flow: FlowSpec) -> str:
    """`ovs-ofctl -O OpenFlow13 add-flow BR '<this>'` syntax (OVS 3.1)."""
    head = [f"table={flow.table}", f"priority={flow.priority}", f"cookie={flow.cookie:#x}"]
    if flow.idle_timeout:
        head.append(f"idle_timeout={flow.idle_timeout}")
    if flow.hard_timeout:
        head.append(f"hard_timeout={flow.hard_timeout}")
    # Prerequisites first, as ovs-ofctl prints them.
    order = {"in_port": 0, "eth_type": 1, "ip_proto": 2}
    for k, v in sorted(flow.match, key=lambda kv: (order.get(kv[0], 9), kv[0])):
        head.append(f"{_OFCTL_MATCH.get(k, k)}={_val(k, v)}")
    acts = ",".join(ofctl_action(a) for a in flow.actions) or "drop"
    return ",".join(head) + " actions=" + acts
