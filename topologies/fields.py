"""Reading one mapping of a scenario file into typed values, with the one-line errors every
key gets (`three-dc.yaml: links[2].b: unknown site 'ap2' ...`): the `Fields` reader and the
value converters it applies (`as_number`, `as_subnet`, ...). Pure; topologies/scenario.py
says which keys a scenario has.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from topologies.system import InputError


class ScenarioError(InputError):
    """A scenario file is wrong: one line, file + field + problem, exit code 2."""


class Fields:
    """Reads one mapping of a scenario, tracking the field path for error messages."""

    def __init__(self, source: str, path: str, data: Any, allowed: set[str]):
        self.source, self.path = source, path
        if not isinstance(data, dict):
            self.fail(f"expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - allowed)
        if unknown:
            self.fail(f"unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})",
                      sub=unknown[0])
        self.data = data

    def fail(self, problem: str, sub: str | None = None):
        where = f"{self.path}.{sub}" if sub and self.path else (sub or self.path or "top level")
        raise ScenarioError(f"{self.source}: {where}: {problem}")

    def get(self, key: str, kind, default: Any = ...):
        if key not in self.data:
            if default is ...:
                self.fail("missing required key", sub=key)
            return default
        value = self.data[key]
        try:
            return kind(value)
        except (TypeError, ValueError) as exc:
            self.fail(f"{describe(exc, value)}", sub=key)

    def number(self, key: str, default: Any = ..., minimum: float = 0.0,
               maximum: float | None = None) -> float:
        value = self.get(key, as_number, default)
        if value is None:
            return value
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum:g} and {maximum:g}" if maximum is not None \
                else f">= {minimum:g}"
            self.fail(f"must be {bound}, got {value:g}", sub=key)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            self.fail(f"'{value}' is not one of {', '.join(choices)}", sub=key)
        return value


def as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def as_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


def as_boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def as_subnet(value: Any) -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise ValueError(f"expected an IPv4 subnet like 10.1.0.0/24, got {value!r}")
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"bad IPv4 subnet {value!r}: {exc}") from None
    if net.prefixlen > 26:
        raise ValueError(f"subnet {value} is too small (lblab needs /26 or larger)")
    return net


def as_address(value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"bad IPv4 address {value!r}") from None


def describe(exc: Exception, value: Any) -> str:
    return str(exc) or f"bad value {value!r}"


def as_subnet_any(value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except (ValueError, TypeError):
        raise ValueError(f"bad IPv4 subnet {value!r}") from None
