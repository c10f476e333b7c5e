"""Flow keys and the bucket model of the switch's hash; bucket -> backend assignments.

How backend choice works in lblab's fast path (see controller/vipflows.py): Open vSwitch
writes a hash of the 5-tuple into reg0, and a bucket table with one flow per value of reg0
names the backend. The controller only fills that table, from a table of slots:
- `modn`: N slots for N healthy backends, slot i -> backend i (plain mod-N hashing);
- `maglev`: M slots, slot i -> maglev_table[i];
- `leastload`: a fixed slot count, slots handed to the least-loaded backends.

Two ways to compute the hash (`hash_impl`, topologies.scenario.HASH_IMPLS):
- `dp_hash` (the default): a select group makes the datapath compute a 32-bit hash of the
  5-tuple (hash(sym_l4(0)), then a recirculation) and the group's bucket moves its low k
  bits into reg0; the bucket table then has 2^k entries (`hash_entries`), entry v naming
  slot v mod M of the table (`expand`). No per-connection work in the slow path: the
  megaflows match k bits of dp_hash, not the 5-tuple. The basis is OVS's, 0 for all VIPs.
- `multipath`: the Nicira action `multipath(symmetric_l3l4+udp, basis, modulo_n, M, 0,
  reg0)` in the slow path, so every new 5-tuple is an upcall; the bucket table has exactly
  M entries. The VIP's hash_basis applies.

The Python side does not reproduce OVS's hash (flow_hash_symmetric_l3l4 over the datapath's
flow struct, or the kernel's flow dissector hash; not worth re-implementing byte for byte).
`bucket_of` (multipath) and `dp_hash_of` (dp_hash) are *models* with the same shape:
symmetric in (src, dst), stable across processes, uniform.
Synthetic remap experiments and the fake flow table use it; the integration experiment
measures remapping on the real switch instead.
"""
from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
TCP = 6
UDP = 17


@dataclass(frozen=True, order=True)
class FlowKey:
    """A transport 5-tuple, as the switch sees it on the client -> VIP packet."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int

    @classmethod
    def from_fields(cls, fields: Mapping[str, object]) -> FlowKey:
        """From packet fields named as in vipflows (ipv4_src, tcp_src, ...)."""
        proto = int(fields.get("ip_proto", TCP))
        l4 = "udp" if proto == UDP else "tcp"
        return cls(str(fields["ipv4_src"]), str(fields["ipv4_dst"]), proto,
                   int(fields.get(f"{l4}_src", 0)), int(fields.get(f"{l4}_dst", 0)))

    def fields(self) -> dict[str, object]:
        """Packet fields for the fake flow table (eth_type/ip_proto included)."""
        l4 = "udp" if self.proto == UDP else "tcp"
        return {"eth_type": 0x0800, "ip_proto": self.proto, "ipv4_src": self.src,
                "ipv4_dst": self.dst, f"{l4}_src": self.sport, f"{l4}_dst": self.dport}


def key_hash(key: FlowKey, basis: int = 0) -> int:
    """Stable 64-bit hash of a 5-tuple, symmetric like OVS's symmetric_l3l4: the two
    directions of a connection hash alike."""
    a = (int(ipaddress.IPv4Address(key.src)), key.sport)
    b = (int(ipaddress.IPv4Address(key.dst)), key.dport)
    lo, hi = min(a, b), max(a, b)
    data = b"%d|%d|%d|%d|%d|%d" % (lo[0], lo[1], hi[0], hi[1], key.proto, basis)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8,
                                          person=b"lblab-multipath").digest(), "big")


def bucket_of(key: FlowKey, n_links: int, basis: int = 0) -> int:
    """Model of `multipath(..., modulo_n, n_links, ...)`: the bucket in 0..n_links-1."""
    if n_links < 1:
        raise ValueError(f"n_links must be >= 1, got {n_links}")
    return key_hash(key, basis) % n_links


# dp_hash: at least this many bucket-table entries, so that slot = entry mod M stays even for
# small M (mod-N over 8 backends: 128 entries each; Maglev's 1021 slots: 3 of them twice).
DP_HASH_MIN_ENTRIES = 1024


def hash_entries(n_slots: int, hash_impl: str) -> int:
    """Entries of the switch's bucket table for a table of n_slots: multipath n_slots;
    dp_hash the power of two >= n_slots (and >= DP_HASH_MIN_ENTRIES)."""
    if n_slots < 1:
        raise ValueError(f"a bucket table needs at least one slot, got {n_slots}")
    if hash_impl == "multipath":
        return n_slots
    return max(DP_HASH_MIN_ENTRIES, 1 << (n_slots - 1).bit_length())


def expand(table: Sequence[T], hash_impl: str) -> list[T]:
    """The switch's bucket table (entry -> backend) for a slot table: itself for multipath;
    for dp_hash, entry v -> table[v mod M]."""
    n = len(table)
    return list(table) if hash_impl == "multipath" or not table else \
        [table[v % n] for v in range(hash_entries(n, hash_impl))]


def dp_hash_of(key: FlowKey) -> int:
    """Model of the datapath's hash(sym_l4(0)): 32 bits, never 0 (0 means "not computed")."""
    return (key_hash(key, 0) & 0xFFFFFFFF) or 1


