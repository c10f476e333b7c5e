"""Sample CPU idle while an experiment runs: an emulation on a saturated host lies.

The thresholds and why they are what they are: lab/fidelity.py. The lowest sample alone
would flag every run (a dozen Python workloads starting at once dip it in all of them), so
a run is starved when idle stays low for a share of its 1-second samples. Metadata keeps
`min_cpu_idle_pct`, `mean_cpu_idle_pct`, `cpu_starved_share_pct` and `cpu_starved`.
"""
from __future__ import annotations

import threading

from lab.fidelity import CPU_STARVED_BELOW_PCT, cpu_starved


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
        """Share of the run (samples) with CPU idle below CPU_STARVED_BELOW_PCT."""
        if not self.samples:
            return None
        low = sum(1 for s in self.samples if s < CPU_STARVED_BELOW_PCT)
        return round(100.0 * low / len(self.samples), 1)

    @property
    def starved(self) -> bool:
        return cpu_starved(self.starved_share_pct)
