"""The live lab's CLI commands (experiments/livecli.py): every argument is checked before
anything changes, and a wrong one is a single line naming the problem and the usage."""
from __future__ import annotations

import pytest

from experiments import livecli
from experiments.livecli import Usage, parse_ask, parse_dns, parse_fault, parse_load, \
    parse_vip
from lab.dns import parse_dig
from topologies import scenario
from topologies.plan import build_plan

PLAN = build_plan(scenario.load("three-dc"))

# What dig 9.18 printed for a query with ECS to lblab's authority, and for one nobody answered
DIG_ECS = """
; <<>> DiG 9.18.49-1~deb12u3-Debian <<>> +subnet=10.3.0.11/24 @10.101.0.54 www.lblab.test A
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 12673
;; flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
; CLIENT-SUBNET: 10.3.0.0/24/24
;; QUESTION SECTION:
;www.lblab.test.			IN	A

;; ANSWER SECTION:
www.lblab.test.		30	IN	A	10.103.0.100
www.lblab.test.		30	IN	A	10.102.0.100

;; Query time: 4 msec
"""
DIG_NXDOMAIN = """
;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 44975
;; AUTHORITY SECTION:
lblab.test.		30	IN	SOA	ns1.lblab.test. hostmaster.lblab.test. 1 3600 600 86400 30
"""
DIG_TIMEOUT = """
;; communications error to 10.3.0.53#53: timed out
;; no servers could be reached
"""


def one_line_usage(exc: pytest.ExceptionInfo, command: str, *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and text.endswith(livecli.USAGE[command]), text
    for word in words:
        assert word in text, text


def test_vip_commands_parse_to_validated_actions():
    assert parse_vip(PLAN, []) == ("show", None)
    assert parse_vip(PLAN, ["ap1"]) == ("show", "ap1")
    assert parse_vip(PLAN, ["mode", "eu1", "dsr"]) == ("mode", "eu1", "dsr")
    # backends by name or address; add also takes any address (the controller judges it)
    assert parse_vip(PLAN, ["drain", "ap1", "lbb-ap11"]) == ("drain", "ap1", "10.103.0.11")
    assert parse_vip(PLAN, ["undrain", "ap1", "10.103.0.11"]) == \
        ("undrain", "ap1", "10.103.0.11")
    assert parse_vip(PLAN, ["add", "us1", "10.9.9.9"]) == ("add", "us1", "10.9.9.9")


@pytest.mark.parametrize("words, names", [
    (["mars"], ["'mars'", "us1, eu1, ap1"]),
    (["mode", "us1", "tunnel"], ["'tunnel'"]),
    (["mode", "us1"], ["DC and a mode"]),
    (["drain", "us1", "lbb-zz9"], ["'lbb-zz9'"]),
    (["remove", "us1"], ["backend"]),
    (["flip", "us1", "x"], ["'flip'"]),
])
def test_a_wrong_vip_argument_is_one_line_with_the_usage(words, names):
    with pytest.raises(Usage) as exc:
        parse_vip(PLAN, words)
    one_line_usage(exc, "vip", *names)


def test_dns_commands():
    assert parse_dns([]) == ("show",)
    assert parse_dns(["policy", "capacity"]) == ("policy", "capacity")
    assert parse_dns(["ttl", "0"]) == ("ttl", 0)
    for words, name in ((["policy", "nearest"], "'nearest'"), (["ttl", "-1"], "-1"),
                        (["ttl", "5.5"], "integer"), (["ttl", "99999999"], "86400"),
                        (["flush"], "'flush'")):
        with pytest.raises(Usage) as exc:
            parse_dns(words)
        one_line_usage(exc, "dns", name)


def test_faults_name_a_dc_a_backend_or_a_wan_link_either_way_round():
    assert parse_fault("fail", PLAN, ["dc", "ap1"]) == ("dc", "ap1")
    assert parse_fault("fail", PLAN, ["backend", "10.101.0.12"]) == ("backend", "lbb-us12")
    wan = next(w for w in PLAN.wans if {w.link.a, w.link.b} == {"ap", "ap1"})
    assert parse_fault("recover", PLAN, ["link", "ap-ap1"]) == ("link", wan.index)
    assert parse_fault("recover", PLAN, ["link", "ap1-ap"]) == ("link", wan.index)
    assert parse_fault("fail", PLAN, ["link", wan.relay_name]) == ("link", wan.index)
    for words, name in ((["dc"], "dc, backend, link"), (["router", "x"], "dc, backend"),
                        (["dc", "ap9"], "'ap9'"), (["link", "na-ap"], "'na-ap'")):
        with pytest.raises(Usage) as exc:
            parse_fault("fail", PLAN, words)
        one_line_usage(exc, "fail", name)


def test_ask_and_load_take_only_client_hosts_with_a_resolver():
    assert parse_ask(PLAN, ["lbc-ap1"], "www.lblab.test") == ("lbc-ap1", "www.lblab.test")
    assert parse_ask(PLAN, ["lbc-ap2", "x.lblab.test"], "www") == ("lbc-ap2", "x.lblab.test")
    assert parse_load(PLAN, ["lbc-na1", "50", "2.5"]) == ("lbc-na1", 50.0, 2.5)
    for words, name in ((["lbd-ap"], "'lbd-ap' is not a client host"), ([], "client host"),
                        (["lbc-ap1", "a b;rm"], "not a DNS name")):
        with pytest.raises(Usage) as exc:
            parse_ask(PLAN, words, "www.lblab.test")
        one_line_usage(exc, "ask", name)
    for words, name in ((["lbc-na1", "0", "5"], "above 0"),
                        (["lbc-na1", str(livecli.MAX_LOAD_RPS + 1), "5"], "at most"),
                        (["lbc-na1", "10", "forever"], "'forever'"),
                        (["lbb-us11", "10", "5"], "not a client"), (["lbc-na1"], "rate")):
        with pytest.raises(Usage) as exc:
            parse_load(PLAN, words)
        one_line_usage(exc, "load", name)


def test_dig_output_gives_status_answers_with_ttls_and_the_ecs_scope():
    got = parse_dig(DIG_ECS)
    assert got.status == "NOERROR"
    assert got.answers == [("10.103.0.100", 30), ("10.102.0.100", 30)]
    assert got.ecs == ("10.3.0.0/24", 24)
    nx = parse_dig(DIG_NXDOMAIN)
    assert (nx.status, nx.answers, nx.ecs) == ("NXDOMAIN", [], None)  # the SOA is no answer
    assert parse_dig(DIG_TIMEOUT).status is None


def test_load_summary_gives_each_dcs_share_of_the_answered_requests():
    dc_of = {"10.101.0.100": "us1", "10.102.0.100": "eu1"}.get
    rows = [{"ok": True, "dst": "10.101.0.100"}] * 3 + [{"ok": True, "dst": "10.102.0.100"}] \
        + [{"ok": False, "dst": "10.102.0.100"}]
    assert livecli.load_summary(rows, dc_of) == \
        "5 requests, 4 answered: us1 75%, eu1 25%; 1 failed, sent to: eu1 1"
    assert livecli.load_summary([{"ok": False, "dst": ""}], dc_of) == \
        "1 requests, 0 answered; 1 failed, sent to: unresolved 1"


def test_every_command_has_help_in_the_cli():
    pytest.importorskip("mininet.cli")
    from experiments.labshell import LblabCLI
    for name in livecli.USAGE:
        method = getattr(LblabCLI, f"do_{name}")
        assert method.__doc__ and len(method.__doc__.strip()) > 40, name
