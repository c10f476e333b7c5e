"""Progress bars per phase on stderr (redrawn in place on a terminal, one line per phase
otherwise, so CI logs stay readable)."""
from __future__ import annotations

import sys
import time


class Phase:
    def __init__(self, name: str, total: int, stream=None):
        self.name, self.total = name, max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self._draw()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.tty:
            self._draw()

    def _draw(self) -> None:
        if not self.tty:
            return
        width = 24
        filled = int(width * self.done / self.total)
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        self.stream.write(f"\r  {self.name:<28} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total} {elapsed:5.1f}s eta {eta:4.0f}s")
        self.stream.flush()

    def close(self) -> None:
        elapsed = time.monotonic() - self.t0
        if self.tty:
            self._draw()
            self.stream.write("\n")
        else:
            self.stream.write(f"  {self.name}: {self.done}/{self.total} in {elapsed:.1f}s\n")
        self.stream.flush()

    def __enter__(self) -> "Phase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
