"""Many users on one host, each with its own address, resolver and stub behaviour.

Each user has a request process of its own (from its region's population): open loop, a
Poisson process of the user's `rate` per second (the schedule of every open-loop user is
fixed before the first request, seeded: one merged Poisson process, each request drawn to a
user in proportion to its rate), or closed loop when the user has a think time (`think_s`):
the user sends, waits for the outcome, thinks for an exponential time of that mean, sends
again; its first request at a random instant of its first think time. Each request is the
user's workload: `search` (a short GET) or `upload` (a POST of `upload_bytes`). For each
request, as that user's machine would: find the service name's A records (from the user's
own stub cache while the TTL of a cached answer lasts, when the user has one; else one
query to the user's resolver from the user's own address, for --name, or --upload-name
for an upload), then reach the service from the user's address:

  random      one of the records at random (what the chapter recommends clients do);
  first       the first record (many stub resolvers and getaddrinfo's sorting, in effect);
  retry-next  the records in the order given: on a refused, reset or unanswered connection
              (unanswered for the user's `retry_delay` seconds) the next one, as browsers
              do; the last one gets the full timeout.

One CSV row per request (FIELDS): epoch (scheduled start, wall clock), t_s, user, user_ip,
user_subnet, resolver, behaviour, workload, cached (answer from the stub cache),
resolve_ms, answers, dst (the address that answered or was tried last), tries, latency_ms
(from the scheduled start to the reply: resolution and every try), ok, error, status,
bytes, backend, dc, seen_as (the client address the backend saw, its X-Client header),
start_lag_ms. The client's own account (CPU, lag, behind_schedule) goes to --stats-out.

Run: python -m experiments.workloads.population --users users.json --duration 10 --out F.csv
(users.json: [{"name", "ip", "subnet", "resolver", "resolver_ip", "behaviour",
"stub_cache", "workload", "rate", "think_s", "retry_delay", "upload_bytes"}, ...], as
topologies.population.User.client_spec writes it).
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import csv
import itertools
import json
import os
import random
import sys
import time

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from experiments.workloads.search import client_stats, one_request, raise_fd_limit, run_loop
from topologies.scenario import BEHAVIOURS

FIELDS = ("epoch", "t_s", "user", "user_ip", "user_subnet", "resolver", "behaviour",
          "workload", "cached", "resolve_ms", "answers", "dst", "tries", "latency_ms", "ok",
          "error", "status", "bytes", "backend", "dc", "seen_as", "start_lag_ms")


WORKLOADS = ("search", "upload")


def schedule(rates: list[float], duration: float, seed: int,
             segments: list[tuple[float, float]] | None = None) -> list[tuple[float, int]]:
    """(offset s, user index) of every open-loop request: one Poisson process of rates[i]
    per user (0: the user is not open loop), merged; with `segments` [(seconds, factor),
    ...] every rate is multiplied by each segment's factor in turn (a ramp of steps), and
    the segments' seconds replace `duration`."""
    rng = random.Random(f"lblab-population-schedule:{seed}")
    total = sum(rates)
    if total <= 0:
        return []
    cum = list(itertools.accumulate(rates))
    out, start = [], 0.0
    for seconds, factor in segments or [(duration, 1.0)]:
        end, at = start + seconds, start
        while factor > 0:
            at += rng.expovariate(total * factor)
            if at >= end:
                break
            out.append((at, bisect.bisect_right(cum, rng.random() * total)))
        start = end
    return out


def parse_segments(text: str) -> list[tuple[float, float]]:
    """'8:0.6,8:0.9' -> [(8.0, 0.6), (8.0, 0.9)]; ValueError on anything else."""
    out = []
    for part in text.split(","):
        seconds, _, factor = part.partition(":")
        seg = (float(seconds), float(factor))
        if not seg[0] > 0 or seg[1] < 0:
            raise ValueError(f"segment {part!r}: seconds must be > 0 and factor >= 0")
        out.append(seg)
    return out


