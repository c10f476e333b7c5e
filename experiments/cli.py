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
    from lab import mechanisms
    mech = mechanisms.detect() if is_root() else None
    if mech is None:
        raise LblabError("doctor probes the kernel in a scratch namespace and needs root: "
                         "run `sudo lblab doctor`")
    from controller import frameworks
    fw = frameworks.chosen()   # detect() has refused an unknown LBLAB_CONTROLLER already
    info = {**mech.as_dict(), "versions": mechanisms.versions(),
            "controller_framework": fw.name, "controller_version": fw.version(),
            "controllers_installed": mechanisms.controllers_installed()}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"ovs_datapath: {mech.ovs_datapath}")
    print(f"link_delay:   {mech.link_delay}   (netem available: {mech.netem_available}, "
          f"relay built: {mech.relay_available})")
    print(f"gre_decap:    {mech.gre_decap}   (ip_gre available: {mech.ip_gre_available})")
    others = ", ".join(f"{name} {v or 'not installed'}"
                       for name, v in info["controllers_installed"].items())
    print(f"controller:   {mech.controller}   (installed: {others}; "
          f"LBLAB_CONTROLLER=ryu|os-ken picks)")
    print(f"backends:     {mech.backend_server}   (nginx with Lua: "
          f"{mechanisms.nginx_available()}; --set backend_server=python for the Python one)")
    print(f"lb tier:      {info['versions'].get('bird') or 'BIRD 2 not installed'}   "
          "(BGP + BFD for scenarios with lbs > 1; `make setup` installs bird2)")
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
    if args.suite:
        return _run_suite(args)
    if not args.experiment:
        raise InputError("lblab run: give an EXPERIMENT or --suite quick|full")
    if args.repetitions < 1:
        raise InputError("--repetitions: expected 1 or more")
    # Bad input is reported before anything else, root or not.
    exp = get(args.experiment)
    scen = scenario.load(args.scenario or exp.scenario)
    exp.resolve_params(args.quick, split_overrides(args.set or [])[1])
    _need_root("lblab run")
    for rep in range(args.repetitions):  # runner-level repetitions: seeds seed..seed+R-1
        run_experiment(exp, scenario=scen, quick=args.quick, seed=args.seed + rep,
                       out_root=args.out, overrides=args.set or [], repetition=rep,
                       extra_metadata={"repetitions": args.repetitions,
                                       "base_seed": args.seed}
                       if args.repetitions > 1 else None)
    return 0


def _run_suite(args) -> int:
    from experiments.runner import split_overrides
    from experiments.suites import run_suite
    if args.experiment:
        raise InputError("lblab run: give either an EXPERIMENT or --suite, not both")
    if args.scenario or args.quick:
        raise InputError("--suite runs every experiment on its own scenario and size: "
                         "--scenario and --quick do not apply (--suite quick is the quick one)")
    runner_keys, params = split_overrides(args.set or [])
    if params:
        raise InputError(f"--set with --suite takes runner keys only "
                         f"(link_emulation, backend_server, region_lan), "
                         f"not {', '.join(params)}")
    _need_root("lblab run --suite")
    _, code = run_suite(args.suite, seed=args.seed, out_root=args.out,
                        overrides=args.set or [],
                        repetitions=args.repetitions if args.repetitions > 1 else None)
    return code


def cmd_report(args) -> int:
    from experiments.report import build_report
    path = build_report(args.run_dirs, args.out)
    print(f"report: {path}")
    print(f"        {path.with_suffix('.html')}")
    return 0


def cmd_compare(args) -> int:
    from experiments.report.compare import compare_paths, render_text
    from experiments.registry import tolerances_markdown
    if args.tolerances:
        print(tolerances_markdown(), end="")
        if not args.runs:
            return 0
    if len(args.runs) != 2:
        raise InputError("lblab compare: give two run directories (or two suite directories)")
    checks, notes = compare_paths(Path(args.runs[0]), Path(args.runs[1]))
    print(render_text(checks, notes, failures_only=args.failures_only))
    return 0 if all(c.ok for c in checks) else 1


