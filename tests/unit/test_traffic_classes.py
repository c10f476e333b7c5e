"""Traffic classes: the spare policy's WAN headroom, one policy judged by the whole DC,
the control channel's per-service changes, the load feed's WAN meter, and
traffic-classes' pure parts (its plan, its users, its summary and its readings)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments import traffic_classes as tc
from experiments.report import classes
from gslb.config import WHOLE_DC, ServiceInfo, example_config
from gslb.lifecycle import running_server
from gslb.policy import DcState, plan
from lab import dnsproc
from lab.dns import wan_links_into
from topologies import population, scenario
from topologies.plan import build_plan

CENTRAL = "10.100.2.1"
EAST = "10.100.1.1"


def _cfg():
    return example_config(policy="geo", services=(
        ServiceInfo("search", "capacity", 10),
        ServiceInfo("upload", "spare", 60, max_distance_ms=60)))


def test_spare_leaves_a_dc_whose_wan_link_from_the_region_is_full():
    cfg = _cfg()
    upload = cfg.services[1]
    idle = {"dc-east": DcState(load=100), "dc-central": DcState(load=300)}
    assert [str(v) for v in plan(cfg, idle, "east", upload).vips] == [EAST]
    # the link from east into dc-east 85% used: 15% headroom < central's 70% spare
    busy = {**idle, "dc-east": DcState(load=100, wan=(("east", 0.85),))}
    assert [str(v) for v in plan(cfg, busy, "east", upload).vips] == [CENTRAL]
    # a sliver more room further away (an idle link against one carrying DNS and health
    # checks) is no reason to leave the nearest
    sliver = {"dc-east": DcState(load=0, wan=(("east", 0.02),)), "dc-central": DcState()}
    assert [str(v) for v in plan(cfg, sliver, "east", upload).vips] == [EAST]
    # the same link does not matter to a client of another region
    assert plan(cfg, busy, "central", upload).vips == plan(cfg, idle, "central", upload).vips


def test_spare_counts_the_whole_dc_not_only_the_class():
    cfg = _cfg()
    upload = cfg.services[1]
    # east has almost no uploads but is nearly full of searches: central has more room
    snap = {"dc-east": DcState(load=950, by_service=(("search", 940.0), ("upload", 10.0))),
            "dc-central": DcState(load=300, by_service=(("search", 200.0),
                                                        ("upload", 100.0)))}
    assert [str(v) for v in plan(cfg, snap, "east", upload).vips] == [CENTRAL]


def test_whole_dc_load_key_judges_a_class_by_everything_the_dc_carries():
    cfg = example_config(policy="geo", services=(
        ServiceInfo("upload", "geo", 10, load_key=WHOLE_DC),
        ServiceInfo("search", "geo", 10)))
    whole, own = cfg.services
    snap = {"dc-east": DcState(load=1200, by_service=(("upload", 100.0), ("search", 1100.0)))}
    assert EAST not in [str(v) for v in plan(cfg, snap, "east", whole).vips]
    snap = {"dc-east": DcState(load=1200, by_service=(("search", 900.0),))}
    assert [str(v) for v in plan(cfg, snap, "east", own).vips] == [EAST]   # 900 of 1000


def _http(s, method, path, body=b""):
    import urllib.error
    import urllib.request
    host, port = s.control
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=body or None,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_control_changes_one_service_policy_and_rejects_bad_ones_whole():
    with running_server(_cfg()) as s:
        status, state = _http(s, "POST", "/policy", json.dumps(
            {"service": "upload", "policy": "capacity", "load_key": "*"}).encode())
        assert status == 200
        assert state["services"]["upload.lblab.test"]["policy"] == "capacity"
        assert state["services"]["upload.lblab.test"]["load_key"] == "*"
        assert state["services"]["search.lblab.test"]["policy"] == "capacity"
        # the fully qualified name works as well; load_key null: the class's own load
        status, state = _http(s, "POST", "/policy", json.dumps(
            {"service": "upload.lblab.test.", "policy": "spare", "load_key": None}).encode())
        assert status == 200 and state["services"]["upload.lblab.test"]["load_key"] == "upload"
        for body, code, words in (
                ({"service": "video", "policy": "geo"}, 404, "unknown service"),
                ({"service": "upload", "policy": "fast"}, 400, "is not one of"),
                ({"service": "upload"}, 400, "needs its policy"),
                ({"policy": "geo", "load_key": "*"}, 400, "applies to a service"),
                ({"service": "www", "policy": "geo", "load_key": "*"}, 400, "whole load")):
            status, reply = _http(s, "POST", "/policy", json.dumps(body).encode())
            assert status == code and words in reply["error"], (body, reply)
        assert _http(s, "GET", "/state")[1]["services"]["upload.lblab.test"]["policy"] \
            == "spare"
        status, state = _http(s, "POST", "/dc/dc-east", b'{"wan": {"east": 0.9}}')
        assert status == 200 and state["dcs"]["dc-east"]["wan_used"] == {"east": 0.9}
        for bad in (b'{"wan": {"mars": 0.5}}', b'{"wan": {"east": -1}}', b'{"wan": 3}'):
            status, reply = _http(s, "POST", "/dc/dc-east", bad)
            assert status == 400 and "wan must map region names" in reply["error"]


PROC_NET_DEV = """Inter-|   Receive                            |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
lbr-us1-eth2: 2500000  2000    0    0    0     0          0         0   125000     900    0    0    0     0       0          0
"""
IP_ADDR = """1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever
3: lbr-us1-eth2@if7    inet 10.200.0.6/30 brd 10.200.0.7 scope global lbr-us1-eth2
"""


def test_the_wan_meter_reads_the_router_interface_with_the_link_address():
    assert dnsproc.parse_wan("na=10.200.0.6:20") == ("na", "10.200.0.6", 20.0)
    for bad in ("na", "na=10.200.0.6", "na=10.200.0.6:0", "=1.2.3.4:5"):
        with pytest.raises(ValueError, match="REGION=IP:MBPS"):
            dnsproc.parse_wan(bad)
    assert dnsproc.interface_of("10.200.0.6", IP_ADDR) == "lbr-us1-eth2"
    assert dnsproc.interface_of("10.9.9.9", IP_ADDR) is None
    assert dnsproc.interface_bytes(PROC_NET_DEV)["lbr-us1-eth2"] == (2500000, 125000)


def test_wan_links_into_a_dc_are_its_links_from_client_regions():
    plan = build_plan(scenario.load("three-dc-pop"))
    links = wan_links_into(plan, "us1")
    assert sorted(r for r, _, _ in links) == ["ap", "eu", "na"]   # not eu1's or ap1's
    assert all(mbps == 100.0 for _, _, mbps in links)
    addresses = {str(w.a_ip) for w in plan.wans} | {str(w.b_ip) for w in plan.wans}
    assert all(ip in addresses for _, ip, _ in links)


def _params(**changes):
    p = {param.name: param.quick if param.quick is not None else param.default
         for param in tc.EXPERIMENT.params}
    return {**p, **changes}


def test_the_wan_variant_thins_only_the_hot_regions_link_to_its_nearest_dc():
    base = build_plan(scenario.load("three-dc-pop"))
    wan = tc.variant_plan(base, "wan", _params())
    thin = [(l.a, l.b) for l in wan.scenario.links if l.bw_mbps == 20.0]
    assert thin == [("na", "us1")]
    assert {d.capacity_rps for d in wan.scenario.dcs} == {90.0}
    assert {d.overload for d in wan.scenario.dcs} == {"shed"}
    cap = tc.variant_plan(base, "capacity", _params())
    assert {l.bw_mbps for l in cap.scenario.links} == {100.0}
    assert {d.capacity_rps for d in cap.scenario.dcs} == {30.0}
    assert [(s.name, s.policy) for s in cap.scenario.dns.services] == [
        ("search", "capacity"), ("upload", "spare")]


def test_users_carry_each_regions_demand_per_class():
    scen = scenario.load("three-dc-pop")
    users = population.make_users(scen, seed=1)
    load = tc.with_classes(users, _params(), seed=1)
    rate = {(r, c): sum(u.rate_rps for u in load if u.region == r and u.workload == c)
            for r in ("na", "eu") for c in ("search", "upload")}
    assert rate[("na", "search")] == pytest.approx(30.0)
    assert rate[("na", "upload")] == pytest.approx(6.0)
    assert rate[("eu", "search")] == pytest.approx(6.0)
    assert rate[("eu", "upload")] == pytest.approx(1.5)
    ups = sum(1 for u in load if u.region == "na" and u.workload == "upload")
    assert ups == 210 and {u.think_time_s for u in load} == {0.0}


def _req(cls, dst, ok=True, latency=20.0, region="na", nbytes=0):
    return {"workload": cls, "dst": dst, "ok": ok, "latency_ms": latency,
            "resolve_ms": 0.0, "user_region": region, "bytes": nbytes}


def test_summary_rows_per_class_and_dc():
    to_dc = {"10.0.0.1": "a", "10.0.0.2": "b"}
    rows = [_req("search", "10.0.0.1", latency=10.0), _req("search", "10.0.0.1", latency=30.0),
            _req("upload", "10.0.0.2", nbytes=250_000, latency=1000.0),
            _req("upload", "10.0.0.1", ok=False, latency=5000.0, region="eu")]
    samples = [(101.0, "a", 27.0, 0.8), (102.0, "a", 33.0, 0.9), (101.5, "b", 9.0, 0.1),
               (90.0, "a", 99.0, 1.0)]          # before the run: not counted
    out = tc.summary_rows(rows, samples, to_dc, ["a", "b"], "na", 100.0, 10.0, 30.0,
                          {"search": "a", "upload": "b"})
    by = {(r["class"], r["dc"]): r for r in out}
    s, u = by[("search", "a")], by[("upload", "b")]
    assert s["requests"] == 2 and s["ok_pct"] == 100.0 and s["latency_p50_ms"] == 20.0
    assert s["upload_ok_pct"] is None and s["dc_share"] == 1.0
    assert s["dc_utilisation_mean"] == 1.0 and s["wan_used_mean"] == 0.85
    assert s["answered_mid_run"] and not by[("search", "b")]["answered_mid_run"]
    assert u["upload_ok_pct"] == 50.0 and u["upload_goodput_mbps"] == pytest.approx(2.0)
    assert u["hot_region_ok_pct"] == 100.0 and u["dc_share"] == 0.5


def _agg(ok_one, ok_pc, p50_one, p50_pc):
    rows = []
    for policy, ok, p50 in (("one", ok_one, p50_one), ("per-class", ok_pc, p50_pc)):
        for cls in ("search", "upload"):
            for dc in ("us1", "eu1"):
                rows.append({"variant": "wan", "class": cls, "policy": policy, "dc": dc,
                             "requests": 100, "ok_pct": 100.0,
                             "latency_p50_ms": p50 if cls == "search" else 900.0,
                             "latency_p99_ms": 50.0, "upload_goodput_mbps": 2.0,
                             "upload_ok_pct": ok if cls == "upload" else None,
                             "dc_share": 0.5, "dc_utilisation_mean": 0.5,
                             "wan_used_mean": 0.8 if dc == "us1" else 0.1})
    return pd.DataFrame(rows)


def test_readings_say_when_per_class_placement_helps_and_when_a_run_contradicts_it():
    good = classes.classes_readings(_agg(60.0, 99.0, 20.0, 19.0))
    assert "raises upload success" in good[0] and "consistent" in good[0]
    slow = classes.classes_readings(_agg(60.0, 99.0, 20.0, 30.0))
    assert "contradicts" in slow[0]
    worse = classes.classes_readings(_agg(99.0, 60.0, 20.0, 19.0))
    assert "did not raise upload success" in worse[0] and "contradicts" in worse[0]
    same = classes.classes_readings(_agg(100.0, 100.0, 20.0, 15.0))
    assert "the same either way" in same[0] and "lower" in same[0]
    meta = {"traffic_classes": {"answers_mid_run": {"wan-per-class": {"search": "us1",
                                                                       "upload": "eu1"}}}}
    why = classes.classes_readings(_agg(60.0, 99.0, 20.0, 19.0), meta)[1]
    assert "us1 for search and eu1 for upload (different DCs)" in why
    assert "link 80% used" in why
    assert classes.classes_figure(_agg(60.0, 99.0, 20.0, 19.0)) is not None
