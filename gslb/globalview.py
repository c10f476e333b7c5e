"""The global view: each DC's health and load, shared by the authority and its updaters.

Writers (the VIP controller's feed, the built-in prober, the control channel, experiments)
may run in other threads; the authority reads on every query. So writes take a lock and bump
``version``; the authority compares one int per query and takes a ``snapshot()`` (an
immutable dict copy) only when it changed.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gslb.policy import DcState

log = logging.getLogger("lblab.gslb")


@dataclass(frozen=True, slots=True)
class DcRecord:
    """DcState plus when each part was last set (monotonic seconds), for /state and debugging."""

    state: DcState
    health_at: float | None = None
    load_at: float | None = None


class GlobalView:
    """Thread-safe map dc name -> DcState, plus run-time config overrides, with a change counter.

    Overrides (policy, TTL) live here too so that one counter tells the authority that any
    input of its answers changed, whichever thread changed it. Which (service, DC) pairs are
    full is kept here as well, by a rule the authority gives (``track_full``: capacity with
    hysteresis, gslb/policy.py), re-evaluated on every change of state, not only when a
    query comes; every transition is kept with its time (the answers' flaps).
    """

    MAX_TRANSITIONS = 1000

    def __init__(self, dc_names: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, DcRecord] = {n: DcRecord(DcState()) for n in dc_names}
        self._snapshot: Mapping[str, DcState] = self._freeze()
        self._overrides: dict[str, object] = {}
        self._full_rule = None
        self._full: frozenset = frozenset()
        self._admit_rule = None
        self._admit: dict | None = None
        self._admit_at = 0.0
        self._transitions: list[tuple[float, str, str, bool]] = []
        self.version = 0  # read without the lock: an int attribute read is atomic in CPython

    def _freeze(self) -> Mapping[str, DcState]:
        return MappingProxyType({n: r.state for n, r in self._records.items()})

    def _check(self, dc: str) -> DcRecord:
        try:
            return self._records[dc]
        except KeyError:
            raise KeyError(f"unknown dc {dc!r}") from None

    def set_health(self, dc: str, ok: bool, now: float | None = None) -> bool:
        """Record health; returns True when it changed (callers log transitions)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            rec = self._check(dc)
            changed = rec.state.healthy != bool(ok)
            self._records[dc] = DcRecord(dataclasses.replace(rec.state, healthy=bool(ok)),
                                         now, rec.load_at)
            if changed:
                self._publish(now)
        return changed

    def set_load(self, dc: str, value: float, now: float | None = None,
                 by_service: Mapping[str, float] | None = None,
                 wan: Mapping[str, float] | None = None) -> None:
        """Record load (requests/s, the unit of capacity_rps), and per service class
        (ServiceInfo.key -> requests/s) and the WAN links' use (region -> carried /
        bandwidth) where known (None keeps what was known)."""
        for v in [value, *(by_service or {}).values(), *(wan or {}).values()]:
            if isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or not math.isfinite(v) or v < 0:
                raise ValueError(f"load must be a finite number >= 0, got {v!r}")
        now = time.monotonic() if now is None else now
        with self._lock:
            rec = self._check(dc)
            classes = rec.state.by_service if by_service is None else tuple(
                sorted((str(k), float(v)) for k, v in by_service.items()))
            links = rec.state.wan if wan is None else tuple(
                sorted((str(k), float(v)) for k, v in wan.items()))
            state = DcState(rec.state.healthy, float(value), classes, links)
            changed = rec.state != state
            self._records[dc] = DcRecord(state, rec.health_at, now)
            if changed:
                self._publish(now)

    def track_full(self, rule) -> None:
        """rule(snapshot, full before) -> full now (a frozenset of (service, dc))."""
        with self._lock:
            self._full_rule = rule
            self._publish(time.monotonic())

    def track_admit(self, rule) -> None:
        """rule(snapshot, shares before, seconds since) -> shares now (the capacity
        policy's memory, gslb/policy.py update_admit), integrated on every change."""
        with self._lock:
            self._admit_rule = rule
            self._admit, self._admit_at = None, time.monotonic()
            self._publish(self._admit_at)

    def admit(self) -> dict | None:
        with self._lock:
            return self._admit

    def full(self) -> frozenset:
        with self._lock:
            return self._full

    def transitions(self) -> list[tuple[float, str, str, bool]]:
        """(wall-clock time, service, dc, now full) of every change of a full state."""
        with self._lock:
            return list(self._transitions)

    def set_overrides(self, **settings: object) -> None:
        """Run-time config changes (policy, ttl_s); the caller validates them first."""
        with self._lock:
            self._overrides.update(settings)
            self._publish(time.monotonic())

    def overrides(self) -> dict[str, object]:
        with self._lock:
            return dict(self._overrides)

    def _publish(self, now: float) -> None:
        self._snapshot = self._freeze()
        if self._full_rule is not None:
            full = self._full_rule(self._snapshot, self._full)
            wall = time.time()
            for service, dc in sorted(full ^ self._full):
                self._transitions.append((wall, service, dc, (service, dc) in full))
            del self._transitions[:-self.MAX_TRANSITIONS]
            self._full = full
        if self._admit_rule is not None:
            # its own clock: callers may pass their own `now` (tests give small numbers)
            at = time.monotonic()
            self._admit = self._admit_rule(self._snapshot, self._admit, at - self._admit_at)
            self._admit_at = at
        self.version += 1

    def snapshot(self) -> Mapping[str, DcState]:
        """An immutable view of every DC's state at one instant."""
        with self._lock:
            return self._snapshot

    def records(self) -> dict[str, DcRecord]:
        with self._lock:
            return dict(self._records)

    def names(self) -> list[str]:
        return list(self._records)


async def tcp_probe(host: str, port: int, timeout_s: float) -> bool:
    """True when a TCP connection to host:port completes within timeout_s."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    except (OSError, asyncio.TimeoutError):
        pass
    return True


# The design target: a DC that fails its probe (or exceeds its capacity) leaves the answers
# within this many seconds (experiment dns-failover measures it).
DETECT_TARGET_S = 2.0


class Prober:
    """TCP-connect health probes of each DC, marking it down after ``fall`` failures in a row.

    Defaults (0.5 s interval, 0.4 s timeout, fall 2) take a dead DC out of answers within
    about 1.5 s, inside DETECT_TARGET_S; ``rise`` successes bring it back, so a flapping
    backend does not oscillate every probe. It writes only on transitions, so a manual
    override through the control channel stands until the probes disagree twice in a row.
    """

    def __init__(self, view: GlobalView, targets: Mapping[str, tuple[str, int]],
                 interval_s: float = 0.5, timeout_s: float = 0.4,
                 fall: int = 2, rise: int = 2) -> None:
        if fall < 1 or rise < 1 or interval_s <= 0 or timeout_s <= 0:
            raise ValueError("prober needs interval_s, timeout_s > 0 and fall, rise >= 1")
        unknown = set(targets) - set(view.names())
        if unknown:
            raise KeyError(f"probe target for unknown dc {sorted(unknown)[0]!r}")
        self.view, self.targets = view, dict(targets)
        self.interval_s, self.timeout_s, self.fall, self.rise = interval_s, timeout_s, fall, rise
        self._streak: dict[str, int] = {n: 0 for n in targets}  # >0 successes, <0 failures

    def observe(self, dc: str, ok: bool, now: float) -> None:
        """Fold one probe result in (pure bookkeeping; exposed for tests)."""
        s = self._streak[dc]
        s = (max(s, 0) + 1) if ok else (min(s, 0) - 1)
        self._streak[dc] = s
        healthy = self.view.snapshot()[dc].healthy
        if healthy and s <= -self.fall or not healthy and s >= self.rise:
            if self.view.set_health(dc, ok, now):
                log.info("gslb: probe marks %s %s", dc, "up" if ok else "down")

    async def run(self) -> None:
        """Probe all targets concurrently every interval until cancelled."""
        names = list(self.targets)
        while True:
            started = time.monotonic()
            results = await asyncio.gather(*(tcp_probe(*self.targets[n], self.timeout_s)
                                             for n in names))
            now = time.monotonic()
            for name, ok in zip(names, results):
                self.observe(name, ok, now)
            await asyncio.sleep(max(0.0, self.interval_s - (now - started)))
