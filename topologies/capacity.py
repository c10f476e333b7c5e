"""What one backend can serve: its share of the DC's capacity, and what it does beyond it.

A DC's `capacity_rps` (topologies/scenario.py) is split evenly over its backends; with
`overload: none` (the default) the backends never refuse work, as before. Otherwise each
backend admits requests (to /search and /upload; health checks and /stats are never
limited) by nginx's leaky bucket (ngx_http_limit_req_module), which the Python server
mirrors with LeakyBucket below:

- `shed`: up to the backend's rate, plus a burst admitted at once (Poisson arrivals
  bunch): MIN_BURST requests, or JITTER_S worth of the rate where that is more; the rest
  answered 503 with `Retry-After` at once. A leaky bucket fed by Poisson arrivals refuses
  a share that depends only on its burst and the load (it is an M/D/1 queue of that
  length): with 8, under 1% at 80% of the rate, about 2% at 90%, 5-6% at 100% (simulated
  with LeakyBucket; with a burst of 1, which 0.1 s of a backend's 7.5 requests/s gave
  before, 13% were refused at 60% of the rate);
- `queue`: the burst admitted at once, then up to `overload_queue_s` worth of requests
  delayed so that they leave at the rate (latency grows), the rest answered 503;
- `max_concurrent` (either mode): requests in progress beyond it answered 503 at once.

Pure: the limit is data; lab/nginx.py renders it, experiments/workloads/httpserver.py
applies it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

OVERLOADS = ("none", "shed", "queue")
JITTER_S = 0.1        # burst admitted at once: this many seconds of the rate,
MIN_BURST = 8         # and at least this many requests
RETRY_AFTER_S = 1     # what a 503 tells the client


@dataclass(frozen=True)
class BackendLimit:
    rate_rps: float                  # this backend's share of the DC's capacity
    burst: int                       # requests over the rate admitted at once
    queue: int                       # requests over the burst delayed (queue) or 0 (shed)
    max_concurrent: int | None = None
    retry_after_s: int = RETRY_AFTER_S

    @property
    def mode(self) -> str:
        return "queue" if self.queue else "shed"

    def argv(self) -> list[str]:
        """The Python server's options for this limit."""
        out = ["--limit-rps", f"{self.rate_rps:g}", "--limit-burst", str(self.burst),
               "--limit-queue", str(self.queue)]
        if self.max_concurrent:
            out += ["--limit-concurrent", str(self.max_concurrent)]
        return out


def backend_limit(dc) -> BackendLimit | None:
    """The limit of each of a DC's backends (scenario DataCenter), None without one."""
    if getattr(dc, "overload", "none") == "none":
        return None
    rate = dc.capacity_rps / dc.backends
    burst = max(MIN_BURST, math.ceil(rate * JITTER_S))
    queue = math.ceil(rate * dc.overload_queue_s) if dc.overload == "queue" else 0
    return BackendLimit(rate, burst, queue, dc.max_concurrent)


class LeakyBucket:
    """nginx's limit_req for one key: each request adds 1 to `excess`, which drains at
    `rate` per second; a request that would take excess above burst + queue is refused
    (None); one within the burst goes at once (0.0); one beyond waits (excess - burst) /
    rate seconds, so the queued ones leave at the rate."""

    def __init__(self, rate: float, burst: int, queue: int = 0):
        if rate <= 0 or burst < 0 or queue < 0:
            raise ValueError("a leaky bucket needs rate > 0, burst >= 0, queue >= 0")
        self.rate, self.burst, self.queue = rate, burst, queue
        self.excess = 0.0
        self.last: float | None = None

    def admit(self, now: float) -> float | None:
        """Seconds to wait before serving a request arriving at `now`, or None: refuse."""
        excess = 0.0 if self.last is None else max(
            0.0, self.excess - self.rate * (now - self.last) + 1)
        if excess > self.burst + self.queue:
            return None
        self.excess, self.last = excess, now
        return 0.0 if excess <= self.burst else (excess - self.burst) / self.rate
