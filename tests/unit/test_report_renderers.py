"""Per-experiment renderers: readings follow the numbers (consistent or contradicting), and
figures are drawn from small synthetic DataFrames."""
from __future__ import annotations

import pandas as pd

from experiments.report import build_report, dns, dnspop, gre, rtt, vip
from experiments.report.core import Figure
from report_helpers import hashing_rows, make_run, rtt_rows


def text(lines):
    return "\n".join(lines)


def test_rtt_readings():
    good = text(rtt.readings(pd.DataFrame(rtt_rows(0.3)), "relay"))
    assert "4 of 4 WAN paths within 1 ms" in good and "consistent with the chapter" in good
    bad = text(rtt.readings(pd.DataFrame(rtt_rows(3.0)), "relay"))
    assert "0 of 4 WAN paths" in bad and "contradicts" in bad
    # a same-site pair (nothing configured) is reported as the LAN's latency, not judged
    # against the WAN criterion
    lan = {"src": "na", "dst": "lbd-na", "configured_rtt_ms": 0.0, "measured_rtt_ms": 1.2,
           "loss_pct": 0.0, "link_delay": "relay", "dst_kind": "resolver"}
    mixed = text(rtt.readings(pd.DataFrame(rtt_rows(0.3) + [lan]), "relay"))
    assert "4 of 4 WAN paths within 1 ms" in mixed
    assert "1 same-site pair(s)" in mixed and "1.2" in mixed
    none = text(rtt.readings(pd.DataFrame(rtt_rows(-5.0)), "none"))
    assert "cannot support any latency claim" in none
    assert isinstance(rtt.figure(pd.DataFrame(rtt_rows())), Figure)


def modes_summary(dsr_share=0.0):
    return pd.DataFrame([
        {"variant": "nat", "mode": "nat", "requests": 100, "ok_pct": 100.0,
         "latency_p50_ms": 20.0, "latency_p99_ms": 50.0, "upload_goodput_mbps": 80.0,
         "lb_reply_bytes_share": 0.98, "upload_ok_pct": 100.0},
        {"variant": "dsr", "mode": "dsr", "requests": 100, "ok_pct": 97.0,
         "latency_p50_ms": 18.0, "latency_p99_ms": 40.0, "upload_goodput_mbps": 90.0,
         "lb_reply_bytes_share": dsr_share, "upload_ok_pct": 100.0}])


def modes_records():
    rows = []
    for v in ("nat", "dsr"):
        for i in range(20):
            rows.append({"variant": v, "workload": "search", "latency_ms": 10.0 + i,
                         "ok": True})
    return pd.DataFrame(rows)


def test_vip_modes_readings_and_figure():
    good = text(vip.modes_readings(modes_summary(0.0)))
    assert "dsr: 0.0% of reply bytes crossed the LB" in good
    assert "contradicts" not in good
    assert "dsr: only 97% of search requests succeeded" in good
    bad = text(vip.modes_readings(modes_summary(0.4)))
    assert "do not bypass" in bad and "contradicts" in bad
    assert isinstance(vip.modes_figure(modes_summary(), modes_records()), Figure)
    assert isinstance(vip.modes_figure(modes_summary(), pd.DataFrame()), Figure)


def test_vip_hashing_readings():
    good = text(vip.hashing_readings(pd.DataFrame(hashing_rows())))
    assert "maglev remapped 13.1% of keys when N went 8→7 (1/N = 12.5%" in good
    assert "mod-N remapped 88.0%" in good
    assert "connection tracking on" in good and "contradicts" not in good
    bad = text(vip.hashing_readings(pd.DataFrame(hashing_rows(maglev_remap=0.3,
                                                              ct_broken=2))))
    assert bad.count("contradicts") == 3  # maglev-noct, maglev-ct, conntrack
    assert isinstance(vip.hashing_figure(pd.DataFrame(hashing_rows())), Figure)


