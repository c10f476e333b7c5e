"""The search workload, printing one JSON line per request (for experiments that run it in
the background beside other workloads). Same options as experiments.workloads.search,
minus --out; the last line is the client's own summary, {"client_stats": {...}}."""
from __future__ import annotations

import argparse
import json
import sys

from experiments.workloads.search import raise_fd_limit, run, run_loop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--poisson", action="store_true")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    raise_fd_limit()
    stats: dict = {}
    rows = run_loop(run(args.host, args.port, args.rate, args.duration, args.size,
                        args.timeout, args.seed, args.poisson, stats))
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"client_stats": stats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
