"""Populations without a network: the scenario block and its one-line errors, who each user
is (address, subnet, resolver, behaviour; the same for the same seed), the plan's routes to
them, and the client's pieces (schedule, address choice, stub cache, the herd number)."""
from __future__ import annotations

import collections
import copy
import ipaddress
import random

import pytest
import yaml

from experiments import dnsnet
from experiments.dns_rr_pop import interleaved, max_mean_over_time, variants
from experiments.workloads.population import StubCache, attempt_order, schedule
from lab.population import local_blocks
from topologies import population, scenario
from topologies.plan import build_plan, population_host
from topologies.scenario import ScenarioError


def pop_data() -> dict:
    return yaml.safe_load((scenario.SCENARIO_DIR / "three-dc-pop.yaml").read_text())


def parse(data: dict):
    return scenario.parse(data, "pop.yaml")


def _error(edit) -> str:
    data = pop_data()
    edit(data)
    with pytest.raises(ScenarioError) as info:
        parse(data)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("pop.yaml: ")
    return msg


def test_three_dc_pop_holds_the_population_it_says():
    s = scenario.load("three-dc-pop")
    assert [r.name for r in s.populations] == ["na", "eu", "ap"]
    assert sum(r.population.users for r in s.populations) == 2100
    assert len(population.all_resolvers(s)) == 3 * 34 + 1
    assert s.dns.public_resolver.site == "eu"
    # a region without the block is exactly as before
    assert scenario.load("three-dc").populations == []


def _set(path: str, value):
    def edit(data):
        node = data
        *head, last = path.split(".")
        for key in head:
            node = node[key]
        if value is _DROP:
            del node[last]
        else:
            node[last] = value
    return edit


_DROP = object()


@pytest.mark.parametrize("path, value, words", [
    ("regions.na.population.users", 0, "population.users: must be between 1 and 20000"),
    ("regions.na.population.users", 30000, "between 1 and 20000, got 30000"),
    ("regions.na.population.user_prefix", "10.11.0.0/24", "too small"),
    ("regions.na.population.user_prefix", "10.2.0.0/16", "overlaps"),
    ("regions.na.population.resolvers", 500, "between 1 and 200"),
    ("regions.na.population.spread", "pareto", "spread"),
    ("regions.na.population.behaviours", {"random": 1, "bogus": 1}, "'bogus' is not one of"),
    ("regions.na.population.behaviours", {"first": 0}, "weight must be a number above 0"),
    ("regions.na.population.behaviours", [], "expected a mapping"),
    ("regions.na.population.public_share", 1.5, "public_share"),
    ("regions.na.population.rate", 1, "rate"),           # unknown key
    ("regions.na.population.workloads", {"video": 1}, "'video' is not one of search, upload"),
    ("regions.na.population.workloads", {"upload": -1}, "workloads.upload: weight must be"),
    ("regions.na.population.upload_kb", 0, "upload_kb: must be between 1 and 100000"),
    ("regions.na.resolver", False, "needs the region's resolver host"),
    ("dns.public_resolver", {"site": "us1"}, "not a region with a population"),
])
def test_population_mistakes_get_one_clear_line(path, value, words):
    assert words in _error(_set(path, value))


def test_too_many_users_for_the_prefix_is_named_with_the_numbers():
    def edit(data):
        data["regions"]["na"]["population"].update(user_prefix="10.11.0.0/22",
                                                   users_per_subnet=10, users=100)
    assert "100 users at 10 per /24 need 10 /24 subnets; 10.11.0.0/22 has 3" in _error(edit)


def test_public_share_without_a_public_resolver_is_an_error():
    def edit(data):
        del data["dns"]["public_resolver"]
        data["regions"]["eu"]["population"]["public_share"] = 0.1
    assert "public_share: there is no public resolver" in _error(edit)


def test_behaviours_are_normalised_and_one_name_is_enough():
    data = pop_data()
    data["regions"]["na"]["population"]["behaviours"] = {"random": 3, "first": 1}
    data["regions"]["eu"]["population"]["behaviours"] = "retry-next"
    s = parse(data)
    assert s.region("na").population.behaviours == (("random", 0.75), ("first", 0.25))
    assert s.region("eu").population.behaviours == (("retry-next", 1.0),)


def _closed(think):
    def edit(data):
        pop = data["regions"]["na"]["population"]
        pop.pop("rate_rps", None)
        pop["think_time_s"] = think
    return edit


