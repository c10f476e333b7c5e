"""The `lblab` command. Every subcommand has --help; errors are one line, never a traceback.

Exit codes: 0 ok, 1 runtime failure, 2 bad input (scenario, arguments), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from topologies.system import InputError, LblabError, is_root


def _need_root(what: str) -> None:
    if not is_root():
        raise LblabError(f"{what} needs root (network namespaces, Open vSwitch): "
                         f"run it with sudo")


def cmd_doctor(args) -> int:
    from topologies import mechanisms
    mech = mechanisms.detect() if is_root() else None
    if mech is None:
        raise LblabError("doctor probes the kernel in a scratch namespace and needs root: "
                         "run `sudo lblab doctor`")
    info = {**mech.as_dict(), "versions": mechanisms.versions()}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"ovs_datapath: {mech.ovs_datapath}")
    print(f"link_delay:   {mech.link_delay}   (netem available: {mech.netem_available}, "
          f"relay built: {mech.relay_available})")
    print(f"gre_decap:    {mech.gre_decap}   (ip_gre available: {mech.ip_gre_available})")
    print(f"controller:   {mech.controller}")
    for key, value in info["versions"].items():
        print(f"  {key}: {value}")
    for note in mech.notes:
        print(f"note: {note}")
    return 0


def cmd_list(args) -> int:
    from experiments.registry import experiments
    from topologies import scenario
    print("experiments:")
    for exp in experiments().values():
        print(f"  {exp.name:<14} {exp.summary}")
    print("scenarios:")
    for name in scenario.builtin_names():
        desc = scenario.load(name).description
        print(f"  {name:<14} {desc}")
    return 0


def cmd_run(args) -> int:
    from experiments.registry import get
    from experiments.runner import run_experiment, split_overrides
    from topologies import scenario
    # Bad input is reported before anything else, root or not.
    exp = get(args.experiment)
    scenario.load(args.scenario or exp.scenario)
    exp.resolve_params(args.quick, split_overrides(args.set or [])[1])
    _need_root("lblab run")
    run_experiment(exp, scenario=args.scenario, quick=args.quick, seed=args.seed,
                   out_root=args.out, overrides=args.set or [])
    return 0


def cmd_topo_up(args) -> int:
    from topologies import mechanisms, scenario
    from topologies.net import LiveNet
    from topologies.plan import build_plan
    from topologies.state import new_run_id
    _need_root("lblab topo up")
    plan = build_plan(scenario.load(args.scenario))
    mech = mechanisms.detect(args.link_emulation)
    run_id = new_run_id("topo")
    work = Path("/tmp") / f"lblab-{run_id}"
    print(f"bringing up {plan.scenario.name} (link delay: {mech.link_delay}, OVS datapath: "
          f"{mech.ovs_datapath}); controller log in {work}/controller.log")
    from mininet.cli import CLI
    with LiveNet(plan, mech, run_id, work) as live:
        print(f"up in {live.timing.up_s:.1f}s; hosts: "
              f"{', '.join(h.name for h in plan.hosts)}; type 'exit' to tear down")
        CLI(live.net)
    print("torn down")
    return 0


def cmd_clean(args) -> int:
    from experiments.cleanup import clean, leftovers
    _need_root("lblab clean")
    if args.check:
        found = leftovers()
        print(json.dumps(found, indent=2))
        return 1 if any(found.values()) else 0
    report = clean(everything=args.all)
    removed = {k: v for k, v in report.items() if v}
    if not removed:
        print("nothing to clean")
    for key, items in removed.items():
        print(f"removed {len(items)} {key}: {', '.join(map(str, items))}")
    return 0


def cmd_bench(args) -> int:
    from experiments.bench import run_bench
    _need_root("lblab bench")
    run_bench(out_root=args.out, only=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lblab", description="Load-balancing laboratory: multi-DC Mininet experiments "
        "on DNS and VIP load balancing.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("doctor", help="what this kernel offers and which mechanisms lblab uses")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("list", help="experiments and scenarios, one line each")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run one experiment and write results/<experiment>/<run-id>/")
    p.add_argument("experiment", help="experiment name (see `lblab list`)")
    p.add_argument("--scenario", help="scenario name or YAML file (default: the experiment's)")
    p.add_argument("--quick", action="store_true", help="reduced size, for a first look")
    p.add_argument("--seed", type=int, default=1, help="seed of every random choice (1)")
    p.add_argument("--out", type=Path, help="results root (default: results/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter; repeatable (e.g. --set pings=50, "
                        "--set link_emulation=relay)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("topo", help="scenario networks")
    tsub = p.add_subparsers(dest="topo_command", metavar="ACTION")
    tsub.required = True
    t = tsub.add_parser("up", help="bring a scenario up with the Mininet CLI; torn down on exit")
    t.add_argument("scenario", nargs="?", default="three-dc")
    t.add_argument("--link-emulation", choices=("netem", "relay", "none"),
                   help="force a link delay mechanism")
    t.set_defaults(func=cmd_topo_up)

    p = sub.add_parser("clean", help="remove what a crashed lblab run left behind (only that)")
    p.add_argument("--all", action="store_true",
                   help="also runs whose owner process is still alive")
    p.add_argument("--check", action="store_true",
                   help="only list lblab leftovers; exit 1 if there are any")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("bench", help="performance checks -> results/bench/<run-id>/bench.csv")
    p.add_argument("--out", type=Path, help="results root (default: results/)")
    p.add_argument("--only", action="append", metavar="METRIC",
                   help="run only this metric; repeatable")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LblabError as exc:
        print(f"lblab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lblab: interrupted; everything started by this run was torn down, "
              "no partial results were published", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback in a file
        import tempfile
        import traceback
        path = Path(tempfile.gettempdir()) / "lblab-last-error.log"
        path.write_text(traceback.format_exc())
        print(f"lblab: internal error: {type(exc).__name__}: {exc} (traceback in {path}; "
              f"`sudo lblab clean` removes anything left behind)", file=sys.stderr)
        return 1
