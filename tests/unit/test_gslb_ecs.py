"""RFC 7871 section 6 checks and the reply option, on raw option bytes."""
import ipaddress
import struct

import dns.edns
import pytest

from gslb.ecs import EcsError, parse_ecs, reply_option


def opt(family: int, source: int, scope: int, address: bytes) -> bytes:
    return struct.pack("!HBB", family, source, scope) + address


def test_ipv4_prefix_parses() -> None:
    ecs = parse_ecs(opt(1, 24, 0, bytes([10, 1, 2])))
    assert ecs.network == ipaddress.ip_network("10.1.2.0/24")


def test_ipv6_prefix_parses() -> None:
    ecs = parse_ecs(opt(2, 56, 0, bytes.fromhex("fd0000020000aa")))
    assert ecs.network == ipaddress.ip_network("fd00:2:0:aa00::/56")


def test_dnspython_option_accepted() -> None:
    ecs = parse_ecs(dns.edns.ECSOption("10.2.3.4", 20))
    assert ecs.network == ipaddress.ip_network("10.2.0.0/20")


@pytest.mark.parametrize("data, why", [
    (opt(3, 24, 0, bytes(3)), "family"),                 # unknown FAMILY
    (opt(0, 0, 0, b""), "family"),
    (opt(1, 33, 0, bytes(5)), "longer than 32"),          # SOURCE too long for IPv4
    (opt(2, 129, 0, bytes(17)), "longer than 128"),
    (opt(1, 24, 0, bytes([10, 1, 2, 0])), "octets"),      # ADDRESS longer than SOURCE needs
    (opt(1, 24, 0, bytes([10, 1])), "octets"),            # and shorter
    (opt(1, 0, 0, bytes([10])), "octets"),
    (opt(1, 20, 0, bytes([10, 1, 0x21])), "bits set"),   # bit 21 set past SOURCE 20
    (opt(1, 1, 0, bytes([0xC0])), "bits set"),
    (b"\x00\x01\x18", "shorter"),                        # truncated fixed part
])
def test_formerr_cases(data: bytes, why: str) -> None:
    with pytest.raises(EcsError, match=why):
        parse_ecs(data)


def test_source_zero_has_no_location() -> None:
    ecs = parse_ecs(opt(1, 0, 0, b""))
    assert ecs.network is None
    # SOURCE 0: the answer cannot depend on the client, SCOPE is 0 whatever is asked
    assert reply_option(ecs, 16) == opt(1, 0, 0, b"")


def test_reply_echoes_and_sets_scope() -> None:
    ecs = parse_ecs(opt(1, 24, 0, bytes([10, 1, 2])))
    assert reply_option(ecs, 16) == opt(1, 24, 16, bytes([10, 1, 2]))
    assert reply_option(ecs, 0) == opt(1, 24, 0, bytes([10, 1, 2]))
    assert reply_option(ecs, 40) == opt(1, 24, 32, bytes([10, 1, 2]))  # capped at the width


def test_no_ecs_in_reply_without_ecs_in_query() -> None:
    assert reply_option(None, 24) is None
