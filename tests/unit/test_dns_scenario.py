"""Scenario -> DNS: the `dns:` section's checks, the authority's config built from the network
plan, who uses which resolver, and the unbound config written for each resolver host."""
from __future__ import annotations

import copy
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import yaml

from experiments import dnsnet
from gslb.config import GslbConfig
from gslb.policy import ClientLocation, RegionMap, decide
from lab.dns_config import (gslb_config, probe_targets, resolver_clients, resolver_of,
                            service_addresses)
from lab.dnsproc import request_rate
from lab.unbound import unbound_config
from topologies import scenario
from topologies.plan import build_plan
from topologies.scenario import ScenarioError

REPO = Path(__file__).resolve().parents[2]


def three_dc() -> dict:
    return yaml.safe_load((scenario.SCENARIO_DIR / "three-dc.yaml").read_text())


def with_dns(**dns) -> dict:
    data = three_dc()
    data["dns"] = {**{k: v for k, v in data["dns"].items() if k != "shared_resolver"}, **dns}
    return data


def error(data: dict) -> str:
    with pytest.raises(ScenarioError) as info:
        scenario.parse(data, "bad.yaml")
    text = str(info.value)
    assert "\n" not in text
    return text


# -- the dns: section -------------------------------------------------------------------


def test_defaults_and_three_dc_shared_resolver():
    s = scenario.load("three-dc")
    assert (s.dns.cache_min_ttl_s, s.dns.cache_max_ttl_s, s.dns.answers) == (0, 86400, "vip")
    assert s.dns.shared_resolver == scenario.SharedResolver("eu", ("ap",), 1)
    assert scenario.load("two-dc").dns.shared_resolver is None


@pytest.mark.parametrize("dns, expected", [
    ({"cache_min_ttl_s": 60, "cache_max_ttl_s": 30},
     "bad.yaml: dns.cache_min_ttl_s: cache_min_ttl_s 60 is above cache_max_ttl_s 30"),
    ({"cache_max_ttl_s": -1}, "bad.yaml: dns.cache_max_ttl_s: must be between 0 and 86400"),
    ({"cache_min_ttl_s": "5"}, "bad.yaml: dns.cache_min_ttl_s: expected a number"),
    ({"answers": "backend"}, "bad.yaml: dns.answers: 'backend' is not one of"),
    ({"resolvers": 2}, "bad.yaml: dns.resolvers: unknown key 'resolvers'"),
    ({"shared_resolver": {"site": "us1", "clients_from": ["ap"]}},
     "bad.yaml: dns.shared_resolver.site: 'us1' is not a client region with a resolver"),
    ({"shared_resolver": {"site": "eu", "clients_from": ["xx"]}},
     "bad.yaml: dns.shared_resolver.clients_from[0]: unknown region 'xx'"),
    ({"shared_resolver": {"site": "eu", "clients_from": ["eu"]}},
     "bad.yaml: dns.shared_resolver.clients_from[0]: 'eu' is the shared resolver's own"),
    ({"shared_resolver": {"site": "eu", "clients_from": "ap"}},
     "bad.yaml: dns.shared_resolver.clients_from: expected a list of region names"),
    ({"shared_resolver": {"site": "eu", "clients_from": []}},
     "bad.yaml: dns.shared_resolver.clients_from: list at least one client region"),
    ({"shared_resolver": {"site": "eu", "clients_from": ["ap", "ap"]}},
     "bad.yaml: dns.shared_resolver.clients_from: a region is listed twice"),
    ({"shared_resolver": {"site": "eu", "clients_from": ["ap"], "clients": 3}},
     "bad.yaml: dns.shared_resolver.clients: must be between 1 and 2"),
    ({"shared_resolver": {"site": "eu", "clients_from": ["ap"], "who": 1}},
     "bad.yaml: dns.shared_resolver.who: unknown key 'who'"),
    ({"shared_resolver": {"clients_from": ["ap"]}},
     "bad.yaml: dns.shared_resolver.site: missing required key"),
    ({"overload": "drop"}, "bad.yaml: dns.overload: 'drop' is not one of spill, shed"),
    ({"hysteresis": 1}, "bad.yaml: dns.hysteresis: must be between 0 and 0.9"),
    ({"services": []}, "bad.yaml: dns.services: expected a mapping"),
    ({"services": {"www": {}}}, "bad.yaml: dns.services: 'www' is not a usable name"),
    ({"services": {"Up_load": {}}}, "bad.yaml: dns.services: 'Up_load' is not a usable"),
    ({"services": {"search": {"policy": "fast"}}},
     "bad.yaml: dns.services.search.policy: 'fast' is not one of all, geo, capacity, spare"),
    ({"services": {"search": {"ttl": 5}}}, "bad.yaml: dns.services.search.ttl: unknown key"),
    ({"services": {"search": {"capacity_share": 0}}},
     "bad.yaml: dns.services.search.capacity_share: must be between 0.01 and 1"),
    ({"services": {"search": {"policy": "geo", "max_distance_ms": 50}}},
     "bad.yaml: dns.services.search.max_distance_ms: applies only with policy: spare"),
])
def test_bad_dns_settings_get_one_line(dns, expected):
    assert error(with_dns(**dns)).startswith(expected)


