"""Parse iputils `ping` output into per-reply RTTs (pure, so it is unit-tested)."""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

_REPLY = re.compile(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass
class PingResult:
    sent: int
    received: int
    rtts_ms: list[float]

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.rtts_ms) if self.rtts_ms else None


def parse_ping(text: str, expected: int) -> PingResult:
    """Replies are counted once per sequence number (duplicates, `DUP!`, are ignored: a
    duplicated frame is a fault of the emulation, not a second reply)."""
    seen: dict[int, float] = {}
    for line in text.splitlines():
        m = _REPLY.search(line)
        if m and "DUP!" not in line:
            seen.setdefault(int(m.group(1)), float(m.group(2)))
    m = _SUMMARY.search(text)
    sent = int(m.group(1)) if m else expected
    return PingResult(sent=sent, received=len(seen), rtts_ms=list(seen.values()))
