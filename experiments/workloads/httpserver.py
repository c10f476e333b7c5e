"""Backend HTTP server run inside a Mininet backend host.

Every reply names its backend and DC (headers X-Backend and X-DC, and the first body line)
and the client address it saw (X-Client), so a client can tell which backend a VIP sent it
to, and as whom, without any other instrumentation.
Endpoints: GET /search?size=N (N bytes), POST /upload (reads the whole body, acknowledges
the byte count), GET /stream?seconds=S (a long-lived connection that trickles data),
GET /health, GET /stats (connections and requests served, as JSON).

Run: python -m experiments.workloads.httpserver --bind IP --port 80 --backend ID --dc DC
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MAX_SEARCH_BYTES = 10_000_000
CHUNK = 65536


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.active = 0
        self.requests = 0
        self.bytes_in = 0

    def add(self, **deltas):
        with self.lock:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict:
        with self.lock:
            return {"connections": self.connections, "active": self.active,
                    "requests": self.requests, "bytes_in": self.bytes_in}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lblab-backend/1"

    def setup(self):
        super().setup()
        self.server.counters.add(connections=1, active=1)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.counters.add(active=-1)

    def log_message(self, fmt, *args):  # quiet: thousands of requests per run
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("X-Backend", self.server.backend_id)
        self.send_header("X-DC", self.server.dc)
        self.send_header("X-Client", self.client_address[0])
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _ident(self) -> bytes:
        return f"backend={self.server.backend_id} dc={self.server.dc}\n".encode()

    def do_GET(self):
        self.server.counters.add(requests=1)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/search":
            try:
                size = min(int(query.get("size", ["1024"])[0]), MAX_SEARCH_BYTES)
            except ValueError:
                return self._reply(400, b"bad size\n")
            head = self._ident()
            return self._reply(200, head + b"x" * max(0, size - len(head)))
        if url.path == "/health":
            return self._reply(200, b"ok\n")
        if url.path == "/stats":
            return self._reply(200, json.dumps(self.server.counters.snapshot()).encode(),
                               "application/json")
        if url.path == "/stream":
            return self._stream(query)
        return self._reply(404, b"not found\n")

    def _stream(self, query) -> None:
        """A long-lived connection: a line every `interval` seconds for `seconds`."""
        try:
            seconds = float(query.get("seconds", ["10"])[0])
            interval = float(query.get("interval", ["0.1"])[0])
        except ValueError:
            return self._reply(400, b"bad parameters\n")
        self.send_response(200)
        self.send_header("X-Backend", self.server.backend_id)
        self.send_header("X-DC", self.server.dc)
        self.send_header("X-Client", self.client_address[0])
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self._ident())
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            time.sleep(interval)
            n += 1
            self.wfile.write(f"tick {n}\n".encode())
            self.wfile.flush()
        self.close_connection = True

    def do_POST(self):
        self.server.counters.add(requests=1)
        if urlparse(self.path).path != "/upload":
            return self._reply(404, b"not found\n")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._reply(411, b"Content-Length required\n")
        received = 0
        while received < length:
            chunk = self.rfile.read(min(CHUNK, length - received))
            if not chunk:
                break
            received += len(chunk)
        self.server.counters.add(bytes_in=received)
        if received != length:
            self.close_connection = True
            return
        return self._reply(200, self._ident() + f"received={received}\n".encode())


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="0.0.0.0",
                        help="address inside the backend's own namespace")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--dc", required=True)
    args = parser.parse_args(argv)
    server = Server((args.bind, args.port), Handler)
    server.backend_id, server.dc, server.counters = args.backend, args.dc, Counters()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on {args.bind}:{args.port} as {args.backend} ({args.dc})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
