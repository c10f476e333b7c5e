"""Scenario files: the built-ins are valid, and every kind of mistake gets one clear line
naming the file, the field and the problem."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from topologies import scenario
from topologies.scenario import ScenarioError

REPO = Path(__file__).resolve().parents[2]


def three_dc() -> dict:
    return yaml.safe_load((scenario.SCENARIO_DIR / "three-dc.yaml").read_text())


@pytest.mark.parametrize("name", scenario.builtin_names())
def test_builtin_scenarios_are_valid(name):
    s = scenario.load(name)
    assert s.regions and s.dcs and s.links


def test_three_dc_matches_the_issue():
    s = scenario.load("three-dc")
    assert len(s.dcs) == 3 and len(s.regions) == 3
    assert all(dc.backends >= 4 for dc in s.dcs)
    assert all(r.clients >= 2 for r in s.regions)
    # a few ms inside a region, tens of ms between continents
    assert min(l.delay_ms for l in s.links) < 10
    assert max(l.delay_ms for l in s.links) >= 40


def _error(data: dict) -> str:
    with pytest.raises(ScenarioError) as info:
        scenario.parse(data, "bad.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("bad.yaml: ")
    return message


def test_unknown_key_is_named():
    data = three_dc()
    data["dcs"]["us1"]["backend"] = 4  # typo of `backends`
    msg = _error(data)
    assert "dcs.us1.backend" in msg and "unknown key" in msg


def test_bad_address_is_named():
    data = three_dc()
    data["dcs"]["eu1"]["vip"] = "10.102.0.300"
    msg = _error(data)
    assert "dcs.eu1.vip" in msg and "10.102.0.300" in msg


def test_vip_outside_subnet():
    data = three_dc()
    data["dcs"]["eu1"]["vip"] = "10.9.0.100"
    assert "not inside the DC subnet" in _error(data)


def test_link_to_missing_site_is_named():
    data = three_dc()
    data["links"][2]["b"] = "ap2"
    msg = _error(data)
    assert "links[2].b" in msg and "unknown site 'ap2'" in msg


def test_overlapping_subnets():
    data = three_dc()
    data["regions"]["eu"]["subnet"] = "10.1.0.0/24"
    assert "overlaps" in _error(data)


def test_disconnected_site():
    data = three_dc()
    data["links"] = [l for l in data["links"] if "ap" not in (l["a"], l["b"])]
    msg = _error(data)
    assert "not connected" in msg


def test_bad_number_and_range():
    data = three_dc()
    data["links"][0]["delay_ms"] = "fast"
    assert "links[0].delay_ms" in _error(data)
    data = three_dc()
    data["links"][0]["loss_pct"] = 150
    assert "between 0 and 100" in _error(data)


def test_bad_choice():
    data = three_dc()
    data["dcs"]["us1"]["mode"] = "tunnel"
    msg = _error(data)
    assert "dcs.us1.mode" in msg and "nat, dsr, gre" in msg
    data = three_dc()
    data["dcs"]["us1"]["conntrack_impl"] = "nftables"
    msg = _error(data)
    assert "dcs.us1.conntrack_impl" in msg and "ct, learn" in msg


def test_hash_impl_defaults_to_dp_hash_and_multipath_is_kept():
    assert {d.hash_impl for d in scenario.load("three-dc").dcs} == {"dp_hash"}
    data = three_dc()
    data["dcs"]["us1"]["hash_impl"] = "multipath"
    assert scenario.parse(data, "test").dcs[0].hash_impl == "multipath"
    data["dcs"]["us1"]["hash_impl"] = "crc32"
    msg = _error(data)
    assert "dcs.us1.hash_impl" in msg and "dp_hash, multipath" in msg


def test_conntrack_impl_defaults_to_ct_and_learn_is_kept():
    assert {d.conntrack_impl for d in scenario.load("three-dc").dcs} == {"ct"}
    data = three_dc()
    data["dcs"]["us1"]["conntrack_impl"] = "learn"
    assert scenario.parse(data, "test").dcs[0].conntrack_impl == "learn"


def test_long_site_name_explains_why():
    data = three_dc()
    data["regions"]["europe"] = data["regions"].pop("eu")
    assert "15-character interface names" in _error(data)


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nregions: [\n")
    with pytest.raises(ScenarioError) as info:
        scenario.load(str(bad))
    assert str(info.value).startswith("broken.yaml: line ")


def test_cli_typo_exits_2_with_one_line(tmp_path):
    data = three_dc()
    data["regions"]["na"]["clinets"] = 2
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "experiments", "run", "rtt-matrix",
                           "--scenario", str(bad)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "typo.yaml" in lines[0] and "regions.na.clinets" in lines[0]


def test_unknown_scenario_name_lists_builtins():
    with pytest.raises(ScenarioError) as info:
        scenario.load("four-dc")
    assert "three-dc" in str(info.value)
