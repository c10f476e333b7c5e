"""Answer policies on the example config: three regions, each 10 ms from its own DC."""
import ipaddress
import random
from collections import Counter

from gslb.config import example_config
from gslb.policy import ClientLocation, DcState, RegionMap, decide, plan

EAST, CENTRAL, WEST = (ipaddress.IPv4Address(f"10.100.{i}.1") for i in (1, 2, 3))


def loc(region: str | None, scope: int = 16) -> ClientLocation:
    return ClientLocation(region, scope)


def test_all_rotates_every_healthy_vip() -> None:
    cfg = example_config(policy="all")
    answers = [decide(cfg, {}, loc("east"), n) for n in range(3)]
    assert {a.vips[0] for a in answers} == {EAST, CENTRAL, WEST}
    assert all(sorted(a.vips) == [EAST, CENTRAL, WEST] for a in answers)
    assert all(a.scope == 0 for a in answers)  # did not depend on the client


def test_geo_picks_nearest_with_scope() -> None:
    cfg = example_config(policy="geo")
    assert decide(cfg, {}, loc("west"), 0).vips == (WEST,)
    assert decide(cfg, {}, loc("west"), 0).scope == 16


def test_geo_skips_unhealthy_and_overloaded() -> None:
    cfg = example_config(policy="geo")
    assert decide(cfg, {"dc-west": DcState(healthy=False)}, loc("west"), 0).vips == (CENTRAL,)
    assert decide(cfg, {"dc-west": DcState(load=1001)}, loc("west"), 0).vips == (CENTRAL,)
    # at exactly capacity it still serves (only exceeding removes it)
    assert decide(cfg, {"dc-west": DcState(load=1000)}, loc("west"), 0).vips == (WEST,)


def test_geo_unknown_location_answers_all_healthy() -> None:
    cfg = example_config(policy="geo")
    a = decide(cfg, {"dc-east": DcState(healthy=False)}, loc(None, 24), 0)
    assert sorted(a.vips) == [CENTRAL, WEST] and a.scope == 24


def test_single_candidate_does_not_depend_on_client() -> None:
    cfg = example_config(policy="geo")
    snap = {"dc-east": DcState(False), "dc-west": DcState(False)}
    assert decide(cfg, snap, loc("west"), 0).vips == (CENTRAL,)
    assert decide(cfg, snap, loc("west"), 0).scope == 0


def test_no_healthy_dc_fails_open() -> None:
    cfg = example_config(policy="geo")
    snap = {n: DcState(False) for n in ("dc-east", "dc-central", "dc-west")}
    a = decide(cfg, snap, loc("west"), 0)
    assert sorted(a.vips) == [EAST, CENTRAL, WEST] and a.scope == 0


def test_all_overloaded_uses_healthy_nearest() -> None:
    cfg = example_config(policy="geo")
    snap = {n: DcState(True, 5000) for n in ("dc-east", "dc-central", "dc-west")}
    assert decide(cfg, snap, loc("east"), 0).vips == (EAST,)


def shares(cfg, snap, region: str, n: int = 4000, seed: int = 1) -> Counter:
    rng = random.Random(seed)
    p = plan(cfg, snap, region)
    return Counter(p.pick(i, rng)[0] for i in range(n))


def test_capacity_nearest_until_headroom_runs_out() -> None:
    cfg = example_config(policy="capacity")  # spill_headroom 0.2 of 1000 rps
    assert shares(cfg, {"dc-east": DcState(load=700)}, "east") == Counter({EAST: 4000})


def test_capacity_spills_to_next_nearest() -> None:
    cfg = example_config(policy="capacity")
    c = shares(cfg, {"dc-east": DcState(load=900)}, "east")  # half the headroom left
    assert 0.4 < c[EAST] / 4000 < 0.6
    assert c[CENTRAL] == 4000 - c[EAST]  # spill goes to the next-nearest, not further


def test_capacity_full_dc_gets_nothing() -> None:
    cfg = example_config(policy="capacity")
    c = shares(cfg, {"dc-east": DcState(load=1000), "dc-central": DcState(load=1000)}, "east")
    assert c == Counter({WEST: 4000})


def test_capacity_is_deterministic_for_a_seed() -> None:
    cfg = example_config(policy="capacity")
    snap = {"dc-east": DcState(load=950)}
    p = plan(cfg, snap, "east")
    a = [p.pick(i, random.Random(7)) for i in range(50)]
    b = [p.pick(i, random.Random(7)) for i in range(50)]
    assert a == b


def test_region_map_longest_prefix_and_scope() -> None:
    cfg = example_config()
    rm = RegionMap(cfg)
    assert rm.locate_address("10.2.9.9").region == "central"
    assert rm.locate_address("192.0.2.1").region is None
    assert rm.locate_address("::ffff:10.3.0.1").region == "west"
    assert rm.locate_prefix(ipaddress.ip_network("10.1.2.0/24")) == ClientLocation("east", 16)
    assert rm.locate_prefix(ipaddress.ip_network("fd00:3::/56")) == ClientLocation("west", 48)
    assert rm.locate_prefix(ipaddress.ip_network("192.0.2.0/24")) == ClientLocation(None, 24)
    assert rm.locate_prefix(None) == ClientLocation(None, 0)
    # a /8 client prefix covers several region /16s: no single region, and scope 16 tells
    # the resolver that a longer prefix would have changed the answer
    assert rm.locate_prefix(ipaddress.ip_network("10.0.0.0/8")) == ClientLocation(None, 16)


