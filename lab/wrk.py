"""wrk, the compiled HTTP load generator, run inside a Mininet host: requests per second
where per-request records are not needed (`make bench`). With `new_connections`, every
request carries `Connection: close`, so each one is a new TCP connection (SYN to FIN)."""
from __future__ import annotations

import re
from dataclasses import dataclass

WRK = "wrk"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    errors: int        # socket errors (connect, read, write, timeout) and non-2xx replies
    detail: str = ""   # wrk's own error lines

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


_DONE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(ms|s|m)", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse(text: str) -> WrkResult:
    """wrk's summary -> WrkResult; ValueError (with wrk's last line) if there is none."""
    done, rps = _DONE.search(text), _RPS.search(text)
    if not done or not rps:
        last = text.strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"wrk gave no summary: {last[0][:200]}")
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    errors = sum(int(x) for x in _SOCKET.search(text).groups()) if _SOCKET.search(text) else 0
    errors += int(_NON2XX.search(text).group(1)) if _NON2XX.search(text) else 0
    detail = "; ".join(m.group(0) for m in (_SOCKET.search(text), _NON2XX.search(text)) if m)
    return WrkResult(requests=int(done.group(1)), seconds=float(done.group(2)) * scale,
                     rps=float(rps.group(1)), errors=errors, detail=detail)


def command(url: str, seconds: float = 5, connections: int = 32, threads: int = 2,
            new_connections: bool = True) -> str:
    header = " -H 'Connection: close'" if new_connections else ""
    return f"{WRK} -t{threads} -c{connections} -d{seconds:g}s{header} '{url}'"


def run(node, url: str, **kwargs) -> WrkResult:
    """wrk from a Mininet node; RuntimeError if it produced no summary."""
    out = node.cmd(command(url, **kwargs))
    try:
        return parse(out)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None
