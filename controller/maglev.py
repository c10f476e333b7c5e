"""Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
Load Balancer", NSDI 2016, section 3.4), pure Python, no Ryu, no Mininet.

Why Maglev: a lookup table of prime size M maps every hash bucket to a backend so that (1) the
backends get almost equal shares of the buckets and (2) removing or adding one backend moves
only about 1/N of the buckets. mod-N hashing has (1) but moves about (N-1)/N of the keys.

The algorithm, as in the paper (Pseudocode 1):
- each backend i gets offset_i = h1(name_i) mod M and skip_i = h2(name_i) mod (M-1) + 1;
  its preference list (a permutation of 0..M-1, because M is prime and 1 <= skip < M) is
  permutation_i[j] = (offset_i + j * skip_i) mod M;
- the backends take turns in a fixed order; on its turn a backend walks its preference list
  to the first still-empty slot and claims it; stop when all M slots are filled.

The turn order breaks ties between backends that prefer the same slot, so it decides part
of the table. lblab takes the turns in the order of the backends' names, not in the order a
pool lists them: the table is a function of the *set* of backends (and their weights).
Every load balancer that serves a VIP must compute the same table from the same pool, or a
connection's packets that ECMP sends to another LB land on another backend; a pool whose
members were added over REST in another order must not change it either (katran sorts its
endpoints by hash before building its ring for the same reason). Measured with turns in
list order: 25-27 of 8,191 slots differed between an 8-backend pool and the same pool
listed in reverse.

Weights (the paper only says Maglev "supports weighted backends"; this is lblab's method):
each round every backend earns weight_i / max_weight turns of credit and takes one turn per
whole credit. With equal weights this is exactly the paper's round robin; a backend with twice
the weight claims about twice the slots, and the preference lists (hence the minimal
disruption) are unchanged.

Hashes are blake2b with fixed personalisation strings, never Python's salted hash(), so every
process (controller, experiment, test) builds the same table.

Table size: M must be prime and >= 100 * N (the paper uses M >> N to keep the shares within
about 1%). Maglev's disruption is not perfectly minimal: removing one of N backends moves its
1/N of the slots plus a cascade that shrinks as M/N grows. Measured with this module
(slots moved x N, worst backend of 8 removed): M = 1021 (~128 N) 1.25, 2039 1.15, 4093 1.11,
8191 (~1024 N) 1.07, 65521 1.03; for N = 16 at ~1024 N: 1.14 (backends named b0, b1, ...:
the cascade depends on the names' hashes, and backend0..backend7 gave 1.18 at M = 8191).
lblab's acceptance bound is
1.15, hence the default of about 1000 slots per backend (DEFAULT_SLOTS_PER_BACKEND), capped
at 65521, the largest table OVS's multipath can address. `default_table_size` picks from a
ladder of primes just below powers of two, so M stays put while the pool grows or shrinks
inside one rung: changing M reshuffles everything.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

# Multiplier for the lower bound M >= MIN_SLOTS_PER_BACKEND * N (paper: "M >> N").
MIN_SLOTS_PER_BACKEND = 100
# Default slots per backend: keeps the extra disruption of a pool change under ~10% for N <= 8
# (see the module docstring), at the cost of M bucket flows per VIP in the switch.
DEFAULT_SLOTS_PER_BACKEND = 1000


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def next_prime(n: int) -> int:
    """Smallest prime >= n."""
    n = max(n, 2)
    while not is_prime(n):
        n += 1
    return n


def _prev_prime(n: int) -> int:
    while not is_prime(n):
        n -= 1
    return n


# 127, 251, 509, 1021, ... 65521: the largest prime below each power of two from 2^7 to 2^16.
# 65521 is also the largest table OVS's multipath action can address (n_links <= 65536).
PRIME_LADDER = tuple(_prev_prime(2 ** k) for k in range(7, 17))


def default_table_size(n_backends: int) -> int:
    """Smallest ladder prime >= 1000 * n_backends, else the top of the ladder (65521) if that
    still holds >= 100 * n_backends, else next_prime(100 * n_backends).

    Give it the size of the whole pool (up, down and drain), not only the healthy backends,
    so a health flap never changes M.
    """
    if n_backends < 1:
        raise ValueError(f"a Maglev table needs at least one backend, got {n_backends}")
    want = DEFAULT_SLOTS_PER_BACKEND * n_backends
    for m in PRIME_LADDER:
        if m >= want:
            return m
    if PRIME_LADDER[-1] >= MIN_SLOTS_PER_BACKEND * n_backends:
        return PRIME_LADDER[-1]
    return next_prime(MIN_SLOTS_PER_BACKEND * n_backends)


def validate_table_size(m: int, n_backends: int) -> None:
    """Raise ValueError unless m is prime and >= 100 * n_backends."""
    if not is_prime(m):
        raise ValueError(f"Maglev table size {m} is not prime (try {next_prime(m)}): "
                         "the permutations cover every slot only when M is prime")
    if m < MIN_SLOTS_PER_BACKEND * n_backends:
        raise ValueError(f"Maglev table size {m} is too small for {n_backends} backends: "
                         f"need M >= {MIN_SLOTS_PER_BACKEND} * N = "
                         f"{MIN_SLOTS_PER_BACKEND * n_backends} (try "
                         f"{default_table_size(n_backends)})")


def _h(name: str, person: bytes) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big")


def offset_skip(name: str, m: int) -> tuple[int, int]:
    """The paper's (offset, skip) for one backend: its permutation is offset + j*skip mod M."""
    return _h(name, b"lblab-maglev-h1") % m, _h(name, b"lblab-maglev-h2") % (m - 1) + 1


