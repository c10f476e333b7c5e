"""global-overload's pure parts: variants, the demand split, the per-step summary from
requests and load-feed samples, and the report's readings from the numbers."""
from __future__ import annotations

import pandas as pd
import pytest

from experiments import global_overload as go
from experiments.report import overload
from experiments.report.core import Figure
from topologies import population, scenario
from topologies.system import InputError


def test_variants_are_checked_in_one_line():
    assert go.parse_variants(["geo:hot", "capacity-shed:even"]) == [
        ("geo", "hot"), ("capacity-shed", "even")]
    for bad in ("geo", "capacity:hot", "geo:cold"):
        with pytest.raises(InputError, match="policy:demand"):
            go.parse_variants([bad])


def test_hot_demand_puts_its_share_on_the_first_region_and_keeps_the_total():
    users = population.make_users(scenario.load("three-dc-pop"), seed=1)
    weights = go.region_weights(["na", "eu", "ap"], "hot", 0.6)
    assert weights == pytest.approx({"na": 0.6, "eu": 0.2, "ap": 0.2})
    load = go.with_demand(users, 90.0, weights)
    assert sum(u.rate_rps for u in load) == pytest.approx(90.0)
    assert sum(u.rate_rps for u in load if u.region == "na") == pytest.approx(54.0)
    assert {u.think_time_s for u in load} == {0.0}
    assert go.region_weights(["na", "eu"], "even", 0.9) == {"na": 0.5, "eu": 0.5}


def _row(epoch, dst, ok=True, status=200, latency=20.0, resolve=0.0):
    return {"epoch": epoch, "dst": dst, "ok": ok, "status": str(status),
            "latency_ms": latency, "resolve_ms": resolve, "user_region": "na",
            "dc": {"10.0.0.1": "a", "10.0.0.2": "b"}[dst]}


def test_step_rows_count_what_each_step_served_refused_and_put_on_each_dc():
    to_dc = {"10.0.0.1": "a", "10.0.0.2": "b"}
    rows = [_row(100.5, "10.0.0.1"), _row(101.0, "10.0.0.2"),          # step 0: 2 ok
            _row(102.2, "10.0.0.1"), _row(102.4, "10.0.0.1", False, 503, 9.0, 5.0),
            _row(103.0, "10.0.0.1", False, "", 3000.0)]                 # step 1: a timeout
    samples = [(101.5, "a", 9.0), (101.8, "b", 3.0), (103.2, "a", 15.0), (103.6, "a", 12.0)]
    flips = [(103.1, "a"), (103.9, "a")]
    out = go.step_rows(rows, samples, flips, t0=100.0, steps=[0.5, 1.5], step_s=2.0,
                       capacity=10.0, dcs=["a", "b"], to_dc=to_dc,
                       one_way_ms={("na", "a"): 0.5, ("na", "b"): 20.0})
    assert [(r["step"], r["dc"]) for r in out] == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    s0a, s0b, s1a, _ = out
    assert (s0a["offered_rps"], s0a["capacity_rps_total"]) == (10.0, 20.0)
    assert s0a["served_rps"] == 1.0 and s0a["ok_pct"] == 100.0
    assert (s0a["dc_share"], s0b["dc_share"]) == (0.5, 0.5)
    assert s0a["dc_utilisation_max"] == 0.9 and s0b["dc_utilisation_max"] == 0.3
    assert s1a["requests"] == 3 and s1a["refused_pct"] == pytest.approx(33.33)
    assert s1a["served_ok_pct"] == 50.0            # the timeout was not refused: it failed
    assert s1a["refused_p99_ms"] == 4.0 and s1a["refused_wait_p99_ms"] == 2.0
    assert s1a["dc_utilisation_max"] == 1.5 and s1a["dc_utilisation_mean"] == 1.35
    assert s1a["answer_flaps"] == 2 and s0a["answer_flaps"] == 0


def summary(spill_peak=1.05, geo_peak=1.6, shed_ok=99.6, shed_fast=12.0) -> pd.DataFrame:
    rows = []
    for variant, policy, peak in (("geo-hot", "geo", geo_peak),
                                  ("capacity-spill-hot", "capacity-spill", spill_peak),
                                  ("capacity-shed-hot", "capacity-shed", spill_peak)):
        for step, offered in enumerate((54.0, 81.0, 117.0)):
            for dc in ("us1", "eu1", "ap1"):
                rows.append({"variant": variant, "policy": policy, "step": step,
                             "step_start_s": 8.0 * step, "offered_rps": offered,
                             "capacity_rps_total": 90.0, "served_rps": min(offered, 88.0),
                             "served_ok_pct": shed_ok if policy == "capacity-shed" else 97.0,
                             "refused_pct": 20.0 if step == 2 else 0.0,
                             "refused_p99_ms": shed_fast + 40, "refused_wait_p99_ms": shed_fast,
                             "p50_ms": 15.0, "dc": dc,
                             "dc_utilisation_mean": peak if dc == "us1" and step < 2 else 0.7,
                             "dc_utilisation_max": 1.5})
    return pd.DataFrame(rows)


def test_readings_follow_the_numbers():
    good = "\n".join(overload.overload_readings(summary()))
    assert "contradicts" not in good
    assert "capacity-spill-hot: below the total capacity the busiest DC ran at 105% of its " \
           "capacity on average over a step (us1, step 0" in good
    assert "geo-hot: below the total capacity us1 still ran at 160%" in good
    assert "capacity-shed-hot, step 2 (117 offered of 90): served 88/s, 99.6% of the " \
           "requests not refused succeeded" in good
    bad = "\n".join(overload.overload_readings(summary(spill_peak=1.4, shed_ok=90.0,
                                                       shed_fast=400.0)))
    assert bad.count("contradicts") == 2
    meta = {"global_overload": {"hot_region_nearest_dc": "us1"}}
    assert "us1 (the hot region's nearest DC) still ran" in overload.overload_readings(
        summary(), meta)[0]
    meta = {"global_overload": {"hot_region_nearest_dc": "eu1"}}
    assert "(not the hot region's nearest, eu1: once eu1 was full" in "\n".join(
        overload.overload_readings(summary(), meta))
    calm = "\n".join(overload.overload_readings(summary(geo_peak=0.9)))
    assert "which the chapter does not lead one to expect" in calm
    assert isinstance(overload.overload_figure(summary()), Figure)
