"""BIRD configs for the LB tier (lab/bird.py): what the router and each speaker are told, and
that BIRD itself accepts them (`bird -p`, where BIRD is installed: `make setup` installs it)."""
from __future__ import annotations

import ipaddress
import shutil
import subprocess

import pytest

from lab.bird import Speaker, router_config, speaker_config

VIP = "10.101.0.100"
SPEAKERS = [Speaker(f"lbk-us1-{k}", ipaddress.IPv4Address(f"10.101.0.{40 + k}"))
            for k in (1, 2, 3)]


def test_router_has_a_session_per_speaker_and_merges_their_paths():
    text = router_config("10.101.0.1", "lbr-us1-eth0", SPEAKERS, [VIP])
    for k in (1, 2, 3):
        assert f"protocol bgp sp_lbk_us1_{k} from lb_speaker {{ neighbor 10.101.0.{40 + k} " \
               "as 65001; }" in text
    assert "merge paths on limit 16;" in text
    assert "import none; export where net ~ [ 10.101.0.100/32 ];" in text   # kernel: VIP only
    assert "import where net ~ [ 10.101.0.100/32 ]; export none;" in text   # BGP: VIP only
    assert "local 10.101.0.1 as 65000;" in text and "strict bind on;" in text
    assert 'interface "lbr-us1-eth0"' in text and "bfd on;" in text
    assert "error wait time 1,5;" in text and "graceful restart off;" in text


def test_speaker_announces_itself_as_next_hop_and_installs_nothing():
    text = speaker_config(SPEAKERS[1], "10.101.0.1", "lbk-us1-2-eth0", [VIP, "10.101.0.101"])
    assert "route 10.101.0.100/32 blackhole;" in text
    assert "route 10.101.0.101/32 blackhole;" in text
    assert "next hop self;" in text
    assert "neighbor 10.101.0.1 as 65000;" in text and "local 10.101.0.42 as 65001;" in text
    assert "protocol kernel" not in text


def test_without_bfd_there_is_no_bfd_protocol():
    text = router_config("10.101.0.1", "eth0", SPEAKERS, [VIP], bfd=False)
    assert "protocol bfd" not in text and "bfd off;" in text


@pytest.mark.parametrize("call", [
    lambda: router_config("10.101.0.1", "eth0", [], [VIP]),
    lambda: router_config("10.101.0.1", "eth0", SPEAKERS, []),
    lambda: router_config("10.101.0.300", "eth0", SPEAKERS, [VIP]),
    lambda: speaker_config(SPEAKERS[0], "10.101.0.1", "eth0", ["not-an-ip"]),
    lambda: router_config("10.101.0.1", "eth0", [Speaker("s-1", "10.101.0.41"),
                                                 Speaker("s_1", "10.101.0.42")], [VIP]),
])
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 not installed (make setup)")
def test_bird_accepts_both_configs(tmp_path):
    keyword = [Speaker("bgp", "10.101.0.41"), Speaker("9", "10.101.0.42")]  # odd node names
    for name, text in [("router", router_config("10.101.0.1", "eth0", SPEAKERS, [VIP])),
                       ("router-odd-names", router_config("10.101.0.1", "eth0", keyword, [VIP])),
                       ("speaker", speaker_config(SPEAKERS[0], "10.101.0.1", "eth0", [VIP]))]:
        path = tmp_path / f"{name}.conf"
        path.write_text(text)
        proc = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, (name, proc.stderr, text)


def test_router_config_with_a_shadow_table_feeds_it_through_a_pipe(tmp_path):
    from lab.bird import KERNEL_MAIN, KERNEL_SHADOW
    text = router_config("10.101.0.1", "lbr-us1-eth0", [Speaker("lbk-us1-1", "10.101.0.56")],
                         ["10.101.0.100"], shadow_table=100)
    assert f"protocol kernel {KERNEL_MAIN}" in text and f"protocol kernel {KERNEL_SHADOW}" in text
    assert "kernel table 100;" in text and "peer table shadow4;" in text
    assert text.count("merge paths on") == 2
    if shutil.which("bird"):
        conf = tmp_path / "r.conf"
        conf.write_text(text)
        check = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
