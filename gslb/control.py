"""A tiny JSON-over-HTTP control channel for experiments (loopback by default).

  GET  /state                      -> policy, ttl_s, version, each DC's state, every
                                      service name's policy and TTL, which (service, DC)
                                      pairs are full, and the full state's transitions
  POST /policy  {"policy": "capacity", "overload": "shed"}   (either or both)
  POST /policy  {"service": "upload", "policy": "spare"}     (one service name's policy,
                 and optionally "load_key": the class it is judged by, "*" the whole DC)
  POST /ttl     {"ttl_s": 5}
  POST /dc/NAME {"healthy": false} and/or {"load": 123.0} and/or
                {"load_by_service": {"search": 80.0}}  (a traffic class's load) and/or
                {"wan": {"na": 0.85}}  (how full the WAN link from a region is, 0..1+)

A bad request gets a 400 JSON error and changes nothing: every field is validated before
any is applied. One request per connection (``Connection: close``) keeps the parser tiny;
``curl`` and ``urllib`` both speak it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from gslb.config import GslbConfigError

if TYPE_CHECKING:
    from gslb.server import GslbServer

DEFAULT_CONTROL_PORT = 8053   # `lblab dns serve` and the authority inside its host
MAX_BODY = 64 * 1024
MAX_HEADERS = 100
IO_TIMEOUT_S = 5.0


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def state(server: GslbServer) -> dict[str, Any]:
    cfg = server.authority.base_config.replace(**server.view.overrides())
    records = server.view.records()
    full, admit = server.view.full(), server.view.admit()
    return {
        "zone": cfg.zone, "policy": cfg.policy, "ttl_s": cfg.ttl_s,
        "version": server.view.version,
        "dcs": {d.name: {"vip": str(d.vip), "capacity_rps": d.capacity_rps,
                         "healthy": records[d.name].state.healthy,
                         "load": records[d.name].state.load,
                         "load_by_service": dict(records[d.name].state.by_service),
                         "wan_used": dict(records[d.name].state.wan)}
                for d in cfg.dcs},
        "services": {cfg.service_dns_name(v).to_text(omit_final_dot=True): {
            "policy": v.policy, "ttl_s": v.ttl_s, "capacity_share": v.capacity_share,
            "max_distance_ms": v.max_distance_ms, "load_key": v.key,
            "full": sorted(dc for svc, dc in full if svc == v.name),
            # the capacity policy's admitted share per DC (the rest spills onward)
            "admit": {dc: round(f, 3) for (svc, dc), f in (admit or {}).items()
                      if svc == v.name}}
            for v in cfg.all_services()},
        "overload": cfg.overload, "hysteresis": cfg.hysteresis,  # overload: run-time too
        # (epoch s, service, dc, full): a DC leaving (true) or rejoining a service's answers
        "transitions": [[round(t, 3), svc, dc, now_full]
                        for t, svc, dc, now_full in server.view.transitions()],
    }


def _rate(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value) and value >= 0


def _object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(400, f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRequest(400, "body must be a JSON object")
    return obj


def _only(obj: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise BadRequest(400, f"unknown field {extra[0]!r}")
    if not obj:
        raise BadRequest(400, f"expected one of {sorted(allowed)}")


def _set_config(server: GslbServer, changes: dict[str, Any]) -> None:
    """Validate one request's config changes together, with the config's own rules and
    against the other overrides, then apply them at once (or raise, changing nothing)."""
    try:
        server.authority.base_config.replace(**{**server.view.overrides(), **changes})
    except (GslbConfigError, TypeError) as exc:
        raise BadRequest(400, str(exc)) from None
    server.view.set_overrides(**changes)


def _service_policy(server: GslbServer, obj: dict[str, Any]) -> dict[str, Any]:
    """{"service": NAME, "policy": P[, "load_key": K][, "overload": O]} -> the config
    changes: the named service's policy (and load key) replaced (the zone's own name: the
    config's policy)."""
    cfg = server.authority.base_config.replace(**server.view.overrides())
    name = obj.pop("service")
    if "policy" not in obj:
        raise BadRequest(400, "a service's change needs its policy")
    for svc in cfg.all_services():
        if isinstance(name, str) and name.rstrip(".") in (
                svc.name, cfg.service_dns_name(svc).to_text(omit_final_dot=True)):
            break
    else:
        raise BadRequest(404, f"unknown service {name!r}")
    if svc == cfg.primary:
        if "load_key" in obj:
            raise BadRequest(400, f"load_key: {cfg.service} is judged by the DC's whole load")
        return obj
    policy, change = obj.pop("policy"), {}
    if not isinstance(policy, str):
        raise BadRequest(400, "policy must be a string")
    if "load_key" in obj:
        key = obj.pop("load_key")
        if not (isinstance(key, str) and key) and key is not None:
            raise BadRequest(400, "load_key must be a class name, \"*\" or null")
        change["load_key"] = key
    services = tuple(dataclasses.replace(v, policy=policy, **change) if v == svc else v
                     for v in cfg.services)
    return {**obj, "services": services}


