"""lblab's REST server for controller apps, the same under Ryu and os-ken.

os-ken 4 no longer ships a WSGI layer (`os_ken.app.wsgi`), and Ryu's depends on eventlet, so
the controller serves REST itself: a route table of (method, pattern, handler), routing as a
pure function (`dispatch`, unit-tested without a framework), and HTTP/1.0 parsed by the
standard library on connections accepted by `serve_forever` and handled in the framework's
`hub.spawn` (green threads under Ryu, native threads under os-ken). One request per connection; bodies are
capped; every answer is JSON.

Handlers take (params, body) and return data for a 200; `RestError` (and the app's own
bad-request exception, mapped by `bad_request`) gives a 4xx with {"error": ...}; anything
else a 500 naming only the exception's type, logged with its traceback.
"""
from __future__ import annotations

import functools
import http.server
import json
import logging
import re
import socket
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

MAX_BODY = 1 << 20
SOCKET_TIMEOUT_S = 30.0
LOG = logging.getLogger("lblab.rest")


class RestError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str                                  # "/vips/{vip}/backends/{backend}"
    handler: Callable[[dict, bytes], Any]

    @functools.cached_property
    def _regex(self) -> re.Pattern:
        return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)",
                                       re.escape(self.pattern)) + "$")

    def match(self, path: str) -> dict | None:
        m = self._regex.match(path)
        return m.groupdict() if m else None


def dispatch(routes: list[Route], method: str, path: str, body: bytes,
             bad_request: tuple = ()) -> tuple[int, dict, Any]:
    """(status, extra headers, JSON-able payload) for one request."""
    path = path.split("?", 1)[0].rstrip("/") or "/"
    matched = [(r, p) for r in routes if (p := r.match(path)) is not None]
    if not matched:
        return 404, {}, {"error": f"no such resource: {path}"}
    for route, params in matched:
        if route.method == method:
            try:
                return 200, {}, route.handler(params, body)
            except RestError as exc:
                return exc.status, exc.headers, {"error": str(exc)}
            except bad_request as exc:
                return 400, {}, {"error": str(exc)}
            except Exception as exc:  # a bug must not kill the controller
                LOG.exception("REST %s %s failed", method, path)
                return 500, {}, {"error": f"internal error: {type(exc).__name__}"}
    allowed = ", ".join(sorted({r.method for r, _ in matched}))
    return 405, {"Allow": allowed}, {"error": f"{method} not allowed on {path} "
                                              f"(allowed: {allowed})"}


def _json(payload, indent=None) -> bytes:
    return json.dumps(payload, indent=indent).encode() + b"\n"


def _handler_class(routes: list[Route], bad_request: tuple):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        server_version = "lblab-controller"

        def _serve(self):
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            oversize = not 0 <= length <= MAX_BODY
            if oversize:
                status, extra, payload = 400, {}, {
                    "error": f"bad Content-Length (at most {MAX_BODY} bytes)"}
            else:
                body = self.rfile.read(length) if length else b""
                status, extra, payload = dispatch(routes, self.command, self.path, body,
                                                  bad_request)
            try:
                data = _json(payload, indent=1)
            except (TypeError, ValueError) as exc:   # a handler returned something odd
                LOG.error("REST %s %s: answer not JSON: %s", self.command, self.path, exc)
                status, extra = 500, {}
                data = _json({"error": "internal error: answer not JSON"})
            self._send_json(status, data, extra)
            if oversize:   # the body is unread: closing now would reset, losing the answer
                self._drain()

        def _drain(self, cap: int = 4 * MAX_BODY):
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(1.0)
                while cap > 0 and (chunk := self.connection.recv(65536)):
                    cap -= len(chunk)
            except OSError:
                pass

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def send_error(self, code, message=None, explain=None):
            """Malformed requests (bad request line, unsupported method) in JSON too."""
            self._send_json(code, _json({"error": message or
                                         self.responses.get(code, ("",))[0]}),
                            body=self.command != "HEAD" and code >= 200)

        def _send_json(self, status: int, data: bytes, extra: dict | None = None,
                       body: bool = True):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, fmt, *args):
            LOG.debug("%s %s", self.address_string(), fmt % args)

    return Handler


def serve_forever(sock, handle, spawn, sleep) -> None:
    """Accept on a listening socket for ever, each connection handled in `spawn`ed
    (green) thread; an accept error (out of file descriptors, say) is logged and retried,
    where the frameworks' StreamServer would end for good."""
    while True:
        try:
            conn, addr = sock.accept()
        except OSError as exc:
            LOG.warning("REST accept failed: %s", exc)
            sleep(0.1)
            continue
        spawn(handle, conn, addr)


def connection_handler(routes: list[Route], bad_request: tuple = ()):
    """A `handle(sock, addr)` for serve_forever: one HTTP request, then close."""
    handler_class = _handler_class(routes, bad_request)

    def handle(sock, addr):
        try:
            sock.settimeout(SOCKET_TIMEOUT_S)
            handler_class(sock, addr, None)
        except OSError as exc:
            LOG.debug("REST connection from %s: %s", addr, exc)
        except Exception:  # never let one request end the serving thread unlogged
            LOG.exception("REST connection from %s", addr)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    return handle
