"""When a run measures the host instead of the network: the thresholds, defined once.

The runner flags each run with these (metadata `fidelity`: data, not text), the report
reads the flags back, and `lblab compare` notes them:
- calibration: a WAN path whose measured RTT is more than RTT_TOLERANCE_MS off its
  configured one, or not measured at all (every probe lost), means the emulated WAN does
  not apply the scenario's delays to the accuracy the experiments rely on; 1 ms is the
  userspace relay's accuracy target (README, make bench);
- CPU starvation: on 2 cores the switches, controller, relays, servers and clients share
  the CPU; while idle is below CPU_STARVED_BELOW_PCT latencies include CPU queueing. A run is
  flagged when that lasts more than CPU_STARVED_SHARE_PCT of its 1-second samples: a dip of
  a second or two (a dozen Python workloads starting at once) is in every run and says
  nothing;
- link delay `none`: no mechanism applied the WAN delays at all.
"""
from __future__ import annotations

from collections.abc import Iterable

RTT_TOLERANCE_MS = 1.0
CPU_STARVED_BELOW_PCT = 20.0
CPU_STARVED_SHARE_PCT = 10.0


def thresholds() -> dict:
    return {"rtt_tolerance_ms": RTT_TOLERANCE_MS,
            "cpu_starved_below_pct": CPU_STARVED_BELOW_PCT,
            "cpu_starved_share_pct": CPU_STARVED_SHARE_PCT}


def rtt_off(error_ms: float | None) -> bool:
    """A measured-minus-configured RTT beyond the tolerance, or no measurement at all."""
    return error_ms is None or abs(float(error_ms)) > RTT_TOLERANCE_MS


def calibration_off(entries: Iterable[dict]) -> list[dict]:
    """The calibration entries (lab/calibrate.py) that are off."""
    return [e for e in entries if rtt_off(e.get("error_ms"))]


def cpu_starved(starved_share_pct: float | None) -> bool:
    return starved_share_pct is not None and starved_share_pct > CPU_STARVED_SHARE_PCT


def flags(link_delay: str, calibration: Iterable[dict], starved_share_pct: float | None
          ) -> dict:
    """A run's fidelity flags, as written to its metadata (`fidelity`)."""
    entries = list(calibration)
    return {"thresholds": thresholds(),
            "link_delay_none": link_delay == "none",
            # without a delay mechanism every path is off: both flags stand (the runner
            # prints only the first, lab/calibrate.py)
            "calibration_off": calibration_off(entries),
            "calibration_paths": len(entries),
            "cpu_starved": cpu_starved(starved_share_pct)}
