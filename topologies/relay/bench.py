"""Relay benchmarks for `make bench`: each function builds lblrt-* namespaces, measures, returns a float.

Why standalone namespaces: the numbers describe the relay itself (not Mininet or OVS), and the
bench must not collide with a Mininet run. Targets (README, "The userspace link relay"):
relay_rtt_error_ms 0.5, relay_rtt_error_loaded_ms 2, relay_goodput_vs_cap 0.9, relay_loss_error_pct 0.3,
relay_max_mbps 500, relay_crosstalk_ms 1.

Run all: `python -m topologies.relay.bench` (root; prints one JSON object).
"""
from __future__ import annotations

import json
import sys
import time

from topologies.relay.link import RelayParams
from topologies.relay.testbed import relay_testbed  # noqa: F401  (re-exported for the bench)

TARGETS = {
    "relay_rtt_error_ms": 0.5,
    "relay_rtt_error_loaded_ms": 2.0,
    "relay_goodput_vs_cap": 0.9,
    "relay_loss_error_pct": 0.3,
    "relay_max_mbps": 500.0,
    "relay_crosstalk_ms": 1.0,
}
# lower is better for errors, higher for throughput
HIGHER_IS_BETTER = {"relay_goodput_vs_cap", "relay_max_mbps"}


def relay_rtt_error_ms(delays=(5, 20, 50), count: int = 300) -> float:
    """Worst |median RTT - 2D| (ms) over one-way delays D at idle."""
    worst = 0.0
    for d in delays:
        with relay_testbed(RelayParams(d, seed=1)) as link:
            worst = max(worst, abs(link.median_rtt(count, 0.01) - 2 * d))
    return worst


def relay_rtt_error_loaded_ms(delay_ms: float = 20, cap_mbps: float = 100,
                              load: str = "50M", count: int = 300) -> float:
    """|median RTT - 2D| (ms) while an iperf3 TCP flow offers 50% of the rate cap."""
    with relay_testbed(RelayParams(delay_ms, rate_mbps=cap_mbps, queue_pkts=1000, seed=1)) as link:
        link.iperf_server()
        secs = count * 0.01 + 6
        client = link.iperf_client(secs, bitrate=load, background=True)
        time.sleep(2)  # let TCP reach its offered rate before sampling (not a readiness wait)
        med = link.median_rtt(count, 0.01)
        client.wait(secs + 30)
        if client.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {client.stderr.read()}")
        got = json.loads(client.stdout.read())["end"]["sum_received"]["bits_per_second"] / 1e6
        if got < 0.4 * cap_mbps:
            raise RuntimeError(f"background load only {got:.1f} Mbit/s, wanted ~{load}")
    return abs(med - 2 * delay_ms)


def relay_goodput_vs_cap(cap_mbps: float = 100, delay_ms: float = 20, seconds: int = 10) -> float:
    """iperf3 TCP goodput over a capped link with RTT 2D, as a fraction of the cap."""
    with relay_testbed(RelayParams(delay_ms, rate_mbps=cap_mbps, queue_pkts=1000, seed=1)) as link:
        link.iperf_server()
        mbps = link.iperf_client(seconds, omit=2)
    return mbps / cap_mbps


def relay_loss_error_pct(loss_pct: float = 1.0, packets: int = 5000) -> float:
    """Worst per-direction |measured - configured| loss (%), ~`packets` frames each way.

    Measured from the relay's own counters (frames received vs. dropped by loss per direction):
    echo requests count A->B, replies B->A (so B->A sees ~1% fewer frames).
    """
    with relay_testbed(RelayParams(1, loss_pct=loss_pct, seed=12345)) as link:
        link.ping_loss(packets, interval=0.001)
        stats = link.stop_relay()
    errs = []
    for d in ("ab", "ba"):
        s = stats[d]
        errs.append(abs(100.0 * s["drop_loss"] / s["rx"] - loss_pct))
    return max(errs)


def relay_max_mbps(delay_ms: float = 1, seconds: int = 8) -> float:
    """Uncapped TCP goodput (Mbit/s) through one relay link."""
    with relay_testbed(RelayParams(delay_ms, seed=1)) as link:
        link.iperf_server()
        return link.iperf_client(seconds, omit=2)


def relay_crosstalk_ms(delay_ms: float = 10, count: int = 300) -> float:
    """Added median RTT (ms) on an idle relay link while a neighbour relay link is saturated."""
    with relay_testbed(RelayParams(delay_ms, seed=1)) as quiet, \
            relay_testbed(RelayParams(delay_ms, seed=2)) as busy:
        idle = quiet.median_rtt(count, 0.01)
        busy.iperf_server()
        secs = count * 0.01 + 6
        client = busy.iperf_client(secs, background=True)
        time.sleep(2)  # let the neighbour's TCP flow ramp up (not a readiness wait)
        loaded = quiet.median_rtt(count, 0.01)
        client.wait(secs + 30)
    return max(0.0, loaded - idle)


ALL = [relay_rtt_error_ms, relay_rtt_error_loaded_ms, relay_goodput_vs_cap,
       relay_loss_error_pct, relay_max_mbps, relay_crosstalk_ms]


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or [f.__name__ for f in ALL]
    funcs = {f.__name__: f for f in ALL}
    out = {}
    for n in names:
        t = time.monotonic()
        value = funcs[n]()
        target = TARGETS[n]
        ok = value >= target if n in HIGHER_IS_BETTER else value <= target
        out[n] = {"value": round(value, 4), "target": target, "met": ok,
                  "seconds": round(time.monotonic() - t, 1)}
        print(json.dumps({n: out[n]}), file=sys.stderr, flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
