"""Minimal HTTP/1.1 client pieces shared by the search and upload workloads.

Hand-rolled over sockets on purpose: each request opens its own TCP connection (so every
request is a new flow for the load balancer), and the timings are ours, not a library's.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass


@dataclass
class Reply:
    ok: bool
    status: int
    backend: str
    dc: str
    body_bytes: int
    latency_ms: float
    error: str


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"bad status line {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def read_reply(sock: socket.socket, deadline: float) -> tuple[int, dict, int]:
    """Read one reply: (status, headers, body length). Honors Content-Length or EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the reply header")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status, headers = parse_head(head)
    body = len(rest)
    want = int(headers["content-length"]) if "content-length" in headers else None
    while want is None or body < want:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            if want is None:
                break
            raise ConnectionError(f"reply cut short at {body}/{want} bytes")
        body += len(chunk)
    return status, headers, body


def error_name(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    return type(exc).__name__
