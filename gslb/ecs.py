"""EDNS Client Subnet (RFC 7871) as pure functions on option bytes.

We parse the raw option ourselves instead of trusting dnspython's ECSOption parser because
RFC 7871 section 6 wants FORMERR for inputs that parser accepts silently (non-zero bits past
SOURCE, a too-long ADDRESS). The reply option echoes the query's bytes, changing only SCOPE.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import dns.edns

ECS_CODE = 8  # EDNS option code of Client Subnet
FAMILY_BITS = {1: 32, 2: 128}  # RFC 7871 uses address family numbers 1 (IPv4) and 2 (IPv6)
_HEAD = struct.Struct("!HBB")


class EcsError(ValueError):
    """The option breaks RFC 7871 section 6; the server answers FORMERR."""


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    """A validated ECS option from a query."""

    family: int
    source: int
    scope: int  # as sent; RFC 7871 says it MUST be 0 in queries, we ignore it if not
    address: bytes  # exactly ceil(source / 8) bytes, as sent

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The client's prefix, or None for SOURCE 0 (the client asked not to be located)."""
        if self.source == 0:
            return None
        width = FAMILY_BITS[self.family] // 8
        packed = self.address + bytes(width - len(self.address))
        addr = ipaddress.ip_address(packed)
        return ipaddress.ip_network((addr, self.source))

    def to_wire(self) -> bytes:
        return _HEAD.pack(self.family, self.source, self.scope) + self.address


def parse_ecs(data: bytes | dns.edns.Option) -> ClientSubnet:
    """Validate an ECS option's data (raw bytes, or a dnspython option we re-render).

    Raises EcsError for: option shorter than its fixed part, an unknown FAMILY, SOURCE longer
    than the family's address, ADDRESS of the wrong length for SOURCE (RFC 7871 asks for
    exactly ceil(SOURCE/8) octets), or non-zero bits past SOURCE.
    """
    if isinstance(data, dns.edns.Option):
        data = data.to_wire() or b""
    if len(data) < 4:
        raise EcsError("ECS option shorter than 4 octets")
    family, source, scope = _HEAD.unpack_from(data)
    bits = FAMILY_BITS.get(family)
    if bits is None:
        raise EcsError(f"ECS family {family} unknown")
    if source > bits:
        raise EcsError(f"ECS source prefix {source} longer than {bits}")
    address = bytes(data[4:])
    need = (source + 7) // 8
    if len(address) != need:
        raise EcsError(f"ECS address has {len(address)} octets, source {source} needs {need}")
    if need and source % 8:
        if address[-1] & (0xFF >> (source % 8)):
            raise EcsError("ECS address has bits set past the source prefix")
    return ClientSubnet(family, source, scope, address)


def cap_scope(ecs: ClientSubnet, scope: int) -> int:
    """Clamp SCOPE to the family's width (a longer value is meaningless on the wire)."""
    return max(0, min(scope, FAMILY_BITS[ecs.family]))


def reply_option(ecs: ClientSubnet | None, scope: int) -> bytes | None:
    """The ECS option data for the reply: FAMILY, SOURCE and ADDRESS echoed, SCOPE set.

    None when the query carried no ECS (RFC 7871 7.2.2: never add ECS to such a reply).
    SOURCE 0 always gets SCOPE 0 (7.2.1): the answer cannot depend on a hidden client.
    """
    if ecs is None:
        return None
    if ecs.source == 0:
        scope = 0
    return _HEAD.pack(ecs.family, ecs.source, cap_scope(ecs, scope)) + ecs.address


def reply_dns_option(ecs: ClientSubnet | None, scope: int) -> dns.edns.Option | None:
    """``reply_option`` as a dnspython option, for rendering with dns.message."""
    data = reply_option(ecs, scope)
    return None if data is None else dns.edns.GenericOption(ECS_CODE, data)
