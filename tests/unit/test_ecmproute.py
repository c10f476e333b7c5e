"""lab/ecmproute.py without a network: reading `ip` output and monitor lines, and the
commands the resilient agent issues to keep one group in place as the next hops change."""
from __future__ import annotations

import ipaddress

import pytest

from lab import ecmproute as er

PREFIX = ipaddress.IPv4Network("10.101.0.100/32")


def test_next_hops_of_one_and_of_several_paths():
    assert er.parse_nexthops([{"dst": "10.101.0.100", "gateway": "10.101.0.57"}]) == \
        ["10.101.0.57"]
    multi = [{"dst": "10.101.0.100", "nhid": 27099, "nexthops": [
        {"gateway": "10.101.0.58"}, {"gateway": "10.101.0.56"}, {"gateway": "10.101.0.9"}]}]
    assert er.parse_nexthops(multi) == ["10.101.0.9", "10.101.0.56", "10.101.0.58"]
    assert er.parse_nexthops([]) == []


def test_monitor_lines_are_timed_and_attributed():
    line = ("[2026-12-01T18:03:14.130211] 10.101.0.100 nhid 27099 \\\tnexthop via "
            "10.101.0.56 dev lbr-us1-eth0 weight 1")
    t = er.monitor_time(line)
    assert t is not None and abs(t % 1 - 0.130211) < 1e-5
    assert er.mentions(line, PREFIX) and er.table_of(line) == "main"
    shadow = "[2026-12-01T18:03:14.1] Deleted 10.101.0.100 table 100 proto bird"
    assert er.mentions(shadow, PREFIX) and er.table_of(shadow) == "100"
    assert not er.mentions("[2026-12-01T18:03:14.1] 10.101.0.0/24 dev x", PREFIX)
    assert er.monitor_time("no timestamp") is None


def test_the_agent_replaces_one_group_in_place_and_cleans_up():
    m = er.ResilientMapper(PREFIX, "lbr-us1-eth0", buckets=128, idle_timer_s=1)
    gws = ["10.101.0.56", "10.101.0.57", "10.101.0.58"]
    first = m.commands(gws)
    assert [c[:2] for c in first] == [["nexthop", "replace"]] * 4 + [["route", "replace"]]
    assert first[3][first[3].index("group") + 1] == "27156/27157/27158"
    assert "resilient" in first[3]
    assert first[-1] == ["route", "replace", str(PREFIX), "nhid", str(er.GROUP_ID), "proto",
                         "static"]
    m.members = gws
    shrink = m.commands(["10.101.0.56", "10.101.0.58"])
    # the same group id, replaced (its bucket table is kept); no new route; the gone nexthop
    # deleted after the group no longer names it
    assert shrink[0][:4] == ["nexthop", "replace", "id", str(er.GROUP_ID)]
    assert shrink[0][shrink[0].index("group") + 1] == "27156/27158"
    assert shrink[-1] == ["nexthop", "del", "id", "27157"]
    assert not any(c[0] == "route" for c in shrink)
    m.members = ["10.101.0.56", "10.101.0.58"]
    gone = m.commands([])
    assert gone[0] == ["route", "del", str(PREFIX)]
    assert gone[1] == ["nexthop", "del", "id", str(er.GROUP_ID)]


def test_bad_prefix_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        er.main(["watch", "--prefix", "10.1.0.300/32", "--out", "/dev/null"])
    assert exc.value.code == 2
    assert "--prefix" in capsys.readouterr().err