def think_times(think_s: float, duration: float, rng: random.Random):
    """A closed-loop user's first start (uniform in its first think time), then its think
    times (exponential, mean think_s)."""
    yield rng.uniform(0, min(think_s, duration))
    while True:
        yield rng.expovariate(1 / think_s)


def attempt_order(addrs: list[str], behaviour: str, rng: random.Random) -> list[str]:
    """The addresses a user tries, in order."""
    if not addrs:
        return []
    if behaviour == "random":
        return [rng.choice(addrs)]
    if behaviour == "first":
        return [addrs[0]]
    if behaviour == "retry-next":
        return list(addrs)
    raise ValueError(f"unknown behaviour {behaviour!r}")


class StubCache:
    """A user machine's own cache of one name's answer, honouring its TTL."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.entry: tuple[list[str], float] | None = None

    def get(self) -> list[str] | None:
        if self.entry is not None and self.clock() < self.entry[1]:
            return self.entry[0]
        self.entry = None
        return None

    def put(self, addrs: list[str], ttl_s: float) -> None:
        if addrs and ttl_s > 0:
            self.entry = (addrs, self.clock() + ttl_s)


async def resolve(resolver: str, name: str, timeout_s: float, source: str, port: int = 53
                  ) -> tuple[list[str], int, str]:
    """(addresses, TTL, error) of one A query from `source` to the resolver."""
    try:
        reply = await dns.asyncquery.udp(dns.message.make_query(name, "A"), resolver,
                                         timeout=timeout_s, port=port, source=source)
    except dns.exception.Timeout:
        return [], 0, "dns timeout"
    except (OSError, dns.exception.DNSException) as exc:
        return [], 0, f"dns {type(exc).__name__}"
    if reply.rcode() != dns.rcode.NOERROR:
        return [], 0, f"dns {dns.rcode.to_text(reply.rcode())}"
    sets = [rrset for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A]
    addrs = [rd.address for rrset in sets for rd in rrset]
    ttl = min((rrset.ttl for rrset in sets), default=0)
    return addrs, ttl, "" if addrs else "dns no answer"


async def one(user: dict, cache: StubCache | None, args, rng: random.Random,
              scheduled: float) -> dict:
    now = time.monotonic()
    workload = user.get("workload", "search")
    row = {"user": user["name"], "user_ip": user["ip"], "user_subnet": user["subnet"],
           "resolver": user["resolver"], "behaviour": user["behaviour"],
           "workload": workload, "cached": False,
           "resolve_ms": 0.0, "answers": "", "dst": "", "tries": 0, "ok": False, "error": "",
           "status": "", "bytes": 0, "backend": "", "dc": "", "seen_as": "",
           "start_lag_ms": round(max(0.0, now - scheduled) * 1000, 3)}
    addrs = cache.get() if cache is not None else None
    if addrs is not None:
        row["cached"] = True
    else:
        name = args.upload_name if workload == "upload" and args.upload_name else args.name
        addrs, ttl, err = await resolve(user["resolver_ip"], name, args.dns_timeout,
                                        user["ip"], args.dns_port)
        row["resolve_ms"] = round((time.monotonic() - now) * 1000, 3)
        if err:
            row.update(error=err, latency_ms=round((time.monotonic() - scheduled) * 1000, 3))
            return row
        if cache is not None:
            cache.put(addrs, ttl)
    row["answers"] = " ".join(addrs)
    order = attempt_order(addrs, user["behaviour"], rng)
    body = int(user.get("upload_bytes", 0)) if workload == "upload" else 0
    path = "/upload" if body else f"/search?size={args.size}"
    for k, dst in enumerate(order):
        last = k == len(order) - 1
        reply = await one_request(dst, args.port, path,
                                  args.timeout if last else float(user.get("retry_delay", 1)),
                                  source=user["ip"], body=body)
        row["tries"] = k + 1
        row.update({key: reply[key] for key in ("dst", "ok", "error", "status", "bytes",
                                                "backend", "dc", "seen_as")})
        if body and reply["ok"]:
            row["bytes"] = body          # an upload's bytes are what the server acknowledged
        # a reply that came (even an error status) ends the tries: the server answered
        if reply["ok"] or reply["status"] != "":
            break
    row["latency_ms"] = round((time.monotonic() - scheduled) * 1000, 3)
    return row


async def closed_loop(user: dict, cache: StubCache | None, args, rng: random.Random,
                      t0: float) -> list[tuple[float, dict]]:
    """A closed-loop user's (offset, row) for every request it starts within the run."""
    out = []
    thinks = think_times(float(user["think_s"]), args.duration,
                         random.Random(f"lblab-population-think:{args.seed}:{user['name']}"))
    at = next(thinks)
    while at < args.duration:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        out.append((at, await one(user, cache, args, rng, t0 + at)))
        at = time.monotonic() - t0 + next(thinks)
    return out


