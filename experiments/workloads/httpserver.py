"""Backend HTTP server run inside a Mininet backend host.

Every reply names its backend and DC (headers X-Backend and X-DC, and the first body line)
and the client address it saw (X-Client), so a client can tell which backend a VIP sent it
to, and as whom, without any other instrumentation.
Endpoints: GET /search?size=N (N bytes), POST /upload (reads the whole body, acknowledges
the byte count), GET /stream?seconds=S (a long-lived connection that trickles data),
GET /health, GET /stats (connections, requests, bytes_in, served, shed, and by_path: the
requests to /search and /upload whatever their answer, as JSON).
With --limit-rps (topologies/capacity.py, as nginx's limit_req): /search and /upload go
through a leaky bucket (--limit-burst at once, then up to --limit-queue delayed to the
rate) and at most --limit-concurrent at a time; a refused request gets 503 with Retry-After.

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

from topologies.capacity import RETRY_AFTER_S, LeakyBucket

MAX_SEARCH_BYTES = 10_000_000
CHUNK = 65536


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.active = 0
        self.requests = 0
        self.bytes_in = 0
        self.served = 0
        self.shed = 0
        self.by_path = {"search": 0, "upload": 0}

    def add(self, **deltas):
        with self.lock:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict:
        with self.lock:
            return {"connections": self.connections, "active": self.active,
                    "requests": self.requests, "bytes_in": self.bytes_in,
                    "served": self.served, "shed": self.shed, "by_path": dict(self.by_path)}

    def count_path(self, name: str) -> None:
        with self.lock:
            self.by_path[name] += 1


class Limit:
    """The backend's capacity limit: a leaky bucket and a cap on requests in progress."""

    def __init__(self, rate: float, burst: int, queue: int, concurrent: int | None):
        self.lock = threading.Lock()
        self.bucket = LeakyBucket(rate, burst, queue)
        self.slots = threading.BoundedSemaphore(concurrent) if concurrent else None

    def enter(self) -> bool:
        """Admit one request (waiting its turn when queued), or False: refuse it."""
        with self.lock:
            wait = self.bucket.admit(time.monotonic())
        if wait is None:
            return False
        if wait > 0:
            time.sleep(wait)
        return self.slots is None or self.slots.acquire(blocking=False)

    def leave(self) -> None:
        if self.slots is not None:
            self.slots.release()


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

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("X-Backend", self.server.backend_id)
        self.send_header("X-DC", self.server.dc)
        self.send_header("X-Client", self.client_address[0])
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _ident(self) -> bytes:
        return f"backend={self.server.backend_id} dc={self.server.dc}\n".encode()

    def _limited(self, serve) -> None:
        """serve() within the capacity limit, or 503 with Retry-After."""
        limit = self.server.limit
        if limit is not None and not limit.enter():
            self.server.counters.add(shed=1)
            # Connection: close (send_header then closes it): an upload's body is unread
            self._reply(503, b"overloaded\n", headers=(("Retry-After", str(RETRY_AFTER_S)),
                                                      ("Connection", "close")))
            return
        try:
            serve()
        finally:
            if limit is not None:
                limit.leave()

    def do_GET(self):
        self.server.counters.add(requests=1)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/search":
            self.server.counters.count_path("search")
            return self._limited(lambda: self._search(query))
        if url.path == "/health":
            return self._reply(200, b"ok\n")
        if url.path == "/stats":
            return self._reply(200, json.dumps(self.server.counters.snapshot()).encode(),
                               "application/json")
        if url.path == "/stream":
            return self._stream(query)
        return self._reply(404, b"not found\n")

    def _search(self, query) -> None:
        try:
            size = min(int(query.get("size", ["1024"])[0]), MAX_SEARCH_BYTES)
        except ValueError:
            return self._reply(400, b"bad size\n")
        head = self._ident()
        # counted before the reply goes out: a client that reads /stats right after its
        # reply must find it counted (the handler thread would race the next request)
        self.server.counters.add(served=1)
        self._reply(200, head + b"x" * max(0, size - len(head)))

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
        self.server.counters.count_path("upload")
        self._limited(self._upload)

    def _upload(self) -> None:
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
        self.server.counters.add(served=1)
        self._reply(200, self._ident() + f"received={received}\n".encode())


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
    parser.add_argument("--limit-rps", type=float, help="capacity: requests per second")
    parser.add_argument("--limit-burst", type=int, default=1, help="admitted at once")
    parser.add_argument("--limit-queue", type=int, default=0, help="delayed, beyond burst")
    parser.add_argument("--limit-concurrent", type=int, help="requests in progress")
    args = parser.parse_args(argv)
    if args.limit_rps is not None and (args.limit_rps <= 0 or args.limit_burst < 0
                                       or args.limit_queue < 0):
        parser.error("--limit-rps must be > 0, --limit-burst and --limit-queue >= 0")
    server = Server((args.bind, args.port), Handler)
    server.backend_id, server.dc, server.counters = args.backend, args.dc, Counters()
    server.limit = (Limit(args.limit_rps, args.limit_burst, args.limit_queue,
                          args.limit_concurrent) if args.limit_rps else None)
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