def dispatch(server: GslbServer, method: str, path: str, body: bytes) -> dict[str, Any]:
    """Apply one request; raise BadRequest without side effects when anything is wrong."""
    if path == "/state":
        if method != "GET":
            raise BadRequest(405, "use GET")
        return state(server)
    if method != "POST":
        raise BadRequest(405 if path in ("/policy", "/ttl") or path.startswith("/dc/")
                         else 404, f"no {method} {path}")
    if path == "/policy":
        obj = _object(body)
        _only(obj, {"policy", "overload", "service", "load_key"})
        if "load_key" in obj and "service" not in obj:
            raise BadRequest(400, "load_key applies to a service: give its name")
        if "service" in obj:
            obj = _service_policy(server, obj)
        _set_config(server, obj)
    elif path == "/ttl":
        obj = _object(body)
        _only(obj, {"ttl_s"})
        _set_config(server, {"ttl_s": obj["ttl_s"]})
    elif path.startswith("/dc/"):
        name = path[len("/dc/"):]
        if name not in server.view.names():
            raise BadRequest(404, f"unknown dc {name!r}")
        obj = _object(body)
        _only(obj, {"healthy", "load", "load_by_service", "wan"})
        if "healthy" in obj and not isinstance(obj["healthy"], bool):
            raise BadRequest(400, "healthy must be true or false")
        if "load" in obj and not _rate(obj["load"]):
            raise BadRequest(400, "load must be a number >= 0")
        classes = obj.get("load_by_service")
        if "load_by_service" in obj and not (
                isinstance(classes, dict) and all(isinstance(k, str) and _rate(v)
                                                  for k, v in classes.items())):
            raise BadRequest(400, "load_by_service must map class names to numbers >= 0")
        wan = obj.get("wan")
        regions = {r.name for r in server.authority.base_config.regions}
        if "wan" in obj and not (isinstance(wan, dict) and all(
                k in regions and _rate(v) for k, v in wan.items())):
            raise BadRequest(400, "wan must map region names to numbers >= 0 (a link's "
                             "carried share of its bandwidth)")
        if "healthy" in obj:
            server.view.set_health(name, obj["healthy"])
        if "load" in obj or classes is not None or wan is not None:
            state_now = server.view.snapshot()[name]   # a partial update: merge classes
            server.view.set_load(name, float(obj.get("load", state_now.load)),
                                 by_service=None if classes is None else
                                 {**dict(state_now.by_service), **classes},
                                 wan=None if wan is None else {**dict(state_now.wan), **wan})
    else:
        raise BadRequest(404, f"no such path {path}")
    return state(server)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    line = (await reader.readline()).decode("latin-1").strip()
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(400, "bad request line")
    length = 0
    for _ in range(MAX_HEADERS):
        header = (await reader.readline()).decode("latin-1").strip()
        if not header:
            break
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise BadRequest(400, "bad Content-Length") from None
    else:
        raise BadRequest(400, "too many headers")
    if not 0 <= length <= MAX_BODY:
        raise BadRequest(400, "body too large")
    body = await reader.readexactly(length) if length else b""
    return parts[0].upper(), parts[1].split("?", 1)[0], body


async def start_control(server: GslbServer, host: str, port: int
                        ) -> tuple[tuple[str, int], Any]:
    """Listen on host:port (give loopback or a test host's address, never 0.0.0.0)."""
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, path, body = await asyncio.wait_for(_read_request(reader), IO_TIMEOUT_S)
                status, payload = 200, dispatch(server, method, path, body)
            except BadRequest as exc:
                status, payload = exc.status, {"error": str(exc)}
            data = json.dumps(payload, sort_keys=True).encode() + b"\n"
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found",
                      405: "Method Not Allowed"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                         + data)
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT_S)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError,
                ValueError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(client, host, port)
    return srv.sockets[0].getsockname()[:2], srv.close