def rr_summary(first_top=0.9):
    rows = []
    for pick, shares in (("random", (0.33, 0.35, 0.32)),
                         ("first", (first_top, (1 - first_top) / 2, (1 - first_top) / 2))):
        for dc, share in zip(("us1", "eu1", "ap1"), shares):
            rows.append({"variant": f"{pick}-ttl5-r1", "pick": pick, "ttl_s": 5,
                         "resolvers": 1, "dc": dc, "share": share,
                         "share_stddev_over_time": 0.05 if pick == "random" else 0.1})
    return pd.DataFrame(rows)


def rr_records():
    rows = []
    for variant in ("random-ttl5-r1", "first-ttl5-r1"):
        for i in range(60):
            dc = ("us1", "eu1", "ap1")[i % 3] if variant.startswith("random") else \
                ("us1" if i < 30 else "eu1")
            rows.append({"variant": variant, "t_s": i * 0.1, "dst": f"10.{i % 3}.0.100",
                         "dst_dc": dc, "ok": True})
    return pd.DataFrame(rows)


def test_dns_rr():
    good = text(dns.rr_readings(rr_summary(0.9)))
    assert "Random pick: every DC's share within 0.017 of 1/N" in good
    assert "clients herd" in good and "contradicts" not in good
    flat = text(dns.rr_readings(rr_summary(0.36)))
    assert "no herd visible" in flat and "contradicts" in flat
    shares = dns.share_over_time(rr_records(), 2.0)
    first = shares[shares["variant"] == "first-ttl5-r1"]
    assert set(first["dc"]) == {"us1", "eu1", "ap1"}  # every DC in every bin
    assert first[first["dc"] == "ap1"]["share"].max() == 0
    assert first[first["bin"] == 0].set_index("dc")["share"].to_dict() == \
        {"ap1": 0, "eu1": 0, "us1": 1}
    assert isinstance(dns.rr_figure(shares, 2.0), Figure)


def pop_summary(herds: dict) -> pd.DataFrame:
    """dns-rr-pop summary rows: variant (pick, spread, resolvers) -> herd number; 3 DCs,
    600 requests over 6 bins per variant."""
    rows = []
    for (pick, spread, n), herd in herds.items():
        for dc in ("us1", "eu1", "ap1"):
            rows.append({"variant": f"{pick}-{spread}-r{n}", "pick": pick,
                         "resolver_skew": spread, "resolvers": n, "dc": dc, "requests": 200,
                         "bins": 6, "share_max_mean_over_time": herd})
    return pd.DataFrame(rows)


def test_dns_rr_pop_readings_follow_the_herd_numbers():
    good = pop_summary({("random", "uniform", 1): 1.1, ("random", "uniform", 100): 1.15,
                        ("first", "uniform", 1): 3.0, ("first", "uniform", 10): 1.4,
                        ("first", "uniform", 100): 1.1, ("first", "zipf1", 100): 1.5})
    per = dnspop.pop_variants(good)
    # 100 requests per bin, p = 1/3: (1/3 + 3 * 0.0471) * 3 = 1.424
    assert round(per["noise_bound"].iloc[0], 3) == 1.424
    out = text(dnspop.pop_readings(per))
    assert "contradicts" not in out
    assert "the herd number is 3 at 1, 1.4 at 10, 1.1 at 100 resolver(s)" in out
    assert "zipf1 spread 1.5 against uniform 1.1" in out and "keep more of the herd" in out
    flat = pop_summary({("random", "uniform", 1): 2.2, ("first", "uniform", 1): 1.2,
                        ("first", "uniform", 100): 1.3})
    out = text(dnspop.pop_readings(dnspop.pop_variants(flat)))
    assert out.count("contradicts") == 3   # random herds, no herd at 1, no shrink
    assert isinstance(dnspop.pop_figure(per), Figure)


