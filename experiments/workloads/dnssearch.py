""""Search" client that finds the service through DNS, as a user's machine would.

For every request (open loop, like `search`): ask the resolver for the service name's A
records (no client-side cache: the caching is the resolver's), pick one address (`random`:
one of the records at random; `first`: the first, as many stub resolvers effectively do),
then GET /search from it over a new TCP connection. One CSV row per request: epoch
(scheduled start, wall clock, comparable across hosts), t_s, resolver, resolve_ms, answers
(space-separated), dst (the chosen address), latency_ms (the HTTP request alone), ok, error,
status, bytes, backend, dc.

Run: python -m experiments.workloads.dnssearch --resolver IP --rate 10 --duration 10 --out F.csv
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import random
import sys
import time

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from experiments.workloads.search import one_request

FIELDS = ("epoch", "t_s", "resolver", "resolve_ms", "answers", "dst", "latency_ms", "ok",
          "error", "status", "bytes", "backend", "dc")


async def resolve(resolver: str, port: int, name: str, timeout_s: float
                  ) -> tuple[list[str], float, str]:
    """(addresses, milliseconds, error) of one A query to the resolver."""
    start = time.monotonic()
    try:
        reply = await dns.asyncquery.udp(dns.message.make_query(name, "A"), resolver,
                                         timeout=timeout_s, port=port)
    except dns.exception.Timeout:
        return [], (time.monotonic() - start) * 1000, "dns timeout"
    except (OSError, dns.exception.DNSException) as exc:
        return [], (time.monotonic() - start) * 1000, f"dns {type(exc).__name__}"
    ms = (time.monotonic() - start) * 1000
    if reply.rcode() != dns.rcode.NOERROR:
        return [], ms, f"dns {dns.rcode.to_text(reply.rcode())}"
    addrs = [rd.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A
             for rd in rrset]
    return addrs, ms, "" if addrs else "dns no answer"


async def one(args, rng: random.Random) -> dict:
    addrs, dns_ms, err = await resolve(args.resolver, args.dns_port, args.name,
                                       args.dns_timeout)
    row = {"resolver": args.resolver, "resolve_ms": round(dns_ms, 3),
           "answers": " ".join(addrs)}
    if err:
        row.update(dst="", latency_ms="", ok=False, error=err, status="", bytes=0,
                   backend="", dc="")
        return row
    dst = addrs[0] if args.pick == "first" else rng.choice(addrs)
    reply = await one_request(dst, args.port, f"/search?size={args.size}", args.timeout)
    row.update(reply)
    return row


async def run(args) -> list[dict]:
    rng = random.Random(args.seed)
    if args.start_at:
        wait = args.start_at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
    t0_wall, t0 = time.time(), time.monotonic()
    tasks, offsets, at, i = [], [], 0.0, 0
    while at < args.duration - 1e-9:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        offsets.append(at)
        tasks.append(asyncio.create_task(one(args, rng)))
        i += 1
        at = i / args.rate
    rows = await asyncio.gather(*tasks)
    for row, offset in zip(rows, offsets):
        row["t_s"] = round(offset, 4)
        row["epoch"] = round(t0_wall + offset, 4)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolver", required=True, help="resolver address")
    parser.add_argument("--dns-port", type=int, default=53)
    parser.add_argument("--name", default="www.lblab.test")
    parser.add_argument("--pick", choices=("random", "first"), default="random")
    parser.add_argument("--port", type=int, default=80, help="HTTP port of the service")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--start-at", type=float, default=0.0,
                        help="wall-clock time (epoch s) of the first request, so clients in "
                             "several hosts start together")
    parser.add_argument("--size", type=int, default=1024, help="reply bytes")
    parser.add_argument("--timeout", type=float, default=3.0, help="HTTP, per request, s")
    parser.add_argument("--dns-timeout", type=float, default=2.0, help="per query, s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True, help="CSV file to write")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    rows = asyncio.run(run(args))
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
