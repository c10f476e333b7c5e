"""A backend's capacity limit: its share of the DC's capacity_rps, nginx's leaky bucket
(which the Python server mirrors), and the scenario keys that ask for it."""
from __future__ import annotations

import copy
import math
import random

import pytest
import yaml

from topologies import capacity, scenario
from topologies.capacity import BackendLimit, LeakyBucket
from topologies.scenario import ScenarioError


def _three_dc(**us1) -> scenario.Scenario:
    data = yaml.safe_load((scenario.SCENARIO_DIR / "three-dc.yaml").read_text())
    data["dcs"]["us1"].update(us1)
    return scenario.parse(copy.deepcopy(data), "x.yaml")


def test_no_overload_key_means_no_limit_as_before():
    s = _three_dc()
    assert all(d.overload == "none" and capacity.backend_limit(d) is None for d in s.dcs)


def test_capacity_is_split_over_the_backends_with_a_burst_and_a_queue():
    dc = _three_dc(overload="queue", overload_queue_s=0.5, max_concurrent=30).dc("us1")
    rate = dc.capacity_rps / dc.backends
    assert capacity.backend_limit(dc) == BackendLimit(rate, max(8, math.ceil(rate * 0.1)),
                                                      math.ceil(rate * 0.5), 30)
    shed = capacity.backend_limit(_three_dc(overload="shed").dc("us1"))
    assert shed.queue == 0 and shed.mode == "shed" and shed.max_concurrent is None


@pytest.mark.parametrize("keys, words", [
    ({"overload": "drop"}, "dcs.us1.overload: 'drop' is not one of none, shed, queue"),
    ({"overload_queue_s": 1}, "dcs.us1.overload_queue_s: applies only with overload"),
    ({"max_concurrent": 5}, "dcs.us1.max_concurrent: applies only with overload"),
    ({"overload": "shed", "max_concurrent": 0}, "max_concurrent: must be between 1 and"),
    ({"overload": "queue", "overload_queue_s": 0}, "overload_queue_s: must be between"),
])
def test_overload_mistakes_get_one_clear_line(keys, words):
    with pytest.raises(ScenarioError) as info:
        _three_dc(**keys)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("rate", [2.5, 7.5, 100.0])
def test_a_backend_under_its_capacity_refuses_almost_nothing_at_any_rate(rate):
    """A shedding backend's burst absorbs Poisson bunching: at 80% of its rate under 1%
    refused, whether its share of the DC is 2.5 or 100 requests/s."""
    limit = capacity.backend_limit(_three_dc(overload="shed").dc("us1"))
    bucket = LeakyBucket(rate, max(limit.burst, math.ceil(rate * capacity.JITTER_S)))
    rng, at, refused, n = random.Random(7), 0.0, 0, 20000
    for _ in range(n):
        at += rng.expovariate(0.8 * rate)
        refused += bucket.admit(at) is None
    assert refused / n < 0.01, refused / n


def test_leaky_bucket_admits_the_burst_at_once_then_refuses():
    bucket = LeakyBucket(rate=10, burst=3)
    got = [bucket.admit(0.0) for _ in range(6)]
    assert got == [0.0, 0.0, 0.0, 0.0, None, None]     # the first, then 3 over the rate
    assert bucket.admit(0.1) == 0.0                    # 0.1 s drains one at 10/s
    assert bucket.admit(0.1) is None


def test_leaky_bucket_queues_beyond_the_burst_so_they_leave_at_the_rate():
    bucket = LeakyBucket(rate=10, burst=1, queue=4)
    waits = [bucket.admit(0.0) for _ in range(7)]
    assert waits[:2] == [0.0, 0.0] and waits[6] is None
    assert waits[2:6] == pytest.approx([0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("offered", [50.0, 100.0, 200.0])
def test_leaky_bucket_serves_at_most_its_rate_of_poisson_arrivals(offered):
    rng = random.Random(4)
    bucket, at, served, n = LeakyBucket(rate=100, burst=10), 0.0, 0, 0
    while at < 60:
        at += rng.expovariate(offered)
        n += 1
        served += bucket.admit(at) is not None
    assert served / 60 <= 100 * 1.01 + 10 / 60
    # below the rate nearly everything passes (a burst of 0.1 s absorbs Poisson bunching)
    if offered < 100:
        assert served / n > 0.99
    else:
        assert served / 60 > 95


def test_leaky_bucket_refuses_nonsense():
    with pytest.raises(ValueError):
        LeakyBucket(rate=0, burst=1)
