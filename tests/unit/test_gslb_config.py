"""Scenario DNS settings: good ones build, bad ones fail with one line naming the field."""
from typing import Any

import pytest

from gslb.config import GslbConfig, GslbConfigError, example_config


def good() -> dict[str, Any]:
    return {
        "zone": "lblab.test", "service": "www", "ttl_s": 5, "policy": "geo",
        "dcs": [{"name": "dc1", "vip": "10.100.1.1", "capacity_rps": 500},
                {"name": "dc2", "vip": "10.100.2.1", "capacity_rps": 500}],
        "regions": [{"name": "r1", "subnets": ["10.1.0.0/16"]},
                    {"name": "r2", "subnets": ["10.2.0.0/16", "fd00:2::/48"]}],
        "distance_ms": {"r1": {"dc1": 5, "dc2": 50}, "r2": {"dc1": 50, "dc2": 5}},
        "authority": {"ns_name": "ns1", "address": "10.0.0.53"},
        "soa": {"serial": 7},
    }


def test_from_dict_builds() -> None:
    cfg = GslbConfig.from_dict(good())
    assert cfg.ttl_s == 5 and cfg.dcs[1].name == "dc2" and cfg.soa.serial == 7
    assert cfg.distance_ms[("r2", "dc2")] == 5.0
    assert str(cfg.service_name) == "www.lblab.test."


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(policy="random"), "dns.policy"),
    (lambda d: d.update(ttl_s=-1), "dns.ttl_s"),
    (lambda d: d.update(ttl_s="30"), "dns.ttl_s"),
    (lambda d: d.update(tll_s=30), "unknown key 'tll_s'"),
    (lambda d: d["dcs"][0].update(vip="10.100.1.300"), "dns.dcs[0].vip"),
    (lambda d: d["dcs"][1].update(name="dc1"), "dcs[].name: duplicate"),
    (lambda d: d["dcs"][0].update(capacity_rps=0), "dcs[0].capacity_rps"),
    (lambda d: d["dcs"][0].pop("capacity_rps"), "dns.dcs[0].capacity_rps: missing"),
    (lambda d: d["regions"][0].update(subnets=["10.1.0.1/16"]), "dns.regions[0].subnets[0]"),
    (lambda d: d["regions"][1].update(subnets=["10.1.0.0/16"]), "already in region 'r1'"),
    (lambda d: d["distance_ms"]["r1"].pop("dc2"), "distance_ms: missing r1 -> dc2"),
    (lambda d: d["distance_ms"]["r1"].update(dc9=3), "unknown pair r1 -> dc9"),
    (lambda d: d["distance_ms"]["r1"].update(dc1=-3), "distance_ms.r1.dc1"),
    (lambda d: d.update(dcs=[]), "at least one"),
    (lambda d: d["authority"].update(address="ns.example"), "dns.authority.address"),
    (lambda d: d.update(zone="bad..zone"), "dns.zone"),
    (lambda d: d["soa"].update(serial=2**33), "soa.serial"),
])
def test_errors_name_the_field(mutate: Any, field: str) -> None:
    data = good()
    mutate(data)
    with pytest.raises(GslbConfigError) as info:
        GslbConfig.from_dict(data)
    msg = str(info.value)
    assert field in msg and "\n" not in msg


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        example_config(policy="nearest")