def cmd_topo_up(args) -> int:
    from lab import mechanisms
    from topologies import scenario
    from lab.net import LiveNet
    from topologies.plan import build_plan
    from topologies.state import new_run_id
    _need_root("lblab topo up")
    plan = build_plan(scenario.load(args.scenario))
    mech = mechanisms.detect(args.link_emulation)
    run_id = new_run_id("topo")
    work = Path("/tmp") / f"lblab-{run_id}"
    print(f"bringing up {plan.scenario.name} (link delay: {mech.link_delay}, OVS datapath: "
          f"{mech.ovs_datapath}); controller log in {work}/controller.log")
    import signal

    class Terminated(BaseException):
        """SIGTERM: leave the CLI (which treats Ctrl-C as 'stop this command') and tear
        the lab down."""

    def terminate(signum, frame):
        raise Terminated()
    old_term = signal.signal(signal.SIGTERM, terminate)
    try:
        _topo_up(plan, LiveNet(plan, mech, run_id, work, ecmp=args.ecmp,
                                     gre=args.gre or None))
    except Terminated:
        print("lblab: terminated; the lab was torn down", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, old_term)
    print("torn down")
    return 0


def _topo_up(plan, net) -> None:
    """Bring `net` up with the whole lab, run the CLI until exit, tear it down."""
    from experiments.labshell import LblabCLI
    from experiments.livecli import LiveLab
    from mininet.log import output, setLogLevel
    work = net.work_dir
    with net as live:
        print(f"up in {live.timing.up_s:.1f}s; hosts: "
              f"{', '.join(h.name for h in plan.hosts)}; type 'exit' to tear down")
        from experiments.dnsnet import start_dns_service
        from lab.dns_config import gslb_config
        # the whole lab: backends (so the VIPs answer: curl http://<vip>/), health checks,
        # the authority with the scenario's policy and global view, each resolver's unbound
        config = gslb_config(plan)
        svc = start_dns_service(live, plan, config, work)
        print(f"backends serve HTTP on port 80; VIPs: "
              f"{', '.join(f'{dc.name} {dc.vip}' for dc in plan.scenario.dcs)}; "
              f"REST: http://127.0.0.1:{live.controller.rest_port}/vips (lblab vip list)")
        print(_dns_banner(plan, config, svc))
        for dc in (live.tier.dcs if live.tier else []):
            lbs = plan.lbs_of(dc)
            print(f"LB tier {dc}: {', '.join(lb.switch.name for lb in lbs)} announced by "
                  f"{', '.join(lb.speaker.name for lb in lbs)} (BGP + BFD, ECMP "
                  f"{live.tier.ecmp}); route: {plan.router(dc).name} ip route show "
                  f"{plan.scenario.dc(dc).vip}; sessions: birdc -s "
                  f"{live.tier.routers[dc].ctl} show protocols")
        print("lab commands (help NAME): vip, dns, fail, recover, ask, load")
        setLogLevel("output")  # the CLI prints commands' output at this level
        lab = LiveLab(live, plan, config, svc, work, say=lambda text: output(text + "\n"))
        try:
            LblabCLI(lab)
        finally:
            lab.closing = True  # loads still running are stopped by teardown, not reported
            setLogLevel("error")


def _dns_banner(plan, config, svc) -> str:
    """Where to ask: the name, the authority, and each region's resolver."""
    lines = [f"DNS: {config.service_fqdn} from the authority on {svc.authority.host} "
             f"({svc.authority.ip}; policy {config.policy}, TTL {config.ttl_s} s)"]
    client = next(iter(plan.by_role("client")), None)
    for name, r in svc.resolvers.items():
        lines.append(f"  resolver {name} {r.ip} (unbound, ECS {'on' if r.ecs else 'off'})")
    if svc.resolvers and client is not None:
        first = next(iter(svc.resolvers.values()))
        lines.append(f"  try: {client.name} dig +short @{first.ip} {config.service_fqdn}")
    elif client is not None:
        lines.append(f"  no resolvers in this scenario; ask the authority: {client.name} "
                     f"dig +short @{svc.authority.ip} {config.service_fqdn}")
    return "\n".join(lines)


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


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        import ipaddress
        ipaddress.ip_address(host)
        number = int(port)
        if not sep or not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise InputError(f"{what} {text}: expected ADDRESS:PORT like 127.0.0.1:5353") from None
    return host, number


