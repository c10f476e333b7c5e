"""Every experiment by name, and the facts each declares in its own module (experiments/base.py
`Experiment`): a new experiment is one module plus one line here.

Suite order is the chapter's: the WAN first (every later latency rests on it), then the VIP
balancer (modes, hashing, GRE), then DNS (round robin, geo, failover); each experiment's
`order` places it. The suite runner, the report and `lblab compare` read the facts from
here; runs of an experiment that is no longer registered still get a report (claim and
summary table from their own metadata) and are compared by `variant`.
"""
from __future__ import annotations

from experiments.base import Experiment
from topologies.system import InputError


def experiments() -> dict[str, Experiment]:
    """Registered experiments in suite order."""
    from experiments import (dns_failover, dns_failover_pop, dns_geo, dns_geo_pop, dns_rr,
                             dns_rr_pop, global_overload, gre_mtu, lb_tier, rtt_matrix,
                             traffic_classes, vip_hashing, vip_modes)
    found = [rtt_matrix.EXPERIMENT, vip_modes.EXPERIMENT, vip_hashing.EXPERIMENT,
             lb_tier.EXPERIMENT, gre_mtu.EXPERIMENT, dns_rr.EXPERIMENT,
             dns_rr_pop.EXPERIMENT, dns_geo.EXPERIMENT, dns_geo_pop.EXPERIMENT,
             dns_failover.EXPERIMENT, dns_failover_pop.EXPERIMENT,
             global_overload.EXPERIMENT, traffic_classes.EXPERIMENT]
    return {e.name: e for e in sorted(found, key=lambda e: suite_rank(e.name, e))}


def suite_rank(name: str, exp: Experiment | None = None) -> tuple:
    """Sort key of an experiment in a suite and a report: by `order`, then unordered and
    unknown ones by name."""
    exp = exp if exp is not None else find(name)
    order = exp.order if exp is not None else None
    return (0, order, name) if order is not None else (1, 0, name)


def find(name: str) -> Experiment | None:
    return experiments().get(name)


def get(name: str) -> Experiment:
    exps = experiments()
    if name not in exps:
        raise InputError(f"unknown experiment '{name}' (available: {', '.join(exps)})")
    return exps[name]


def key_columns(name: str, columns) -> tuple[str, ...]:
    """The key columns of an experiment's summary rows that are present in `columns`."""
    exp = find(name)
    keys = exp.key_columns if exp is not None and exp.key_columns else None
    if keys is None:
        keys = ("variant",) if "variant" in columns else ()
    return tuple(k for k in keys if k in columns)


def comparable(name: str, summary):
    """The summary as its rows are matched across runs: the experiment's own `comparable`
    view (dns-rr ranks DCs by share), else the summary itself."""
    exp = find(name)
    return exp.comparable(summary) if exp is not None and exp.comparable else summary


def tolerances(name: str) -> dict:
    exp = find(name)
    return dict(exp.tolerances) if exp is not None else {}


def tolerances_markdown() -> str:
    """Every registered experiment's tolerances as one markdown table (README)."""
    from experiments.tolerance import markdown
    return markdown((e.name, e.tolerances) for e in experiments().values())