def test_shared_resolver_needs_a_resolver_in_its_site():
    data = with_dns(shared_resolver={"site": "eu", "clients_from": ["ap"]})
    data["regions"]["eu"]["resolver"] = False
    assert "dns.shared_resolver.site: 'eu' is not a client region with a resolver" \
        in error(data)


# -- scenario -> GslbConfig ---------------------------------------------------------------


def test_service_names_reach_the_authority_with_their_policies():
    data = with_dns(overload="shed", hysteresis=0.2, services={
        "search": {"policy": "capacity", "ttl_s": 10, "capacity_share": 0.7},
        "upload": {"policy": "spare", "ttl_s": 60, "capacity_share": 0.3,
                   "max_distance_ms": 80}})
    config = gslb_config(build_plan(scenario.parse(data, "x.yaml")))
    assert (config.overload, config.hysteresis) == ("shed", 0.2)
    assert [(v.name, v.policy, v.ttl_s, v.capacity_share, v.max_distance_ms)
            for v in config.all_services()] == [
        ("www", "geo", 30, 1.0, None), ("search", "capacity", 10, 0.7, None),
        ("upload", "spare", 60, 0.3, 80)]
    assert GslbConfig.from_dict(config.to_dict()) == config
    # without the keys, exactly today's authority
    plain = gslb_config(build_plan(scenario.parse(three_dc(), "x.yaml")))
    assert plain.services == () and plain.overload == "spill"


def test_gslb_config_from_three_dc():
    plan = build_plan(scenario.load("three-dc"))
    cfg = gslb_config(plan)
    assert [(d.name, str(d.vip), d.capacity_rps) for d in cfg.dcs] == [
        ("us1", "10.101.0.100", 400.0), ("eu1", "10.102.0.100", 400.0),
        ("ap1", "10.103.0.100", 400.0)]
    assert {r.name: r.subnets for r in cfg.regions} == {
        "na": (IPv4Network("10.1.0.0/24"),), "eu": (IPv4Network("10.2.0.0/24"),),
        "ap": (IPv4Network("10.3.0.0/24"),)}
    # distances are routed one-way delays, every region -> DC pair
    assert cfg.distance_ms[("ap", "ap1")] == 4.0 and cfg.distance_ms[("ap", "us1")] == 75.0
    assert len(cfg.distance_ms) == 9
    assert cfg.authority_address == IPv4Address("10.101.0.54")  # lba-us1
    assert (cfg.policy, cfg.ttl_s) == ("geo", 30)
    assert {r: cfg.nearest_dc(r) for r in ("na", "eu", "ap")} == {
        "na": "us1", "eu": "eu1", "ap": "ap1"}