def geo_pop_summary(ecs_pct=99.0, noecs_all_pct=67.0) -> pd.DataFrame:
    rows = []
    for variant, share, ecs, pub_near, pub_site, all_near in (
            ("share0", 0.0, False, None, None, 100.0),
            ("share0.5-noecs", 0.5, False, 33.0, 100.0, noecs_all_pct),
            ("share0.5-ecs", 0.5, True, ecs_pct, 33.0, 99.5)):
        head = {"variant": variant, "public_share": share, "ecs": ecs, "user_region": "all",
                "user_latency_p90_ms": 100.0}
        rows.append({**head, "resolver_kind": "all", "dc_chosen_pct_nearest": all_near})
        rows.append({**head, "resolver_kind": "own", "dc_chosen_pct_nearest": 100.0,
                     "latency_p50_ms": 14.0})
        if pub_near is not None:
            rows.append({**head, "resolver_kind": "public", "dc_chosen_pct_nearest": pub_near,
                         "dc_chosen_pct_public_site": pub_site, "latency_p50_ms": 100.0})
    return pd.DataFrame(rows)


def test_dns_geo_pop_readings():
    good = text(dnspop.geo_pop_readings(geo_pop_summary()))
    assert "contradicts" not in good
    assert "with ECS reached their nearest DC in 99% of requests" in good
    assert "without ECS 100% of their requests went to the public resolver's nearest DC" in good
    assert "100% with nobody behind the public resolver, 67% at 50% behind it" in good
    assert "share0.5-ecs: even with ECS the public resolver's users waited 100 ms at the " \
           "median against 14 ms" in good
    bad = text(dnspop.geo_pop_readings(geo_pop_summary(ecs_pct=60.0, noecs_all_pct=99.0)))
    assert bad.count("contradicts") == 2
    assert isinstance(dnspop.geo_pop_figure(geo_pop_summary()), Figure)


def failover_pop_summary(retry_failed=0.2, geo_last=5.0) -> pd.DataFrame:
    rows = [("all-first", "all", "first", 30.0, 6.0, 6.5, 5.0),
            ("all-retry-next", "all", "retry-next", retry_failed, 0.4, 6.5, 1010.0),
            ("geo-retry-next", "geo", "retry-next", 40.0, geo_last, 6.5, 3.0)]
    return pd.DataFrame([{"variant": v, "policy": p, "behaviour": b, "failed_pct": f,
                          "last_failure_s": last, "bound_s": bound, "added_latency_p50_ms": 1.0,
                          "added_latency_p99_ms": added}
                         for v, p, b, f, last, bound, added in rows])


def test_dns_failover_pop_readings():
    good = text(dnspop.failover_pop_readings(failover_pop_summary()))
    assert "contradicts" not in good
    assert "all-retry-next: 0.2% of requests failed (under 1% expected) and the p99 " \
           "latency grew by 1010 ms" in good
    assert "geo-retry-next: one answer, nothing to retry: 40% of requests failed, the last " \
           "5 s after the failure (detection + TTL = 6.5 s)" in good
    bad = text(dnspop.failover_pop_readings(failover_pop_summary(retry_failed=5.0,
                                                              geo_last=12.0)))
    assert bad.count("contradicts") == 2
    assert isinstance(dnspop.failover_pop_figure(failover_pop_summary()), Figure)


def geo_summary(ecs_pct=100.0, ecs_latency=20.0):
    rows = []
    for variant, policy, ecs in (("all", "all", True), ("geo-noecs", "geo", False),
                                 ("geo-ecs", "geo", True)):
        rows.append({"variant": variant, "policy": policy, "ecs": ecs, "client_region": "na",
                     "resolver": "lbd-na", "resolver_region": "na",
                     "dc_chosen_pct_nearest": 33.0 if policy == "all" else 100.0,
                     "latency_p50_ms": 20.0})
        far_pct = {"all": 33.0, "geo-noecs": 0.0, "geo-ecs": ecs_pct}[variant]
        rows.append({"variant": variant, "policy": policy, "ecs": ecs, "client_region": "ap",
                     "resolver": "lbd-eu", "resolver_region": "eu",
                     "dc_chosen_pct_nearest": far_pct,
                     "latency_p50_ms": ecs_latency if variant == "geo-ecs" else 150.0})
    return pd.DataFrame(rows)


