"""The VIP balancer's desired state: VIPs, backends, the LB switch, and their validation. Pure.

`Vip`, `Backend` and `LbSwitch` are what the controller holds for each LB switch (from its
config file, changed over REST) and what controller/vipflows.py turns into flows. `validate`
refuses a state that cannot become flows, with a message naming the VIP and the problem;
`assignment` is the bucket -> backend table of a VIP's algorithm (controller/hashing.py,
controller/maglev.py).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller import hashing, maglev
from topologies.scenario import ALGORITHMS, CONNTRACK_IMPLS, HASH_IMPLS, MODES

STATES = ("up", "down", "drain")
# What may be set for a whole VIP: over REST, and for every VIP of a run (LiveNet overrides).
SETTINGS = ("mode", "algorithm", "conntrack", "conntrack_impl", "hash_impl", "reactive",
            "table_size")

BUCKET_BITS = 16                  # reg0[0..15]: multipath addresses n_links <= 65536, and
                                  # dp_hash's 2^k entries stay within 16 bits too
MAX_BUCKETS = 1 << BUCKET_BITS
LEASTLOAD_BUCKETS = 64
DEFAULT_FIRST_TABLE = 10


class VipError(ValueError):
    """The desired VIP state cannot be turned into flows; the message says why."""


# --- desired state -------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """A pool member. `state`: up takes new connections; drain and down take none but keep
    the connections already learned for them (controller/vipflows.py says how). `weight` counts for
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
    # ct: the datapath's connection tracker (ct_mark = backend, ct(nat) for mode nat);
    # learn: learned exact flows (controller/vipflows.py). The model's default is learn;
    # scenarios default to ct. `uses_ct` says where ct applies.
    conntrack_impl: str = "learn"
    # dp_hash: the datapath hashes (select group); multipath: the slow path (controller/hashing.py)
    hash_impl: str = "dp_hash"
    table_size: int | None = None     # maglev: M (prime >= 100 N); leastload: bucket count
    backends: tuple[Backend, ...] = ()
    index: int = 1                    # 1..255, unique per switch: reg2 value, cookie bits
    reactive: bool = False
    conn_idle_timeout: int = 60
    conn_fin_timeout: int = 0         # >0: learned entry idles out this fast after FIN/RST
    hash_basis: int = 0
    # k of the LB tier's instance this config is for (0: the DC's only LB); only leastload
    # uses it: its buckets are dealt in an order of each LB's own (hashing.dealt)
    lb: int = 0


@dataclass(frozen=True)
class TableLayout:
    """`l2`: the base app's first table, where the VIP classifier flows go; the others are
    the VIP app's own tables (see the module docstring)."""

    l2: int = 0
    conn: int = DEFAULT_FIRST_TABLE
    select: int = DEFAULT_FIRST_TABLE + 1
    bucket: int = DEFAULT_FIRST_TABLE + 2
    backend: int = DEFAULT_FIRST_TABLE + 3
    out: int = DEFAULT_FIRST_TABLE + 4       # ct: after the commit's recirculation
    reverse: int = DEFAULT_FIRST_TABLE + 5   # ct: backend -> client, after ct(nat)

    @property
    def l2_dst(self) -> int:
        """The base app's destination lookup table (its second)."""
        return self.l2 + 1

    @classmethod
    def starting_at(cls, first_table: int, l2: int = 0) -> TableLayout:
        if first_table <= l2 + 1:
            raise VipError(f"VIP tables must come after the L2 tables {l2}-{l2 + 1}, "
                           f"got {first_table}")
        return cls(l2, *range(first_table, first_table + 6))


@dataclass(frozen=True)
class LbSwitch:
    """The LB switch as the VIP flows need it."""

    uplink_port: int                  # towards the DC router (clients)
    dc_subnet: str                    # the L2 segment of the backends, e.g. 10.101.0.0/24
    gre_port: int | None = None       # OVS gre port (remote_ip=flow) for mode gre
    gre_mark: int = 0                 # pkt_mark selecting this LB's underlay routes (0: none)
    ct_zone: int = 1                  # this LB's conntrack zone: its entries are its own
    tables: TableLayout = TableLayout()
    # One LB instance of a tier behind ECMP (one-armed): its own MAC, the source of what it
    # forwards; every backend is reached back out of the port the packet came in on.
    one_armed_mac: str | None = None