def test_rate_and_think_time_together_are_one_clear_error():
    def edit(data):
        data["regions"]["na"]["population"].update(rate_rps=0.1, think_time_s=5)
    assert "give rate_rps (open loop) or think_time_s (closed loop), not both" in _error(edit)
    assert "think_time_s: must be between 0.01 and 3600, got 0" in _error(_closed(0))


def test_each_user_keeps_its_regions_request_process_and_a_dealt_workload():
    data = pop_data()
    _closed(4)(data)
    data["regions"]["na"]["population"].update(upload_kb=64,
                                               workloads={"search": 3, "upload": 1})
    users = population.make_users(parse(data), seed=1)
    na = [u for u in users if u.region == "na"]
    others = [u for u in users if u.region != "na"]
    assert collections.Counter(u.workload for u in na) == {
        "search": round(len(na) * 0.75), "upload": len(na) - round(len(na) * 0.75)}
    assert {(u.think_time_s, u.upload_kb) for u in na} == {(4.0, 64)}
    assert {(u.workload, u.think_time_s, u.rate_rps) for u in others} == {("search", 0.0, 0.05)}
    spec = na[0].client_spec()
    assert spec["think_s"] == 4.0 and spec["upload_bytes"] == 64 * 1024
    # an experiment's rate makes every user open loop at that rate; None keeps the scenario's
    moved = population.with_process(users, rate_rps=0.2, retry_delay_s=0.5)
    assert {(u.rate_rps, u.think_time_s, u.retry_delay_s) for u in moved} == {(0.2, 0.0, 0.5)}
    assert population.with_process(users) == users


def _small(**pop) -> scenario.Scenario:
    data = pop_data()
    data["regions"]["na"]["population"].update(pop)
    return parse(data)


def test_every_user_has_its_own_address_in_its_regions_subnets():
    s = _small(users=230, users_per_subnet=50)
    users = [u for u in population.make_users(s, seed=1) if u.region == "na"]
    assert len(users) == 230 and len({u.ip for u in users}) == 230
    prefix = ipaddress.ip_network("10.11.0.0/16")
    assert all(u.ip in u.subnet and u.subnet.subnet_of(prefix) for u in users)
    per_subnet = collections.Counter(u.subnet for u in users)
    assert len(per_subnet) == 5 and max(per_subnet.values()) == 50
    # no user in the resolvers' /24
    assert not any(u.ip in s.region("na").population.resolver_subnet for u in users)
    assert [u.name for u in users[:2]] == ["na-u1", "na-u2"]


def test_users_are_the_same_for_the_same_seed_and_differ_for_another():
    s = scenario.load("three-dc-pop")
    assert population.make_users(s, 3) == population.make_users(s, 3)
    assert population.make_users(s, 3) != population.make_users(s, 4)


def test_public_share_is_exact_and_the_rest_stay_with_their_region():
    s = _small(users=200, public_share=0.3)
    users = [u for u in population.make_users(s, seed=1) if u.region == "na"]
    pub = population.public_resolver(s)
    assert sum(u.resolver == pub.name for u in users) == 60
    own = {r.name for r in population.region_resolvers(s.region("na"))}
    assert all(u.resolver in own for u in users if u.resolver != pub.name)
    assert str(pub.ip) == "10.12.0.254"


def test_uniform_spread_is_even_and_zipf_gives_the_first_resolvers_most_users():
    s = _small(users=700, resolvers=10)
    counts = collections.Counter(u.resolver for u in population.make_users(s, 1)
                                 if u.region == "na")
    assert max(counts.values()) - min(counts.values()) <= 1
    s = _small(users=700, resolvers=10, spread="zipf", zipf_s=1.0)
    counts = collections.Counter(u.resolver for u in population.make_users(s, 1)
                                 if u.region == "na")
    # 1/k over k = 1..10: the first resolver ~34%, the tenth ~3.4%
    assert counts["lbd-na-r1"] == 239 and counts["lbd-na-r10"] == 24


def test_behaviour_mix_is_apportioned_exactly():
    s = _small(users=101, behaviours={"random": 1, "first": 1})
    got = collections.Counter(u.behaviour for u in population.make_users(s, 1)
                              if u.region == "na")
    assert got == {"random": 51, "first": 50}


