"""All experiments by name. A new experiment registers here and nowhere else."""
from __future__ import annotations

from experiments.base import Experiment
from topologies.system import InputError


def experiments() -> dict[str, Experiment]:
    from experiments import rtt_matrix, vip_hashing, vip_modes
    found = [rtt_matrix.EXPERIMENT, vip_modes.EXPERIMENT, vip_hashing.EXPERIMENT]
    from experiments import dns_failover, dns_geo, dns_rr
    found += [dns_rr.EXPERIMENT, dns_geo.EXPERIMENT, dns_failover.EXPERIMENT]
    from experiments import gre_mtu
    found += [gre_mtu.EXPERIMENT]
    return {e.name: e for e in found}


def get(name: str) -> Experiment:
    exps = experiments()
    if name not in exps:
        raise InputError(f"unknown experiment '{name}' (available: {', '.join(exps)})")
    return exps[name]