def test_dns_geo():
    good = text(dns.geo_readings(geo_summary()))
    assert "Clients of ap behind distant lbd-eu: nearest DC 0% without ECS, 100% with ECS; " \
           "median latency 150 → 20 ms — consistent" in good
    bad = text(dns.geo_readings(geo_summary(ecs_pct=10.0)))
    assert "contradicts" in bad
    near_only = geo_summary()
    near_only = near_only[near_only["client_region"] == "na"]
    assert "not tested" in text(dns.geo_readings(near_only))
    assert isinstance(dns.geo_figure(geo_summary()), Figure)


def failover_summary(drain=8.0):
    return pd.DataFrame([{"variant": "fail", "ttl_s": 5, "detect_s": 1.2, "drain_s": drain,
                          "failed_requests": 30},
                         {"variant": "overload", "ttl_s": 5, "detect_s": 1.5, "drain_s": 4.0,
                          "failed_requests": 0}])


def test_dns_failover():
    good = text(dns.failover_readings(failover_summary(5.0)))
    assert "fail TTL 5 s: detected after 1.2 s" in good and "contradicts" not in good
    bad = text(dns.failover_readings(failover_summary(9.0)))
    assert "contradicts" in bad
    records = pd.DataFrame([{"variant": f"{v}-ttl5", "t_s": t * 0.5, "ok": t < 10 or t > 14,
                             "dst": "10.1.0.100", "dst_dc": "us1" if t < 10 else "",
                             "event_t_s": 3.0} for v in ("fail", "overload")
                            for t in range(30)])
    assert isinstance(dns.failover_figure(failover_summary(), records), Figure)


def test_gre_mtu():
    df = pd.DataFrame([
        {"variant": "no-fix", "uploads": 3, "upload_ok_pct": 0.0, "upload_goodput_mbps": None,
         "search_ok_pct": 100.0, "search_latency_p50_ms": 20.0},
        {"variant": "mss-clamp", "uploads": 3, "upload_ok_pct": 100.0,
         "upload_goodput_mbps": 50.0, "search_ok_pct": 100.0, "search_latency_p50_ms": 20.0},
        {"variant": "jumbo-underlay", "uploads": 3, "upload_ok_pct": 66.7,
         "upload_goodput_mbps": 60.0, "search_ok_pct": 100.0, "search_latency_p50_ms": 20.0}])
    lines = gre.readings(df)
    assert "consistent" in lines[0] and "consistent" in lines[1] and "contradicts" in lines[2]
    assert isinstance(gre.figure(df), Figure)


def test_full_report_of_every_family(tmp_path):
    runs = [make_run(tmp_path, "rtt-matrix", rtt_rows()),
            make_run(tmp_path, "vip-modes", modes_summary().to_dict("records"),
                     modes_records().to_dict("records")),
            make_run(tmp_path, "vip-hashing", hashing_rows()),
            make_run(tmp_path, "dns-rr", rr_summary().to_dict("records"),
                     rr_records().to_dict("records"), parameters={"bin_s": 2.0}),
            make_run(tmp_path, "dns-geo", geo_summary().to_dict("records")),
            make_run(tmp_path, "dns-failover", failover_summary().to_dict("records"))]
    md = build_report(runs, tmp_path / "out")
    body = md.read_text()
    for exp in ("rtt-matrix", "vip-modes", "vip-hashing", "dns-rr", "dns-geo", "dns-failover"):
        assert f"## {exp}" in body
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").iterdir())
    assert figures == ["dns-geo-geo.png", "dns-rr-share-over-time.png",
                       "rtt-matrix-rtt.png", "vip-hashing-hashing.png", "vip-modes-modes.png"]
    # dns-failover had no records: its timeline is a note, not a crash
    assert "dns-failover timeline: not produced, records.csv has no column(s)" in body
    # chapter order follows the suite order, not the argument order
    assert body.index("## rtt-matrix") < body.index("## vip-modes") < body.index("## dns-rr")