def test_geo_answer_for_each_region_is_its_nearest_vip():
    plan = build_plan(scenario.load("three-dc"))
    cfg = gslb_config(plan)
    regions = RegionMap(cfg)
    for region in plan.scenario.regions:
        loc = regions.locate_prefix(region.subnet)
        assert loc == ClientLocation(region.name, 24)
        answer = decide(cfg, {}, loc, 0)
        assert answer.vips == (cfg.dc(cfg.nearest_dc(region.name)).vip,)
        assert answer.scope == 24


def test_distances_follow_the_routed_path_not_a_direct_link():
    data = three_dc()
    for link in data["links"]:
        if {link["a"], link["b"]} == {"ap", "us1"}:
            link["delay_ms"] = 500  # the direct link is slow: the path via ap1 wins
    plan = build_plan(scenario.parse(data, "x.yaml"))
    assert gslb_config(plan).distance_ms[("ap", "us1")] == 4 + 73  # via ap1


def test_overrides_and_answers_setting():
    plan = build_plan(scenario.load("two-dc"))
    cfg = gslb_config(plan, policy="all", ttl_s=5, capacity_rps={"us1": 40},
                      answers="first_backend")
    assert (cfg.policy, cfg.ttl_s, cfg.dc("us1").capacity_rps) == ("all", 5, 40.0)
    assert service_addresses(plan, "first_backend") == {
        "us1": IPv4Address("10.101.0.11"), "eu1": IPv4Address("10.102.0.11")}
    assert cfg.dc("eu1").vip == IPv4Address("10.102.0.11")
    with pytest.raises(ValueError, match="capacity_rps: unknown DC 'xx'"):
        gslb_config(plan, capacity_rps={"xx": 1})


def test_probe_targets_avoid_the_authoritys_own_vip():
    plan = build_plan(scenario.load("two-dc"))  # authority in us1
    assert probe_targets(gslb_config(plan), plan) == {
        "us1": ("10.101.0.11", 80), "eu1": ("10.102.0.100", 80)}


def test_config_round_trips_through_json_dict():
    plan = build_plan(scenario.load("three-dc"))
    cfg = gslb_config(plan, ttl_s=7)
    assert GslbConfig.from_dict(copy.deepcopy(cfg.to_dict())) == cfg


# -- resolvers ----------------------------------------------------------------------------


def test_shared_resolver_takes_the_last_clients_of_listed_regions():
    plan = build_plan(scenario.load("three-dc"))
    assert resolver_of(plan, "lbc-ap1").name == "lbd-ap"
    assert resolver_of(plan, "lbc-ap2").name == "lbd-eu"
    assert resolver_of(plan, "lbc-na2").name == "lbd-na"
    assert resolver_clients(plan) == {"lbd-na": ["lbc-na1", "lbc-na2"],
                                      "lbd-eu": ["lbc-eu1", "lbc-eu2", "lbc-ap2"],
                                      "lbd-ap": ["lbc-ap1"]}
    with pytest.raises(ValueError):
        resolver_of(plan, "lbb-us11")


def test_region_without_resolver_has_none():
    data = three_dc()
    data["regions"]["na"]["resolver"] = False
    plan = build_plan(scenario.parse(data, "x.yaml"))
    assert resolver_of(plan, "lbc-na1") is None