def test_nested_region_raises_scope() -> None:
    from gslb.config import RegionInfo
    base = example_config()
    regions = base.regions + (RegionInfo("lab", (ipaddress.ip_network("10.1.5.0/24"),)),)
    dist = dict(base.distance_ms)
    dist.update({("lab", d.name): 1.0 for d in base.dcs})
    cfg = base.replace(regions=regions, distance_ms=dist)
    rm = RegionMap(cfg)
    # 10.1.0.0/20 is inside east's /16 but contains lab's /24: scope must say 24
    assert rm.locate_prefix(ipaddress.ip_network("10.1.0.0/20")) == ClientLocation("east", 24)
    assert rm.locate_prefix(ipaddress.ip_network("10.1.5.0/24")) == ClientLocation("lab", 24)


# -- traffic classes, overload and hysteresis (issue: capacity, overload, traffic classes) --

def _classes(**changes):
    from gslb.config import ServiceInfo
    return example_config(services=(
        ServiceInfo("search", "capacity", 10, capacity_share=0.5),
        ServiceInfo("upload", "spare", 60, capacity_share=0.5, max_distance_ms=60)), **changes)


def test_spare_picks_the_most_spare_dc_within_the_latency_bound() -> None:
    cfg = _classes()
    upload = cfg.services[1]
    # east is 10 ms from east, central 50, west 90 (beyond the 60 ms bound)
    snap = {"dc-east": DcState(load=400), "dc-central": DcState(load=100),
            "dc-west": DcState(load=0)}
    assert decide(cfg, snap, loc("east"), 0, service=upload).vips == (CENTRAL,)
    # the bound excludes everything but the nearest: the nearest, however loaded
    from gslb.config import ServiceInfo
    tight = ServiceInfo("upload", "spare", 60, 0.5, max_distance_ms=5)
    assert decide(cfg, snap, loc("east"), 0, service=tight).vips == (EAST,)


def test_a_class_fills_its_share_of_capacity_by_its_own_load() -> None:
    cfg = _classes()
    search = cfg.services[0]
    # east's search share is 500 of its 1000 rps, judged by the search load alone
    under = {"dc-east": DcState(load=600, by_service=(("search", 450.0), ("upload", 150.0)))}
    over = {"dc-east": DcState(load=600, by_service=(("search", 550.0), ("upload", 50.0)))}
    assert EAST in plan(cfg, under, "east", search).vips
    assert EAST not in plan(cfg, over, "east", search).vips       # search full at east
    assert decide(cfg, over, loc("east"), 0).vips == (EAST,)      # www: 600 of 1000, fine


def test_every_dc_full_spill_answers_the_least_loaded_shed_the_nearest() -> None:
    snap = {"dc-east": DcState(load=3000), "dc-central": DcState(load=1500),
            "dc-west": DcState(load=2000)}
    spill = example_config(policy="capacity", overload="spill")
    shed = example_config(policy="capacity", overload="shed")
    assert decide(spill, snap, loc("east"), 0).vips == (CENTRAL,)
    assert decide(shed, snap, loc("east"), 0).vips == (EAST,)
    assert decide(shed, snap, loc("west"), 0).vips == (WEST,)


def test_a_full_dc_rejoins_only_below_the_hysteresis_band() -> None:
    from gslb.policy import update_full
    cfg = example_config(policy="geo", hysteresis=0.1)
    full = update_full(cfg, {"dc-east": DcState(load=1001)})
    assert ("www", "dc-east") in full
    # back under capacity but inside the band: still full; below 900: not
    assert ("www", "dc-east") in update_full(cfg, {"dc-east": DcState(load=950)}, full)
    assert ("www", "dc-east") not in update_full(cfg, {"dc-east": DcState(load=899)}, full)
    # without a history the band does not hold a DC out
    assert ("www", "dc-east") not in update_full(cfg, {"dc-east": DcState(load=950)})
    p = plan(cfg, {"dc-east": DcState(load=950)}, "east", full=full)
    assert p.vips == (CENTRAL,)


def test_admitted_share_settles_a_dc_under_its_capacity_without_flapping() -> None:
    """A region sends 1.3x east's capacity to east (its nearest): fed back through a
    delay of one TTL, the admitted share settles where east carries its target (80% of
    capacity), instead of east leaving the answers whole and coming back whole."""
    from gslb.policy import update_admit
    cfg = example_config(policy="capacity", ttl_s=5)
    demand, admit, history = 1300.0, None, []
    delayed = [demand] * 12          # what the load feed shows: the answers of 6 s ago
    for _ in range(240):             # two minutes of load updates every 0.5 s
        load = delayed.pop(0)
        admit = update_admit(cfg, {"dc-east": DcState(load=load)}, admit, 0.5)
        p = plan(cfg, {"dc-east": DcState(load=load)}, "east", admit=admit)
        delayed.append(demand * p.stay[0])
        history.append(load)
    tail = history[-60:]
    assert all(700 < x < 900 for x in tail), tail[::6]
    assert max(tail) - min(tail) < 100          # settled, not swinging in and out
