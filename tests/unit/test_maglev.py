"""Maglev table: the paper's properties (even shares, minimal disruption), sizes, weights."""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from controller import maglev
from controller.hashing import backend_for, modn_assignment, synthetic_keys

ROOT = Path(__file__).resolve().parents[2]
NAMES8 = [f"b{i}" for i in range(8)]


def test_next_prime_and_is_prime():
    assert [maglev.next_prime(n) for n in (0, 2, 4, 100, 65536)] == [2, 2, 5, 101, 65537]
    assert maglev.is_prime(65521) and not maglev.is_prime(65535)


def test_default_table_size_is_prime_big_enough_and_stable_within_a_rung():
    for n in (1, 2, 7, 8, 9, 10, 100, 655, 700):
        m = maglev.default_table_size(n)
        assert maglev.is_prime(m) and m >= 100 * n
    # Growing 5 -> 8 backends keeps M: no reshuffle of everything on a pool change.
    assert len({maglev.default_table_size(n) for n in (5, 6, 8)}) == 1
    assert maglev.default_table_size(8) == 8191
    assert maglev.default_table_size(100) == 65521  # capped at multipath's limit
    with pytest.raises(ValueError):
        maglev.default_table_size(0)


@pytest.mark.parametrize("m, msg", [(1000, "not prime"), (797, "too small")])
def test_bad_table_size_is_a_clear_error(m, msg):
    with pytest.raises(ValueError, match=msg):
        maglev.build_table(NAMES8, m)


def test_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        maglev.build_table([])
    with pytest.raises(ValueError, match="unique"):
        maglev.build_table(["a", "a"])
    with pytest.raises(ValueError, match="> 0"):
        maglev.build_table(["a", "b"], weights={"a": 0})


def test_permutation_follows_the_paper():
    m = 809
    offset, skip = maglev.offset_skip("b3", m)
    assert 0 <= offset < m and 1 <= skip <= m - 1
    perm = {(offset + j * skip) % m for j in range(m)}
    assert perm == set(range(m))  # M prime: every slot appears once


def test_single_backend_owns_every_slot():
    assert set(maglev.build_table(["only"], 101)) == {"only"}


def test_every_slot_filled_and_shares_even():
    for m in (809, maglev.default_table_size(8), 65521):
        table = maglev.build_table(NAMES8, m)
        assert len(table) == m and set(table) == set(NAMES8)
        assert maglev.max_mean_share(table) <= 1.10
        assert sum(maglev.table_shares(table).values()) == pytest.approx(1.0)


def test_deterministic_across_processes():
    code = ("from controller import maglev; import hashlib;"
            "t = maglev.build_table([f'b{i}' for i in range(8)], 809);"
            "print(hashlib.sha256(','.join(t).encode()).hexdigest())")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin"}).stdout
            for seed in (1, 2)}
    assert len(outs) == 1


def test_weights_respected_roughly():
    table = maglev.build_table(NAMES8, 1021, weights={"b0": 2.0, "b1": 0.5})
    s = maglev.table_shares(table)
    unit = 1 / 8.5  # total weight 2 + 0.5 + 6
    assert s["b0"] == pytest.approx(2 * unit, rel=0.1)
    assert s["b1"] == pytest.approx(0.5 * unit, rel=0.1)
    assert s["b5"] == pytest.approx(unit, rel=0.1)


def test_equal_weights_reduce_to_the_unweighted_table():
    assert maglev.build_table(NAMES8, 809, weights={n: 3 for n in NAMES8}) == \
        maglev.build_table(NAMES8, 809)


def test_removing_one_of_eight_moves_little_while_modn_moves_most():
    keys = synthetic_keys(10_000, "10.101.0.100")
    m = maglev.default_table_size(8)
    survivors = NAMES8[:3] + NAMES8[4:]   # b3 removed
    before = maglev.build_table(NAMES8, m)
    after = maglev.build_table(survivors, m)
    mag = maglev.remap_fraction(keys, lambda k: backend_for(k, before),
                                lambda k: backend_for(k, after))
    assert mag <= 1.15 / 8
    # Keys of the removed backend must move; Maglev moves little else.
    assert mag >= maglev.table_shares(before)["b3"] * 0.8
    modn_before, modn_after = modn_assignment(NAMES8), modn_assignment(survivors)
    modn = maglev.remap_fraction(keys, lambda k: backend_for(k, modn_before),
                                 lambda k: backend_for(k, modn_after))
    assert modn >= 0.5


@pytest.mark.parametrize("n", [4, 8])
def test_slot_disruption_of_every_removal_within_bound(n):
    names = [f"b{i}" for i in range(n)]
    m = maglev.default_table_size(n)
    before = maglev.build_table(names, m)
    for gone in names:
        after = maglev.build_table([x for x in names if x != gone], m)
        moved = sum(a != b for a, b in zip(before, after)) / m
        assert moved <= 1.10 / n, gone


def test_small_table_disrupts_more_than_default():
    # Why the default is ~1000 slots per backend: at the 100 N minimum the cascade is bigger.
    small, big = 809, maglev.default_table_size(8)
    def moved(m):
        b = maglev.build_table(NAMES8, m)
        a = maglev.build_table(NAMES8[1:], m)
        return sum(x != y for x, y in zip(a, b)) / m
    assert moved(small) > moved(big)


def test_adding_one_moves_little():
    keys = synthetic_keys(10_000, "10.101.0.100", seed=7)
    m = maglev.default_table_size(9)
    before = maglev.build_table(NAMES8, m)
    after = maglev.build_table(NAMES8 + ["b8"], m)
    frac = maglev.remap_fraction(keys, lambda k: backend_for(k, before),
                                 lambda k: backend_for(k, after))
    assert frac <= 1.15 / 9


def test_build_time_is_well_under_a_second():
    assert maglev.build_time_ms(100, 65537, repeat=1) < 1000


def test_the_table_depends_on_the_set_of_backends_not_their_order():
    """Every LB of a VIP must build the same table from the same pool, whatever order its
    config or REST changes listed the backends in."""
    names = ["lbb-us13", "lbb-us11", "lbb-us15", "lbb-us12", "lbb-us14"]
    weights = {"lbb-us11": 2.0, "lbb-us14": 0.5}
    tables = {tuple(maglev.build_table(list(order), 509, weights))
              for order in itertools.permutations(names)}
    assert len(tables) == 1
    # ... and the same holds where the controller builds it, from a Vip's pool.
    from controller.vipmodel import Backend, Vip, assignment
    pool = [Backend(n, f"10.101.0.{11 + i}", "02:1b:0a:65:00:0b", 11 + i)
            for i, n in enumerate(names)]
    seen = {tuple(b.name for b in assignment(Vip("us1", "10.101.0.100", "02:1c:0a:65:00:64",
                                                 backends=tuple(order))))
            for order in itertools.permutations(pool)}
    assert len(seen) == 1
