"""Seeds of a run's random streams, derived from the run's --seed.

Why not `seed + i`: repetitions of a suite run with seeds seed, seed+1, ..., so with
`seed + i` client i+1 of repetition r would replay client i of repetition r+1, and the
repetitions a confidence interval is computed over would share their randomness. A hash of
(run seed, stream name) gives every stream of every repetition its own sequence, and the
same again for the same --seed.
"""
from __future__ import annotations

import hashlib


def derive(seed: int, *stream) -> int:
    """A seed in 0..2**31-1 for the random stream named `stream` of a run seeded `seed`."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(map(str, stream))).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
