"""REST request handling for the VIP app, as pure functions over the app's state.

The Ryu wsgi glue (vipapp.py) routes requests to a VipSwitch, which calls these. Every bad
request (unknown VIP, bad address, bad JSON, unknown mode...) raises `BadRequest`, answered
with HTTP 400 and a JSON error, and changes nothing: a new state is computed and validated
(vipmodel.validate) before it replaces the old one. `sw` below is the switch's
controller.vipconfig.SwitchConfig.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

from controller import hashing, vipmodel
from controller.vipmodel import ALGORITHMS, MODES, Backend, Vip, VipError


class BadRequest(ValueError):
    pass


def parse_body(body: bytes) -> dict:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"bad JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def find_vip(switches: dict, vip_key: str) -> tuple[Any, Vip]:
    """A VIP by name or address, with its switch (anything with a `vips` dict)."""
    for sw in switches.values():
        for vip in sw.vips.values():
            if vip_key in (vip.name, vip.address):
                return sw, vip
    raise BadRequest(f"unknown VIP {vip_key!r}")


def find_tier(switches: dict, vip_key: str) -> list[tuple[Any, Vip]]:
    """Every switch serving a VIP (by name or address), with its VIP: one for a DC with one
    LB, K for a DC with an LB tier (all share the VIP's name and address)."""
    sw, vip = find_vip(switches, vip_key)
    return [(other, other.vips[vip.name]) for other in switches.values()
            if other.dc == sw.dc and vip.name in other.vips]


def _address(text: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(str(text)))
    except ValueError:
        raise BadRequest(f"bad IPv4 address {text!r}") from None


def _backend(vip: Vip, key: str) -> Backend:
    """A backend of the VIP by name or by address."""
    for b in vip.backends:
        if b.name == key:
            return b
    ip = _address(key)
    for b in vip.backends:
        if b.ip == ip:
            return b
    raise BadRequest(f"VIP {vip.name}: no backend {key!r}")


def change_vip(sw, vip: Vip, body: dict) -> Vip:
    allowed = set(vipmodel.SETTINGS)
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(allowed))})")
    changes: dict[str, Any] = {}
    if "mode" in body:
        if body["mode"] not in MODES:
            raise BadRequest(f"unknown mode {body['mode']!r} (one of {', '.join(MODES)})")
        changes["mode"] = body["mode"]
    if "algorithm" in body:
        if body["algorithm"] not in ALGORITHMS:
            raise BadRequest(f"unknown algorithm {body['algorithm']!r} "
                             f"(one of {', '.join(ALGORITHMS)})")
        changes["algorithm"] = body["algorithm"]
    for key, choices in (("conntrack_impl", vipmodel.CONNTRACK_IMPLS),
                         ("hash_impl", vipmodel.HASH_IMPLS)):
        if key in body:
            if body[key] not in choices:
                raise BadRequest(f"unknown {key} {body[key]!r} (one of {', '.join(choices)})")
            changes[key] = body[key]
    for flag in ("conntrack", "reactive"):
        if flag in body:
            if not isinstance(body[flag], bool):
                raise BadRequest(f"{flag} must be true or false")
            changes[flag] = body[flag]
    if "table_size" in body:
        if body["table_size"] is not None and (not isinstance(body["table_size"], int)
                                               or isinstance(body["table_size"], bool)):
            raise BadRequest("table_size must be an integer or null")
        changes["table_size"] = body["table_size"]
    return dataclasses.replace(vip, **changes)


def add_backend(sw, vip: Vip, body: dict) -> Vip:
    unknown = set(body) - {"ip", "weight"}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r} (allowed: ip, weight)")
    if "ip" not in body:
        raise BadRequest("missing field 'ip'")
    ip = _address(body["ip"])
    weight = body.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
            or not 0 < weight < float("inf"):
        raise BadRequest(f"weight must be a finite positive number, got {weight!r}")
    if any(b.ip == ip for b in vip.backends):
        raise BadRequest(f"VIP {vip.name}: {ip} is already a backend")
    host = sw.hosts.get(ip)
    if host is None and vip.mode != "gre":
        raise BadRequest(f"{ip} is not a host on {vip.name}'s LB switch (mode {vip.mode} "
                         "needs the backend on the switch's L2 segment)")
    new = Backend(name=host["name"] if host else ip, ip=ip, mac=host and host["mac"],
                  switch_port=host and host["port"], weight=float(weight))
    return dataclasses.replace(vip, backends=vip.backends + (new,))


def remove_backend(vip: Vip, ip_text: str) -> Vip:
    gone = _backend(vip, ip_text)
    return dataclasses.replace(vip, backends=tuple(b for b in vip.backends if b is not gone))


def set_admin(vip: Vip, ip_text: str, admin: str) -> Vip:
    """Admin state up|drain; health may still hold the backend down."""
    target = _backend(vip, ip_text)
    return dataclasses.replace(vip, backends=tuple(
        dataclasses.replace(b, state=admin) if b is target else b for b in vip.backends))


def checked(sw, vips: dict[str, Vip]) -> None:
    try:
        vipmodel.validate(sw.lb, list(vips.values()))
    except VipError as exc:
        raise BadRequest(str(exc)) from None


def describe(vip: Vip, health: dict[str, str], stats: dict, loads: dict[str, int]) -> dict:
    table = vipmodel.assignment(effective(vip, health), loads)
    shares = {}
    if table:
        for b in table:
            shares[b.name] = shares.get(b.name, 0) + 1
        shares = {k: round(v / len(table), 4) for k, v in shares.items()}
    return {
        "name": vip.name, "address": vip.address, "mac": vip.mac, "mode": vip.mode,
        "algorithm": vip.algorithm, "conntrack": vip.conntrack, "reactive": vip.reactive,
        "conntrack_impl": vip.conntrack_impl, "hash_impl": vip.hash_impl,
        "connection_table": ("conntrack" if vipmodel.uses_ct(vip) else
                             "learned flows" if vip.conntrack or vip.reactive else "none"),
        "table_size": len(table),
        # entries of the switch's bucket table: table_size, or dp_hash's power of two
        "bucket_entries": hashing.hash_entries(len(table), vip.hash_impl) if table else 0,
        "backends": [{"name": b.name, "ip": b.ip, "weight": b.weight, "admin": b.state,
                      "health": health.get(b.ip, "up"),
                      "state": effective_state(b, health),
                      "active_connections": stats.get(b.name, {}).get("connections"),
                      "bytes": stats.get(b.name, {}).get("bytes"),
                      "table_share": shares.get(b.name, 0.0)} for b in vip.backends],
    }


def effective_state(b: Backend, health: dict[str, str]) -> str:
    if health.get(b.ip) == "down":
        return "down"
    return b.state


def effective(vip: Vip, health: dict[str, str]) -> Vip:
    """The VIP as the flows see it: admin state combined with health."""
    return dataclasses.replace(vip, backends=tuple(
        dataclasses.replace(b, state=effective_state(b, health)) for b in vip.backends))