def cmd_dns_serve(args) -> int:
    import logging

    from gslb.config import GslbConfigError
    from gslb.lifecycle import serve
    from lab.dns_config import gslb_config
    from topologies import scenario
    from topologies.plan import build_plan
    listen = _host_port(args.listen, "--listen")
    control = None if args.control == "off" else _host_port(args.control, "--control")
    try:
        config = gslb_config(build_plan(scenario.load(args.scenario)), policy=args.policy,
                             ttl_s=args.ttl)
    except (GslbConfigError, ValueError) as exc:
        raise InputError(f"scenario {args.scenario}: dns: {exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        serve(config, [listen], control)
    except OSError as exc:
        raise LblabError(f"cannot serve on {args.listen}: {exc.strerror or exc}") from None
    return 0


def _vip_api(args):
    from experiments.vipclient import VipApi
    from topologies import state
    if args.rest:
        return VipApi(args.rest)
    live = [r for r in state.load_all() if r.get("rest_url")
            and state.pid_alive(int(r.get("owner_pid", 0)))]
    if not live:
        raise LblabError("no running lblab network found (start one with `lblab topo up`, "
                         "or give --rest http://127.0.0.1:PORT)")
    return VipApi(live[-1]["rest_url"])


def _parse_vip_settings(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"{pair}: expected key=value (mode=dsr, algorithm=maglev, "
                             f"conntrack=true, hash_impl=multipath, reactive=false, "
                             f"table_size=4093)")
        key, value = pair.split("=", 1)
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        elif value.isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out


def cmd_vip(args) -> int:
    api = _vip_api(args)
    action = args.vip_command
    if action == "list":
        from experiments.vipclient import summary
        for vip in api.vips():
            print(summary(vip))
        return 0
    if action == "show":
        result = api.vip(args.vip)
    elif action == "set":
        result = api.change(args.vip, **_parse_vip_settings(args.settings))
    elif action == "add":
        result = api.add_backend(args.vip, args.backend, args.weight)
    elif action == "remove":
        result = api.remove_backend(args.vip, args.backend)
    elif action == "drain":
        result = api.drain(args.vip, args.backend)
    else:
        result = api.undrain(args.vip, args.backend)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gslb.control import DEFAULT_CONTROL_PORT
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

    p = sub.add_parser("run", help="run one experiment (results/<experiment>/<run-id>/) or a "
                       "suite of all of them (results/suite/<id>/ with a report)")
    p.add_argument("experiment", nargs="?", help="experiment name (see `lblab list`)")
    p.add_argument("--suite", choices=("quick", "full"),
                   help="instead of one EXPERIMENT: every experiment in order, then a report "
                        "(quick: reduced size, once; full: full size, 3 repetitions)")
    p.add_argument("--repetitions", type=int, default=1, metavar="R",
                   help="run R times with seeds seed..seed+R-1, one run directory each "
                        "(default 1; --suite full: 3)")
    p.add_argument("--scenario", help="scenario name or YAML file (default: the experiment's)")
    p.add_argument("--quick", action="store_true", help="reduced size, for a first look")
    p.add_argument("--seed", type=int, default=1, help="seed of every random choice (1)")
    p.add_argument("--out", type=Path, help="results root (default: results/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter; repeatable (e.g. --set pings=50, "
                        "--set link_emulation=relay, --set backend_server=python)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("topo", help="scenario networks")
    tsub = p.add_subparsers(dest="topo_command", metavar="ACTION")
    tsub.required = True
    t = tsub.add_parser("up", help="bring a scenario up with the Mininet CLI; torn down on exit")
    t.add_argument("scenario", nargs="?", default="three-dc")
    t.add_argument("--link-emulation", choices=("netem", "relay", "none"),
                   help="force a link delay mechanism")
    t.add_argument("--ecmp", choices=("hash-threshold", "resilient"), default="hash-threshold",
                   help="the DC routers' ECMP for LB tiers (scenarios with lbs > 1)")
    t.add_argument("--gre", action="store_true",
                   help="wire the GRE underlay and decapsulators, so `vip mode DC gre` works")
    t.set_defaults(func=cmd_topo_up)

    p = sub.add_parser("dns", help="the GSLB authoritative DNS server")
    dsub = p.add_subparsers(dest="dns_command", metavar="ACTION")
    dsub.required = True
    d = dsub.add_parser("serve", help="serve the scenario's zone lblab.test standalone, "
                        "until Ctrl-C")
    d.add_argument("--scenario", default="three-dc",
                   help="scenario name or YAML file (default: three-dc)")
    d.add_argument("--listen", default="127.0.0.1:5353", metavar="ADDR:PORT",
                   help="UDP and TCP address (default: 127.0.0.1:5353)")
    d.add_argument("--control", default=f"127.0.0.1:{DEFAULT_CONTROL_PORT}",
                   metavar="ADDR:PORT",
                   help="JSON control channel (GET /state, POST /policy, /ttl, /dc/NAME); "
                        f"'off' for none (default: 127.0.0.1:{DEFAULT_CONTROL_PORT})")
    d.add_argument("--policy", choices=("all", "geo", "capacity"),
                   help="answer policy (default: the scenario's)")
    d.add_argument("--ttl", type=int, help="TTL of the service's A records, seconds "
                   "(default: the scenario's)")
    d.set_defaults(func=cmd_dns_serve)

    p = sub.add_parser("clean", help="remove what a crashed lblab run left behind (only that)")
    p.add_argument("--all", action="store_true",
                   help="also runs whose owner process is still alive")
    p.add_argument("--check", action="store_true",
                   help="only list lblab leftovers; exit 1 if there are any")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("vip", help="inspect and change VIPs of a running network (REST)")
    p.add_argument("--rest", help="VIP controller URL (default: the running lblab network's)")
    vsub = p.add_subparsers(dest="vip_command", metavar="ACTION")
    vsub.required = True
    vsub.add_parser("list", help="VIPs with mode, algorithm and backends up")
    v = vsub.add_parser("show", help="one VIP: backends, state, connections, table share")
    v.add_argument("vip", help="VIP name (its DC) or address")
    v = vsub.add_parser("set", help="change mode, algorithm, conntrack, conntrack_impl, "
                                    "hash_impl, reactive, table_size")
    v.add_argument("vip")
    v.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    v = vsub.add_parser("add", help="add a backend (a host on the VIP's LB switch)")
    v.add_argument("vip")
    v.add_argument("backend", help="backend IPv4 address")
    v.add_argument("--weight", type=float, default=1.0)
    for name, text in (("remove", "remove a backend (its connections break)"),
                       ("drain", "no new connections to a backend; existing ones finish"),
                       ("undrain", "let a drained backend take new connections again")):
        v = vsub.add_parser(name, help=text)
        v.add_argument("vip")
        v.add_argument("backend", help="backend address or name")
    p.set_defaults(func=cmd_vip)

    p = sub.add_parser("bench", help="performance checks -> results/bench/<run-id>/bench.csv")
    p.add_argument("--out", type=Path, help="results root (default: results/)")
    p.add_argument("--only", action="append", metavar="METRIC",
                   help="run only this metric; repeatable")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="report.md + report.html (+ figures/) from suite or run "
                       "directories, without re-running anything")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="a suite directory (results/suite/<id>) or run directories")
    p.add_argument("--out", type=Path, help="where to write the report (default: the suite "
                   "directory, else the parent of the first run directory)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="do two runs (or two suites) agree within the "
                       "reproducibility tolerances? exit 1 if not")
    p.add_argument("runs", nargs="*", metavar="RUN", help="two run or two suite directories")
    p.add_argument("--failures-only", action="store_true",
                   help="list only the values outside their tolerance")
    p.add_argument("--tolerances", action="store_true",
                   help="print the tolerance table (markdown)")
    p.set_defaults(func=cmd_compare)
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
    except BrokenPipeError:  # `lblab list | head`: the reader has had enough, as with SIGPIPE
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug: one line for the user, the traceback in a file
        import tempfile
        import traceback
        path = Path(tempfile.gettempdir()) / "lblab-last-error.log"
        path.write_text(traceback.format_exc())
        print(f"lblab: internal error: {type(exc).__name__}: {exc} (traceback in {path}; "
              f"`sudo lblab clean` removes anything left behind)", file=sys.stderr)
        return 1