@pytest.mark.parametrize("total, weights, want", [
    (10, [1, 1, 1], [4, 3, 3]),
    (7, [0.5, 0.25, 0.25], [3, 2, 2]),   # 3.5, 1.75, 1.75: largest remainders
    (0, [1, 2], [0, 0]),
    (5, [0, 1], [0, 5]),
])
def test_apportion_sums_exactly_and_follows_the_weights(total, weights, want):
    assert population.apportion(total, weights) == want


def test_apportion_rejects_nonsense():
    with pytest.raises(ValueError):
        population.apportion(3, [0, 0])


def test_respread_keeps_users_and_moves_them_over_the_given_resolvers():
    s = scenario.load("three-dc-pop")
    users = population.make_users(s, 1)
    pool = interleaved(s)
    assert [r.name for r in pool[:4]] == ["lbd-na-r1", "lbd-eu-r1", "lbd-ap-r1", "lbd-na-r2"]
    one = population.respread(users, pool[:1], "uniform", 1.0, seed=1)
    assert {u.resolver for u in one} == {"lbd-na-r1"}
    assert [(u.name, u.ip) for u in one] == [(u.name, u.ip) for u in users]
    ten = population.respread(users, pool[:10], "uniform", 1.0, seed=1)
    assert set(collections.Counter(u.resolver for u in ten).values()) == {210}
    firsts = population.with_behaviour(users, "first")
    assert {u.behaviour for u in firsts} == {"first"}


def test_plan_routes_user_blocks_to_the_population_host_and_resolvers_to_theirs():
    s = scenario.load("three-dc-pop")
    plan = build_plan(s)
    by_router = collections.defaultdict(dict)
    for r in plan.routes:
        by_router[r.router][r.dst] = r.via
    hosts = {h.name: h.ip for h in plan.hosts}
    na = s.region("na").population
    assert by_router["lbr-na"][na.user_prefix] == hosts[population_host("na")]
    assert by_router["lbr-na"][na.resolver_subnet] == hosts["lbd-na"]
    # every other router sends na's users the way it sends na's subnet
    for router in ("lbr-eu", "lbr-us1", "lbr-ap1"):
        assert by_router[router][na.user_prefix] == by_router[router][s.region("na").subnet]
    assert local_blocks(s.region("na")) == {
        "lbc-na1": [f"10.11.{k}.0/24" for k in range(1, 15)], "lbd-na": ["10.11.0.0/24"]}


def test_schedule_is_poisson_at_the_asked_rate_and_seeded():
    events = schedule([0.5] * 1000, 20.0, seed=1)
    assert events == schedule([0.5] * 1000, 20.0, seed=1) != schedule([0.5] * 1000, 20.0, 2)
    assert 9600 < len(events) < 10400          # 10,000 expected, sd 100
    assert all(0 <= at < 20 for at, _ in events)
    assert [at for at, _ in events] == sorted(at for at, _ in events)
    assert len({i for _, i in events}) > 990   # nearly every user sends


def test_schedule_follows_each_users_rate_and_leaves_closed_loop_users_out():
    rates = [0.0] * 100 + [0.1] * 100 + [0.3] * 100
    per_user = collections.Counter(i for _, i in schedule(rates, 100.0, seed=3))
    assert not any(i < 100 for i in per_user)                # rate 0: not open loop
    low = sum(n for i, n in per_user.items() if i < 200)     # 1,000 expected, sd 32
    high = sum(n for i, n in per_user.items() if i >= 200)   # 3,000 expected, sd 55
    assert 850 < low < 1150 and 2800 < high < 3200
    assert schedule([0.0] * 10, 10.0, seed=1) == []


def test_think_times_start_within_the_first_and_average_the_mean():
    from experiments.workloads.population import think_times
    gen = think_times(2.0, 60.0, random.Random(5))
    first = next(gen)
    rest = [next(gen) for _ in range(20000)]
    assert 0 <= first <= 2.0
    assert 1.95 < sum(rest) / len(rest) < 2.05 and min(rest) >= 0


def test_attempt_order_per_behaviour():
    addrs = ["a", "b", "c"]
    rng = random.Random(1)
    assert attempt_order(addrs, "first", rng) == ["a"]
    assert attempt_order(addrs, "retry-next", rng) == addrs
    picks = collections.Counter(attempt_order(addrs, "random", rng)[0] for _ in range(3000))
    assert set(picks) == set(addrs) and min(picks.values()) > 850
    assert attempt_order([], "first", rng) == []
    with pytest.raises(ValueError):
        attempt_order(addrs, "bogus", rng)