def build_table(backends: Sequence[str], m: int | None = None,
                weights: Mapping[str, float] | None = None) -> list[str]:
    """Maglev lookup table: a list of length M, slot -> backend name.

    `backends` are unique names, in any order (turns are taken in name order: the module
    docstring says why); `m` defaults to default_table_size(len(backends)); `weights` maps
    name -> positive weight (missing names weigh 1).
    """
    names = sorted(backends)
    if not names:
        raise ValueError("a Maglev table needs at least one backend")
    if len(set(names)) != len(names):
        raise ValueError(f"backend names must be unique: {names}")
    m = default_table_size(len(names)) if m is None else m
    validate_table_size(m, len(names))
    w = [float((weights or {}).get(n, 1.0)) for n in names]
    if any(x <= 0 for x in w):
        raise ValueError(f"Maglev weights must be > 0 (drain a backend instead): "
                         f"{dict(zip(names, w))}")
    wmax = max(w)
    params = [offset_skip(n, m) for n in names]
    pos = [o for o, _ in params]          # current position in each preference list
    skip = [s for _, s in params]
    credit = [0.0] * len(names)
    owner = [-1] * m
    filled = 0
    while True:
        for i in range(len(names)):
            credit[i] += w[i]
            while credit[i] >= wmax:
                credit[i] -= wmax
                c, s = pos[i], skip[i]
                # Walk the preference list to the next empty slot (tight loop: the hot path).
                while owner[c] >= 0:
                    c += s
                    if c >= m:
                        c -= m
                owner[c] = i
                nxt = c + s
                pos[i] = nxt - m if nxt >= m else nxt
                filled += 1
                if filled == m:
                    return [names[i] for i in owner]


def table_shares(table: Sequence[Hashable]) -> dict:
    """backend -> fraction of the table's slots it owns."""
    if not table:
        return {}
    counts = Counter(table)
    return {b: c / len(table) for b, c in counts.items()}


def max_mean_share(table: Sequence[Hashable]) -> float:
    """Largest share divided by the mean share (1.0 = perfectly even)."""
    shares = table_shares(table)
    return max(shares.values()) * len(shares) if shares else 0.0


def remap_fraction(keys: Iterable, before_fn: Callable, after_fn: Callable) -> float:
    """Fraction of keys whose choice differs between before_fn(key) and after_fn(key)."""
    total = moved = 0
    for k in keys:
        total += 1
        if before_fn(k) != after_fn(k):
            moved += 1
    return moved / total if total else 0.0


def build_time_ms(n: int = 100, m: int = 65537, repeat: int = 3) -> float:
    """Best-of-`repeat` wall time to build an N-backend, size-M table (metric
    `maglev_table_build_ms`)."""
    names = [f"backend{i}" for i in range(n)]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        build_table(names, m)
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0