def open_rate(user: dict) -> float:
    return 0.0 if float(user.get("think_s", 0)) > 0 else float(user.get("rate", 0))


async def run(users: list[dict], args, stats: dict | None = None) -> list[dict]:
    rates = [open_rate(u) for u in users]
    events = schedule(rates, args.duration, args.seed, args.segments)
    rng = random.Random(f"lblab-population-pick:{args.seed}")
    caches = [StubCache() if u.get("stub_cache") else None for u in users]
    if args.start_at:
        wait = args.start_at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
    t0_wall, t0 = time.time(), time.monotonic()
    closed = [asyncio.create_task(closed_loop(u, caches[i], args, rng, t0))
              for i, u in enumerate(users) if float(u.get("think_s", 0)) > 0]
    tasks = []
    for at, i in events:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(users[i], caches[i], args, rng, t0 + at)))
    done = list(zip((at for at, _ in events), await asyncio.gather(*tasks)))
    for group in await asyncio.gather(*closed):
        done += group
    done.sort(key=lambda pair: pair[0])
    rows = []
    for at, row in done:
        row["t_s"] = round(at, 4)
        row["epoch"] = round(t0_wall + at, 4)
        rows.append(row)
    if stats is not None:
        stats.update(client_stats(rows, time.monotonic() - t0, sum(rates) * (
                         sum(a * f for a, f in args.segments) / args.duration
                         if args.segments else 1.0)),
                     load_generator="lblab population", users=len(users),
                     closed_loop_users=len(closed))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", required=True, help="JSON list of users")
    parser.add_argument("--name", default="www.lblab.test")
    parser.add_argument("--upload-name", default="",
                        help="the name uploads resolve (default: --name)")
    parser.add_argument("--dns-port", type=int, default=53)
    parser.add_argument("--port", type=int, default=80, help="HTTP port of the service")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--start-at", type=float, default=0.0,
                        help="wall-clock time (epoch s) of the schedule's start")
    parser.add_argument("--size", type=int, default=1024, help="reply bytes")
    parser.add_argument("--timeout", type=float, default=3.0, help="HTTP, per request, s")
    parser.add_argument("--dns-timeout", type=float, default=2.0, help="per query, s")
    parser.add_argument("--segments", help="open-loop ramp: SECONDS:FACTOR,... (each "
                        "user's rate times FACTOR for SECONDS; replaces --duration)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--stats-out", help="JSON file for the client's own summary")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    try:
        args.segments = parse_segments(args.segments) if args.segments else None
    except ValueError as exc:
        parser.error(f"--segments: {exc}")
    if args.segments:
        args.duration = sum(seconds for seconds, _ in args.segments)
    try:
        users = json.loads(open(args.users).read())
    except (OSError, ValueError) as exc:
        parser.error(f"--users {args.users}: {exc}")
    bad = [u.get("behaviour") for u in users if u.get("behaviour") not in BEHAVIOURS]
    bad += [u.get("workload") for u in users if u.get("workload", "search") not in WORKLOADS]
    if not users or bad:
        parser.error(f"--users: no users, or unknown behaviour or workload {bad[:1]}")
    raise_fd_limit()
    stats: dict = {}
    rows = run_loop(run(users, args, stats))
    tmp = args.out + ".tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, args.out)
    if args.stats_out:
        with open(args.stats_out, "w") as fh:
            json.dump(stats, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
