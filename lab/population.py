"""A population's addresses in the live network (topologies/population.py says which).

Each region with a population has its users on one client host (plan.population_host) and
its resolvers on its resolver host. Their addresses are made local in those hosts as whole
blocks ("AnyIP": `ip route add local PREFIX dev lo`, no address per user), one local route
per users' /24 on the client host and the resolvers' /24 on the resolver host; the region
router routes the block to them (topologies/plan.py). Sockets then bind to any user's or
resolver's address, so resolvers, the authority (through ECS), the load balancer's hash and
the backends all see distinct users. The routes live in the hosts' namespaces and go with
them at teardown.
"""
from __future__ import annotations

from topologies.plan import population_host
from topologies.system import LblabError

ROUTES_PER_COMMAND = 40


def local_blocks(region) -> dict[str, list[str]]:
    """Host -> the prefixes made local there for one region's population."""
    pop = region.population
    users = list(pop.user_prefix.subnets(new_prefix=24))[1:1 + pop.subnets]
    return {population_host(region.name): [str(n) for n in users],
            f"lbd-{region.name}": [str(pop.resolver_subnet)]}


def prepare(live) -> dict[str, int]:
    """Make every population's blocks local; returns host -> number of local routes."""
    out = {}
    for region in live.plan.scenario.populations:
        for host, prefixes in local_blocks(region).items():
            node = live.node(host)
            # in chunks: a host's command line goes through a terminal, whose line is cut
            # at 4,096 characters (about 90 routes)
            cmds = [f"ip route replace local {p} dev lo" for p in prefixes]
            cmds.append("sysctl -qw net.ipv4.conf.all.rp_filter=0")
            for i in range(0, len(cmds), ROUTES_PER_COMMAND):
                err = node.cmd(" ; ".join(cmds[i:i + ROUTES_PER_COMMAND])).strip()
                if err:
                    raise LblabError(f"population of {region.name}: local routes on {host}: "
                                     f"{err.splitlines()[0]}")
            out[host] = out.get(host, 0) + len(prefixes)
    return out
