"""Populations: the users of a region and the resolvers they use. Pure data, seeded.

A region's `population` block (topologies/scenario.py) says how many users there are and
how they behave; this module gives every user a name, an address of its own, a resolver and
a behaviour, the same for the same seed on every machine:

- addresses: user i of a region has address i % users_per_subnet + 1 of /24 number
  1 + i // users_per_subnet of the region's `user_prefix` (/24 number 0 is the resolvers'),
  so the authority sees up to `users_per_subnet` users per ECS /24 subnet;
- resolvers: the region's resolver k (1..R) is address k of the first /24, the public
  resolver (dns.public_resolver) .254 of its region's first /24; each user gets one;
  `public_share` of the users (exactly, rounded) the public one, the rest the region's own,
  `uniform`ly (counts differ by at most one) or by Zipf (resolver k's share proportional to
  1 / k^s: a few big ISP resolvers serve most users), by largest remainder, then shuffled;
- behaviours and workloads: the `behaviours` and `workloads` weights apportioned the same
  way and shuffled independently; every user keeps its region's request process (rate or
  think time, retry delay, upload size).

The live network makes the addresses real (lab/population.py: AnyIP blocks on the region's
first client host and its resolver host, routed by the region router).
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, replace

from topologies.scenario import Region, Scenario

PUBLIC_RESOLVER_HOST = 254


@dataclass(frozen=True)
class ResolverSpec:
    """One unbound instance: its name (lbd-REGION-rK, lbd-SITE-pub), address and region."""
    name: str
    region: str
    ip: ipaddress.IPv4Address
    ecs: bool
    public: bool = False


@dataclass(frozen=True)
class User:
    name: str                      # REGION-uN
    region: str
    index: int
    ip: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network  # its /24 (what ECS carries)
    resolver: str
    resolver_ip: ipaddress.IPv4Address
    behaviour: str
    stub_cache: bool
    workload: str = "search"
    rate_rps: float = 0.05         # open loop (think_time_s 0)
    think_time_s: float = 0.0      # > 0: closed loop
    retry_delay_s: float = 1.0
    upload_kb: int = 256

    def client_spec(self) -> dict:
        """What the population client (experiments/workloads/population.py) reads."""
        return {"name": self.name, "ip": str(self.ip), "subnet": str(self.subnet),
                "resolver": self.resolver, "resolver_ip": str(self.resolver_ip),
                "behaviour": self.behaviour, "stub_cache": self.stub_cache,
                "region": self.region, "workload": self.workload, "rate": self.rate_rps,
                "think_s": self.think_time_s, "retry_delay": self.retry_delay_s,
                "upload_bytes": self.upload_kb * 1024}


def region_resolvers(region: Region) -> list[ResolverSpec]:
    pop = region.population
    base = pop.resolver_subnet.network_address
    return [ResolverSpec(f"lbd-{region.name}-r{k}", region.name, base + k, region.ecs)
            for k in range(1, pop.resolvers + 1)]


def public_resolver(scenario: Scenario) -> ResolverSpec | None:
    pub = scenario.dns.public_resolver
    if pub is None:
        return None
    pop = scenario.region(pub.site).population
    return ResolverSpec(f"lbd-{pub.site}-pub", pub.site,
                        pop.resolver_subnet.network_address + PUBLIC_RESOLVER_HOST,
                        pub.ecs, public=True)


def all_resolvers(scenario: Scenario) -> list[ResolverSpec]:
    """Every population resolver (region by region), then the public one."""
    out = [r for region in scenario.populations for r in region_resolvers(region)]
    pub = public_resolver(scenario)
    return out + ([pub] if pub else [])


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (k ** s) for k in range(1, n + 1)]


def apportion(total: int, weights: list[float]) -> list[int]:
    """`total` items over len(weights) bins in proportion (largest remainder; ties to the
    earlier bin), so the counts sum to `total` exactly."""
    if total < 0 or not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("apportion needs a count >= 0 and weights >= 0 with a positive sum")
    scale = total / sum(weights)
    exact = [w * scale for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:total - sum(counts)]:
        counts[i] += 1
    return counts


def spread_weights(n: int, spread: str, zipf_s: float) -> list[float]:
    if spread == "uniform":
        return [1.0] * n
    if spread == "zipf":
        return zipf_weights(n, zipf_s)
    raise ValueError(f"unknown spread {spread!r}")


def _deal(rng: random.Random, items: list, counts: list[int]) -> list:
    """counts[i] copies of items[i], shuffled."""
    out = [item for item, n in zip(items, counts) for _ in range(n)]
    rng.shuffle(out)
    return out


def make_users(scenario: Scenario, seed: int) -> list[User]:
    """Every user of every population (region by region, index order)."""
    pub = public_resolver(scenario)
    out = []
    for region in scenario.populations:
        pop = region.population
        rng = random.Random(f"lblab-population:{seed}:{region.name}")
        own = region_resolvers(region)
        n_public = round(pop.users * pop.public_share) if pub else 0
        chosen = _deal(rng, [pub, None], [n_public, pop.users - n_public])
        dealt = iter(_deal(rng, own, apportion(pop.users - n_public, spread_weights(
            len(own), pop.spread, pop.zipf_s))))
        resolvers = [r if r is not None else next(dealt) for r in chosen]
        names, weights = zip(*pop.behaviours)
        behaviours = _deal(rng, list(names), apportion(pop.users, list(weights)))
        names, weights = zip(*pop.workloads)
        workloads = _deal(rng, list(names), apportion(pop.users, list(weights)))
        subnets = list(pop.user_prefix.subnets(new_prefix=24))
        for i in range(pop.users):
            net = subnets[1 + i // pop.users_per_subnet]
            out.append(User(f"{region.name}-u{i + 1}", region.name, i,
                            net.network_address + 1 + i % pop.users_per_subnet, net,
                            resolvers[i].name, resolvers[i].ip, behaviours[i],
                            pop.stub_cache, workloads[i], pop.rate_rps, pop.think_time_s,
                            pop.retry_delay_s, pop.upload_kb))
    return out


def respread(users: list[User], resolvers: list[ResolverSpec], spread: str, zipf_s: float,
             seed: int) -> list[User]:
    """The same users over another set of resolvers (an experiment's variant: all users
    behind 1, 10 or 100 resolvers), counts by `spread`, dealt at random (seeded)."""
    rng = random.Random(f"lblab-respread:{seed}:{len(resolvers)}:{spread}")
    dealt = _deal(rng, resolvers, apportion(len(users), spread_weights(
        len(resolvers), spread, zipf_s)))
    return [replace(u, resolver=r.name, resolver_ip=r.ip) for u, r in zip(users, dealt)]


def with_behaviour(users: list[User], behaviour: str, stub_cache: bool | None = None
                   ) -> list[User]:
    """Every user with one behaviour (an experiment's variant)."""
    return [replace(u, behaviour=behaviour,
                    stub_cache=u.stub_cache if stub_cache is None else stub_cache)
            for u in users]


def with_process(users: list[User], rate_rps: float | None = None,
                 retry_delay_s: float | None = None) -> list[User]:
    """Every user with an experiment's request rate (open loop) and retry delay, where given;
    None keeps each user's own from the scenario."""
    return [replace(u, rate_rps=u.rate_rps if rate_rps is None else rate_rps,
                    think_time_s=u.think_time_s if rate_rps is None else 0.0,
                    retry_delay_s=u.retry_delay_s if retry_delay_s is None else retry_delay_s)
            for u in users]


def on_own_resolvers(scenario: Scenario, per_region: int, seed: int
                     ) -> tuple[dict[str, list[ResolverSpec]], list[User]]:
    """Each region's first `per_region` resolvers (region -> specs), and every user of the
    scenario on its own region's, evenly (nobody on the public resolver)."""
    own = {r.name: region_resolvers(r)[:max(1, per_region)] for r in scenario.populations}
    return own, with_public_share(make_users(scenario, seed), own, None, 0.0, seed)


def with_public_share(users: list[User], own: dict[str, list[ResolverSpec]],
                      public: ResolverSpec | None, share: float, seed: int) -> list[User]:
    """The same users with `share` of each region's (exactly, rounded) behind `public` and
    the rest spread evenly over their region's resolvers in `own` (region -> resolvers): an
    experiment's variant of how many users sit behind the far public resolver (share 0:
    every user on its own region's resolvers in `own`)."""
    if share > 0 and public is None:
        raise ValueError("a public share needs a public resolver")
    out = []
    for region in dict.fromkeys(u.region for u in users):
        mine = [u for u in users if u.region == region]
        rng = random.Random(f"lblab-public-share:{seed}:{region}:{share}")
        n_public = round(len(mine) * share)
        chosen = _deal(rng, [public, None], [n_public, len(mine) - n_public])
        pool = own[region]
        dealt = iter(_deal(rng, pool, apportion(len(mine) - n_public, [1.0] * len(pool))))
        for u, r in zip(mine, chosen):
            r = r if r is not None else next(dealt)
            out.append(replace(u, resolver=r.name, resolver_ip=r.ip))
    return out