# --- validation ----------------------------------------------------------------------------
def uses_ct(vip: Vip) -> bool:
    """Whether the VIP's connection table is the datapath's conntrack. With conntrack_impl
    ct it is, except: without connection tracking (conntrack false) there is none; reactive
    VIPs keep the controller's exact flows; gre keeps learn, because a remote backend's
    replies never pass this switch and a tracker that sees one direction of a TCP connection
    marks its packets invalid after the SYN (Linux conntrack), so ct_mark would be lost."""
    return (vip.conntrack and vip.conntrack_impl == "ct" and not vip.reactive
            and vip.mode in ("nat", "dsr"))


def validate(switch: LbSwitch, vips: Sequence[Vip]) -> None:
    """Raise VipError naming the VIP and the problem; nothing is computed from bad state."""
    subnet = _net(switch.dc_subnet, "dc_subnet")
    if not 1 <= switch.ct_zone <= 65535:
        raise VipError(f"ct_zone must be 1..65535, got {switch.ct_zone}")
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
        if v.conntrack_impl not in CONNTRACK_IMPLS:
            raise VipError(f"{where}: unknown conntrack_impl {v.conntrack_impl!r} "
                           f"(one of {', '.join(CONNTRACK_IMPLS)})")
        if v.hash_impl not in HASH_IMPLS:
            raise VipError(f"{where}: unknown hash_impl {v.hash_impl!r} "
                           f"(one of {', '.join(HASH_IMPLS)})")
        if not v.ports or any(not 1 <= p <= 65535 for p in v.ports):
            raise VipError(f"{where}: ports must be 1..65535, got {v.ports}")
        if switch.one_armed_mac is not None and (v.mode == "nat" or uses_ct(v)):
            raise VipError(f"{where}: an LB of a tier (one-armed, behind ECMP) serves modes "
                           "dsr and gre with conntrack_impl learn only: it sees one direction "
                           f"of a connection (got mode {v.mode}, conntrack_impl "
                           f"{v.conntrack_impl})")
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
            if not 0 < b.weight < float("inf"):
                raise VipError(f"{bw}: weight must be a finite number > 0 (use state drain), "
                               f"got {b.weight}")
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
def eligible(vip: Vip) -> list[Backend]:
    """Backends that may take new connections."""
    return [b for b in vip.backends if b.state == "up"]


def slot_count(algorithm: str, up: int, pool: int, table_size: int | None = None) -> int:
    """Slots of a lookup table: modn one per up backend; maglev M for the whole pool (up,
    down and drain, so health flaps keep M); leastload a fixed count."""
    if algorithm == "modn":
        return up
    if algorithm == "maglev":
        return table_size or maglev.default_table_size(pool)
    return table_size or LEASTLOAD_BUCKETS


def table_slots(vip: Vip) -> int:
    """len(assignment(vip)) without building the table (0 when no backend is up)."""
    up = len(eligible(vip))
    return slot_count(vip.algorithm, up, len(vip.backends), vip.table_size) if up else 0


def assignment(vip: Vip, loads: Mapping[str, int] | None = None) -> list[Backend]:
    """bucket -> backend for the VIP's algorithm over its up backends ([] if none is up)."""
    up = eligible(vip)
    if not up:
        return []
    by_name = {b.name: b for b in up}
    names = [b.name for b in up]
    weights = {b.name: b.weight for b in up}
    slots = table_slots(vip)
    if vip.algorithm == "modn":
        table = hashing.modn_assignment(names)
    elif vip.algorithm == "maglev":
        table = hashing.maglev_assignment(names, slots, weights)
    else:
        counts = {n: int((loads or {}).get(n, 0)) for n in names}
        table = hashing.dealt(hashing.leastload_assignment(counts, weights, slots), vip.lb)
    return [by_name[n] for n in table]


def choose_backend(vip: Vip, key: hashing.FlowKey,
                   loads: Mapping[str, int] | None = None) -> Backend | None:
    """The backend the fast path would pick for a new connection (used by reactive mode,
    where the controller decides, and by experiments)."""
    table = assignment(vip, loads)
    return hashing.backend_for(key, table, vip.hash_basis, vip.hash_impl) if table else None