def entry_of(key: FlowKey, n_entries: int, hash_impl: str, basis: int = 0) -> int:
    """The bucket-table entry a key hashes to: multipath's modulo, or dp_hash's low bits."""
    if hash_impl == "multipath":
        return bucket_of(key, n_entries, basis)
    return dp_hash_of(key) & (n_entries - 1)


def modn_assignment(backends: Sequence[T]) -> list[T]:
    """mod-N: bucket i -> backends[i] (n_links = len(backends); weights are not used)."""
    return list(backends)


def maglev_assignment(backends: Sequence[str], m: int | None = None,
                      weights: Mapping[str, float] | None = None) -> list[str]:
    """Maglev: bucket i -> maglev_table[i] (n_links = M)."""
    from controller.maglev import build_table
    return build_table(backends, m, weights)


def dealt(table: Sequence[T], seed: int) -> list[T]:
    """`table` with its buckets in an order of `seed`'s own (seed 0: unchanged).

    Least-load decides from one LB's own counts; which bucket a flow's hash lands in plays
    no part in that choice. Without this, two LBs with the same counts (at start, every
    count 0) would build the same bucket list and send a flow that moves between them to
    the same backend: a correlation of this bucket implementation, not of the LBs' state.
    Each LB of a tier deals its buckets in its own order, so the choice is not reproducible
    on another LB; the share of buckets (new connections) each backend gets is unchanged."""
    if not seed:
        return list(table)
    order = list(range(len(table)))
    random.Random(f"lblab-leastload-deal-{seed}").shuffle(order)
    return [table[i] for i in order]


def leastload_assignment(counts: Mapping[str, int], weights: Mapping[str, float] | None,
                         n_buckets: int, per_bucket: float = 1.0) -> list[str]:
    """Least-load: hand the buckets out to the least-loaded backends (water filling).

    `counts` maps each eligible backend (the keys, in order) to its active connections.
    Each bucket is assumed to bring `per_bucket` new connections before the controller
    rebuilds the table, so bucket by bucket the backend with the smallest
    (count + assigned * per_bucket) / weight wins; ties go to the earlier backend. With one
    clearly idle backend every bucket goes to it; with equal loads the buckets are shared
    evenly and interleaved. It decides only for new connections: established ones keep
    their backend through the connection table (or, with conntrack off, keep hashing to the
    same bucket until the table is rebuilt).
    """
    names = list(counts)
    if not names:
        raise ValueError("least-load needs at least one backend")
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    w = {n: float((weights or {}).get(n, 1.0)) for n in names}
    if any(x <= 0 for x in w.values()):
        raise ValueError(f"weights must be > 0: {w}")
    load = {n: float(counts[n]) for n in names}
    out: list[str] = []
    for _ in range(n_buckets):
        best = min(names, key=lambda n: load[n] / w[n])  # min() keeps the earliest on ties
        out.append(best)
        load[best] += per_bucket
    return out


def backend_for(key: FlowKey, assignment: Sequence[T], basis: int = 0,
                hash_impl: str = "multipath") -> T:
    """Model of the whole fast path without conntrack: the hash, then the bucket table."""
    entries = expand(assignment, hash_impl)
    return entries[entry_of(key, len(entries), hash_impl, basis)]


def synthetic_keys(n: int, dst: str, dport: int = 80, seed: int = 1,
                   src_net: str = "172.16.0.0/12") -> list[FlowKey]:
    """n distinct deterministic client keys towards dst:dport (remap experiments, tests)."""
    rng = random.Random(seed)
    net = ipaddress.IPv4Network(src_net)
    seen: set[FlowKey] = set()
    out: list[FlowKey] = []
    while len(out) < n:
        src = str(net.network_address + rng.randrange(1, net.num_addresses - 1))
        k = FlowKey(src, dst, TCP, rng.randrange(1024, 65536), dport)
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out