def test_unbound_config_with_and_without_ecs(tmp_path):
    common = dict(ip="10.3.0.53", name="lbd-ap", work_dir=tmp_path,
                  authority_ip="10.101.0.54", allow=["10.1.0.0/24", "10.3.0.0/24"],
                  cache_min_ttl_s=2, cache_max_ttl_s=40)
    with_ecs = unbound_config(ecs=True, **common)
    assert "interface: 10.3.0.53" in with_ecs
    assert 'module-config: "subnetcache iterator"' in with_ecs
    assert "send-client-subnet: 10.101.0.54" in with_ecs
    assert "stub-addr: 10.101.0.54@53" in with_ecs
    assert 'local-zone: "test." nodefault' in with_ecs
    assert "cache-min-ttl: 2" in with_ecs and "cache-max-ttl: 40" in with_ecs
    assert "access-control: 10.1.0.0/24 allow" in with_ecs
    assert 'chroot: ""' in with_ecs and 'username: ""' in with_ecs
    assert f'pidfile: "{tmp_path}/unbound-lbd-ap.pid"' in with_ecs
    without = unbound_config(ecs=False, roundrobin=False, **common)
    assert 'module-config: "iterator"' in without and "send-client-subnet" not in without
    assert "rrset-roundrobin: no" in without


def test_unbound_accepts_the_written_config(tmp_path):
    checkconf = subprocess.run(["which", "unbound-checkconf"], capture_output=True, text=True)
    if checkconf.returncode:
        pytest.skip("unbound-checkconf not installed")
    conf = tmp_path / "u.conf"
    conf.write_text(unbound_config(
        ip="127.0.0.1", name="t", work_dir=tmp_path, authority_ip="127.0.0.1",
        allow=["10.1.0.0/24"], ecs=True))
    out = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_request_rate_of_counter_samples():
    assert request_rate([(0.0, 10)], 1.0) is None
    # 0.5 s apart, 1 s window: 31 requests, 2 of them our own /stats polls
    assert request_rate([(0.0, 10), (0.5, 25), (1.0, 41)], 1.0) == 29.0
    assert request_rate([(0.0, 10), (0.5, 5)], 1.0) == 0.0
    # served and shed counters do not count the feeder's own /stats polls
    assert request_rate([(0.0, 10), (0.5, 25), (1.0, 41)], 1.0, own_polls=False) == 31.0


# -- lblab dns serve: bad input is one line and exit 2 --------------------------------------


@pytest.mark.parametrize("args, text", [
    (["--listen", "localhost"], "--listen localhost: expected ADDRESS:PORT"),
    (["--listen", "127.0.0.1:99999"], "--listen 127.0.0.1:99999: expected ADDRESS:PORT"),
    (["--control", "x:1"], "--control x:1: expected ADDRESS:PORT"),
    (["--scenario", "nope"], "unknown scenario 'nope'"),
    (["--ttl", "-3"], "dns: ttl_s: must be an integer"),
])
def test_dns_serve_bad_input(args, text):
    proc = subprocess.run([sys.executable, "-m", "experiments", "dns", "serve", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and text in proc.stderr, proc.stderr


def test_dns_serve_answers_on_loopback_and_stops_on_sigterm():
    import signal
    import time

    import dns.edns
    import dns.exception
    import dns.message
    import dns.query

    from gslb.bench import _free_port
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "experiments", "dns", "serve",
                             "--listen", f"127.0.0.1:{port}", "--control", "off"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        query = dns.message.make_query("www.lblab.test", "A", use_edns=0, options=[
            dns.edns.ECSOption("10.3.0.0", 24)])
        deadline = time.monotonic() + 20
        while True:  # ready when it answers
            try:
                reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.3)
                break
            except dns.exception.Timeout:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "lblab dns serve did not answer"
        assert [rd.address for rd in reply.answer[0]] == ["10.103.0.100"]  # ap -> ap1's VIP
        ecs = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
        assert ecs and ecs[0].scopelen == 24
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_controller_apps_follow_the_answers_setting():
    plan = build_plan(scenario.load("two-dc"))
    assert dnsnet.controller_apps(plan) is None  # default apps, VIP balancer included
    data = yaml.safe_load((scenario.SCENARIO_DIR / "two-dc.yaml").read_text())
    data["dns"]["answers"] = "first_backend"
    plan = build_plan(scenario.parse(data, "x.yaml"))
    assert dnsnet.controller_apps(plan) == ("controller.l2app",)