def test_stub_cache_honours_the_ttl():
    now = [100.0]
    cache = StubCache(clock=lambda: now[0])
    assert cache.get() is None
    cache.put(["10.0.0.1"], 5)
    now[0] = 104.9
    assert cache.get() == ["10.0.0.1"]
    now[0] = 105.0
    assert cache.get() is None
    cache.put(["10.0.0.1"], 0)   # a TTL of 0 is not cached
    assert cache.get() is None


def _rows(dcs_per_bin: list[list[str]], bin_s=2.0, t0=1000.0):
    vip = {"us1": "10.101.0.100", "eu1": "10.102.0.100", "ap1": "10.103.0.100"}
    return [{"epoch": t0 + b * bin_s + 0.1, "dst": vip[dc]}
            for b, dcs in enumerate(dcs_per_bin) for dc in dcs]


def test_max_mean_over_time_is_3_for_a_herd_and_near_1_when_balanced():
    to_dc = {"10.101.0.100": "us1", "10.102.0.100": "eu1", "10.103.0.100": "ap1"}
    herd = _rows([["us1"] * 30, ["eu1"] * 30])
    assert max_mean_over_time(herd, 1000.0, to_dc, 3, 2.0, 4.0) == 3.0
    even = _rows([["us1", "eu1", "ap1"] * 10] * 2)
    assert max_mean_over_time(even, 1000.0, to_dc, 3, 2.0, 4.0) == 1.0
    # a bin below 20 requests does not count; none at all -> None
    sparse = _rows([["us1"] * 5, ["us1", "eu1", "ap1"] * 10])
    assert max_mean_over_time(sparse, 1000.0, to_dc, 3, 2.0, 4.0) == 1.0
    assert max_mean_over_time(_rows([["us1"] * 5]), 1000.0, to_dc, 3, 2.0, 2.0) is None


def test_variants_run_every_pick_at_every_count_then_zipf():
    p = {"picks": ["random", "first"], "resolver_counts": [1, 10], "zipf_counts": [10]}
    assert variants(p) == [("random", "uniform", 1), ("random", "uniform", 10),
                           ("first", "uniform", 1), ("first", "uniform", 10),
                           ("random", "zipf", 10), ("first", "zipf", 10)]


def test_addresses_seen_counts_what_the_backends_saw():
    rows = [{"ok": True, "user": "na-u1", "user_ip": "10.11.1.1", "user_subnet": "a",
             "resolver": "r1", "seen_as": "10.11.1.1"},
            {"ok": True, "user": "na-u2", "user_ip": "10.11.1.2", "user_subnet": "a",
             "resolver": "r1", "seen_as": "10.1.0.11"},
            {"ok": False, "user": "na-u2", "user_ip": "10.11.1.2", "user_subnet": "a",
             "resolver": "r2", "seen_as": ""}]
    assert dnsnet.addresses_seen(copy.deepcopy(rows)) == {
        "requests_ok": 2, "users": 2, "user_subnets": 1, "resolvers": 2,
        "backend_saw_user_ip": 1}


def test_public_share_variant_moves_exactly_that_share_of_each_region():
    from experiments.dns_geo_pop import variants as geo_variants
    s = scenario.load("three-dc-pop")
    users = population.make_users(s, 1)
    own = {r.name: population.region_resolvers(r)[:4] for r in s.populations}
    pub = population.public_resolver(s)
    half = population.with_public_share(users, own, pub, 0.5, seed=1)
    assert [u.name for u in half] == [u.name for u in users]
    for region in ("na", "eu", "ap"):
        mine = [u for u in half if u.region == region]
        assert sum(u.resolver == pub.name for u in mine) == 350
        rest = collections.Counter(u.resolver for u in mine if u.resolver != pub.name)
        assert set(rest) == {f"lbd-{region}-r{k}" for k in range(1, 5)}
        assert max(rest.values()) - min(rest.values()) <= 1
    none = population.with_public_share(users, own, pub, 0.0, seed=1)
    assert not any(u.resolver == pub.name for u in none)
    assert geo_variants([0.0, 0.5]) == [("share0", 0.0, False), ("share0.5-noecs", 0.5, False),
                                        ("share0.5-ecs", 0.5, True)]


