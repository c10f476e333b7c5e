"""Sample CPU idle while an experiment runs: an emulation on a saturated host lies.

On 2 cores the OVS userspace datapath, the controller, relays, servers and clients share the
CPU; while idle is below 20% the measured latencies include CPU queueing. A run is flagged
(`cpu_starved`) when that lasts more than 10% of its 1-second samples: a dip of a second or
two (a dozen Python workloads starting at once) is in every run and says nothing, so the
lowest sample alone would flag every run and the flag would mean nothing. Metadata keeps
`min_cpu_idle_pct`, `mean_cpu_idle_pct` and `cpu_starved_share_pct`.
"""
from __future__ import annotations

import threading

STARVED_BELOW_PCT = 20.0
STARVED_SHARE_PCT = 10.0   # share of samples below STARVED_BELOW_PCT that flags a run


def _read_stat() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return idle, sum(fields)


class CpuIdleSampler:
    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-idle", daemon=True)

    def __enter__(self) -> "CpuIdleSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        idle0, total0 = _read_stat()
        while not self._stop.wait(self.interval_s):
            idle1, total1 = _read_stat()
            if total1 > total0:
                self.samples.append(100.0 * (idle1 - idle0) / (total1 - total0))
            idle0, total0 = idle1, total1

    @property
    def min_idle_pct(self) -> float | None:
        return round(min(self.samples), 1) if self.samples else None

    @property
    def mean_idle_pct(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None

    @property
    def starved_share_pct(self) -> float | None:
        """Share of the run (samples) with CPU idle below STARVED_BELOW_PCT."""
        if not self.samples:
            return None
        low = sum(1 for s in self.samples if s < STARVED_BELOW_PCT)
        return round(100.0 * low / len(self.samples), 1)

    @property
    def starved(self) -> bool:
        share = self.starved_share_pct
        return share is not None and share > STARVED_SHARE_PCT
