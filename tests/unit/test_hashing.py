"""Flow keys, the multipath model and the bucket assignments."""
from __future__ import annotations

from collections import Counter

import pytest

from controller import hashing
from controller.hashing import FlowKey


def test_key_hash_is_symmetric_and_basis_sensitive():
    k = FlowKey("192.0.2.1", "10.101.0.100", 6, 40000, 80)
    rev = FlowKey("10.101.0.100", "192.0.2.1", 6, 80, 40000)
    assert hashing.key_hash(k) == hashing.key_hash(rev)
    assert hashing.key_hash(k, 0) != hashing.key_hash(k, 1)


def test_bucket_of_range_and_uniformity():
    keys = hashing.synthetic_keys(8000, "10.101.0.100")
    counts = Counter(hashing.bucket_of(k, 8) for k in keys)
    assert set(counts) == set(range(8))
    assert max(counts.values()) / (8000 / 8) < 1.1
    with pytest.raises(ValueError):
        hashing.bucket_of(keys[0], 0)


def test_flowkey_fields_round_trip():
    k = FlowKey("192.0.2.1", "10.101.0.100", 6, 40000, 80)
    assert FlowKey.from_fields(k.fields()) == k


def test_synthetic_keys_distinct_and_deterministic():
    a = hashing.synthetic_keys(1000, "10.0.0.1", seed=3)
    assert len(set(a)) == 1000 and a == hashing.synthetic_keys(1000, "10.0.0.1", seed=3)


def test_modn_and_maglev_assignments():
    assert hashing.modn_assignment(["a", "b", "c"]) == ["a", "b", "c"]
    assert hashing.modn_assignment(range(3)) == [0, 1, 2]
    t = hashing.maglev_assignment(["a", "b"], 251)
    assert len(t) == 251 and set(t) == {"a", "b"}


def test_leastload_gives_new_flows_to_the_idle_backend():
    t = hashing.leastload_assignment({"a": 100, "b": 10, "c": 100}, None, 64)
    assert set(t) == {"b"}


def test_leastload_equal_loads_share_evenly_and_interleave():
    t = hashing.leastload_assignment({"a": 5, "b": 5}, None, 8)
    assert t == ["a", "b"] * 4


def test_leastload_water_fills_and_honours_weights():
    t = hashing.leastload_assignment({"a": 0, "b": 4}, None, 12)
    c = Counter(t)
    assert c["a"] == 8 and c["b"] == 4   # a fills up to b's level, then they alternate
    w = Counter(hashing.leastload_assignment({"a": 0, "b": 0}, {"a": 3, "b": 1}, 40))
    assert w["a"] == 30 and w["b"] == 10


def test_leastload_bad_input():
    with pytest.raises(ValueError):
        hashing.leastload_assignment({}, None, 4)
    with pytest.raises(ValueError):
        hashing.leastload_assignment({"a": 1}, None, 0)


def test_dealt_keeps_the_shares_and_seed_zero_keeps_the_order():
    table = hashing.leastload_assignment({"a": 0, "b": 3, "c": 1}, None, 64)
    assert hashing.dealt(table, 0) == table
    one, two = hashing.dealt(table, 1), hashing.dealt(table, 2)
    assert sorted(one) == sorted(two) == sorted(table)
    assert one != table and one != two
    assert hashing.dealt(table, 1) == one                     # reproducible