def test_geo_pop_summary_counts_nearest_per_user_region_and_resolver_kind():
    from experiments.dns_geo_pop import summarize
    s = scenario.load("three-dc-pop")
    from lab.dns_config import gslb_config
    config = gslb_config(build_plan(s), policy="geo")
    to_dc = dnsnet.dc_of_address(config)
    vip = {d.name: str(d.vip) for d in config.dcs}
    rows = [  # na user behind its own resolver -> us1; behind the public one -> eu1
        {"user": "na-u1", "user_region": "na", "resolver": "lbd-na-r1", "dst": vip["us1"],
         "ok": True, "latency_ms": 10.0},
        {"user": "na-u2", "user_region": "na", "resolver": "lbd-eu-pub", "dst": vip["eu1"],
         "ok": True, "latency_ms": 90.0},
        {"user": "na-u2", "user_region": "na", "resolver": "lbd-eu-pub", "dst": vip["eu1"],
         "ok": True, "latency_ms": 100.0},
        {"user": "eu-u1", "user_region": "eu", "resolver": "lbd-eu-pub", "dst": vip["eu1"],
         "ok": False, "latency_ms": 3000.0}]
    out = {(r["resolver_kind"], r["user_region"]): r for r in
           summarize(rows, config, to_dc, "lbd-eu-pub", "eu", {"variant": "v"})}
    assert out[("own", "na")]["dc_chosen_pct_nearest"] == 100.0
    assert out[("public", "na")]["dc_chosen_pct_nearest"] == 0.0
    assert out[("public", "all")]["dc_chosen_pct_nearest"] == 33.3
    assert out[("public", "all")]["dc_chosen_pct_public_site"] == 100.0
    assert out[("all", "all")]["users"] == 3 and out[("all", "all")]["failed"] == 1
    # per user: na-u1 10 ms, na-u2 median 95 ms (the failed request has no latency)
    assert out[("all", "na")]["user_latency_p50_ms"] == 52.5
    assert out[("all", "na")]["dcs_chosen"] == "eu1:2 us1:1"


def test_failover_pop_variants_are_checked():
    from experiments.dns_failover_pop import parse_variants
    from topologies.system import InputError
    assert parse_variants(["all:retry-next", "geo:first"]) == [("all", "retry-next"),
                                                               ("geo", "first")]
    for bad in ("all", "capacity:first", "geo:sometimes"):
        with pytest.raises(InputError, match="is not policy:behaviour"):
            parse_variants([bad])


def test_failover_window_counts_failures_until_detection_plus_ttl():
    from experiments.dns_failover_pop import window_summary
    vip, other = "10.101.0.100", "10.102.0.100"
    t0 = 1000.0

    def row(at, ok, dst=vip, latency=20.0, tries=1):
        return {"epoch": t0 + at, "ok": ok, "dst": dst, "latency_ms": latency,
                "tries": tries}
    rows = [row(-2, True), row(-1, True),                      # before: 20 ms
            row(0.5, False), row(2.0, False),                  # to the dead DC
            row(3.0, True, other, 1020.0, tries=2),            # retried, 1 s later
            row(6.5, True, other), row(9.0, True, other)]      # 9 s: outside the window
    out = window_summary(rows, t0, detect_s=1.5, ttl=5, dc_vips={vip})
    assert out["bound_s"] == 6.5 and out["requests_window"] == 4   # [0, 7.5)
    assert out["failed_window"] == 2 and out["failed_pct"] == 50.0
    assert out["failed_to_dc"] == 2 and out["last_failure_s"] == 2.0
    assert out["within_bound"] is True and out["retried_pct"] == 25.0
    assert out["latency_p50_before_ms"] == 20.0 and out["added_latency_p99_ms"] > 900
    none = window_summary(rows[:2], t0, detect_s=None, ttl=5, dc_vips={vip})
    assert none["bound_s"] is None and none["within_bound"] is None
    assert none["failed_pct"] is None and none["last_failure_s"] is None


def test_population_experiments_on_a_scenario_without_one_say_so_in_one_line():
    from topologies.system import InputError
    with pytest.raises(InputError) as info:
        dnsnet.population_scenario(scenario.load("two-dc"), "dns-rr-pop")
    assert str(info.value) == ("dns-rr-pop needs a scenario with populations; two-dc has "
                               "none (try --scenario three-dc-pop)")
    data = pop_data()
    del data["dns"]["public_resolver"]
    with pytest.raises(InputError, match="needs a scenario with a dns.public_resolver"):
        dnsnet.population_scenario(parse(data), "dns-geo-pop", public=True)
    dnsnet.population_scenario(scenario.load("three-dc-pop"), "dns-geo-pop", public=True)
