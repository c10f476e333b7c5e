"""What an experiment declares, in its own module and nowhere else: parameters (with --quick
values), scenario, a run function, and the facts the suite, the report and `lblab compare`
need about it (its place in a suite, how long it takes, which columns identify a summary
row, its reproducibility tolerances, its claim and its report section).

The runner owns everything with a lifetime (network, controller, run directory, signals);
an experiment only measures, through the `Context` it is given, and returns summary rows.
"""
from __future__ import annotations

import importlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from experiments.tolerance import Tol
from topologies.system import InputError

DEFAULT_EXPECTED_S = 120.0     # an experiment that states no duration, for suite estimates


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    help: str
    quick: Any = None

    def value(self, quick: bool) -> Any:
        return self.quick if quick and self.quick is not None else self.default

    def convert(self, text: str) -> Any:
        """Parse a --set value to the type of the default; a bad value is an InputError."""
        kind = type(self.default)
        try:
            if kind is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if kind in (list, tuple):
                return [_scalar(x) for x in text.split(",") if x]
            return kind(text)
        except ValueError:
            raise InputError(f"--set {self.name}={text}: expected {kind.__name__}") from None


def _scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str
    claim: str
    run: Callable[["Context"], list[dict]]
    params: tuple[Param, ...] = ()
    scenario: str = "three-dc"
    summary_columns: tuple[str, ...] = ()
    # Place in a suite (lower first; experiments/registry.py says the order's reason);
    # None: after the ordered ones, by name.
    order: int | None = None
    # Seconds per repetition by suite ("quick", "full"), measured on the 2-core development
    # VM (userspace OVS, relay links), network set-up and teardown included: the suite's
    # estimate of the time left, nothing else.
    expected_s: Mapping[str, float] = field(default_factory=dict)
    # The columns that identify a row of summary.csv: rows of two runs with the same key are
    # compared, repetitions with the same key averaged. Empty: `variant` if there is one.
    key_columns: tuple[str, ...] = ()
    tolerances: Mapping[str, Tol] = field(default_factory=dict)   # experiments/tolerance.py
    # "module:function" of the report section (experiments/report/*), imported when a report
    # is built, so that listing or running experiments does not load pandas and matplotlib.
    renderer: str = ""
    # summary DataFrame -> the rows `lblab compare` matches by key_columns (dns-rr ranks DCs)
    comparable: Callable[[Any], Any] | None = None
    # the suites that run it (experiments/suites.py); `lblab run NAME [--quick]` always can
    suites: tuple[str, ...] = ("quick", "full")

    def expected(self, suite: str) -> float:
        return float(self.expected_s.get(suite, DEFAULT_EXPECTED_S))

    def render(self, group) -> Any:
        """The report section of a group of this experiment's runs."""
        module, _, function = self.renderer.partition(":")
        return getattr(importlib.import_module(module), function)(group)

    def resolve_params(self, quick: bool, overrides: dict[str, str]) -> dict[str, Any]:
        known = {p.name: p for p in self.params}
        values = {p.name: p.value(quick) for p in self.params}
        for key, text in overrides.items():
            if key not in known:
                valid = ", ".join(sorted(known)) or "none"
                raise InputError(f"--set {key}: unknown parameter of {self.name} "
                                 f"(parameters: {valid}; runner keys: "
                                 f"link_emulation, backend_server, region_lan)")
            values[key] = known[key].convert(text)
        return values


@dataclass
class Context:
    """Handed to an experiment's run function."""

    experiment: Experiment
    run_id: str
    params: dict
    seed: int
    quick: bool
    work_dir: Path
    open_net: Callable[..., Any]
    phase: Callable[[str, int], Any]
    log: Callable[[str], None]
    records: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra_metadata: dict = field(default_factory=dict)
    repetition: int = 0  # set by the runner (runner-level repetitions, experiments/suites.py)
    scenario: Any = None     # topologies.scenario.Scenario the run uses
    plan: Any = None         # topologies.plan.NetworkPlan of that scenario
    mechanisms: Any = None   # lab.mechanisms.Mechanisms picked for this kernel

    def __post_init__(self):
        self.rng = random.Random(self.seed)

    def record(self, **fields) -> None:
        row = {"run_id": self.run_id, "experiment": self.experiment.name,
               "variant": "default", "repetition": self.repetition}
        row.update(fields)
        self.records.append(row)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.log(f"WARNING: {text}")
