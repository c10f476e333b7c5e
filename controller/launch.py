"""lblab's controller launcher: the same small start-up under Ryu and under os-ken.

    python -m controller.launch [--framework ryu|os-ken] --ofp-listen-host 127.0.0.1 \\
        --ofp-tcp-listen-port 6653 --rest-host 127.0.0.1 --rest-port 8080 \\
        [--log-level info|debug] controller.l2app controller.vipapp

Why not `ryu-manager`: os-ken 4 ships no manager script (no `os_ken.cmd`) and no WSGI layer,
so lblab starts both frameworks the same way, with each one's own `AppManager` (load the
apps, create their contexts, instantiate them, join their threads), its own OpenFlow
listener configured through its `cfg.CONF`, and lblab's REST server (controller/rest.py) on
the framework's `hub.spawn`. Under Ryu, eventlet monkey-patching comes first (as in
ryu-manager) and the start-up shim supplies the name Ryu 4.34 needs from current eventlet;
nothing in site-packages is edited. Under os-ken the GIL switch interval is shortened (see
THREAD_SWITCH_INTERVAL_S). SIGTERM and SIGINT end the process at once: switches
keep their flows (fail mode secure) and the next controller resyncs them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys

from controller import frameworks


# os-ken 4 runs every datapath's receive and send loop, every app's event loop and lblab's
# REST server and polling loops as real threads under one GIL. With CPython's default 5 ms
# switch interval a thread woken by a message can wait that long behind one that computes:
# in `make bench` (controller_*), os-ken with 5 ms made 0.74 of Ryu's reactive connection
# rate and took 1.3x Ryu's time for a pool change; at 0.5 ms the two are level.
THREAD_SWITCH_INTERVAL_S = 0.0005


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m controller.launch",
                                description="lblab's OpenFlow controller (Ryu or os-ken)")
    p.add_argument("--framework", choices=sorted(frameworks.FRAMEWORKS),
                   help=f"default: ${frameworks.ENV}, else {frameworks.DEFAULT}")
    p.add_argument("--ofp-listen-host", default="127.0.0.1")
    p.add_argument("--ofp-tcp-listen-port", type=int, default=6653)
    p.add_argument("--rest-host", default="127.0.0.1")
    p.add_argument("--rest-port", type=int, default=8080)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    p.add_argument("apps", nargs="+", help="app modules, e.g. controller.l2app")
    return p.parse_args(argv)


def info_route(fw, args, app_names):
    from controller.rest import Route
    info = {"framework": fw.name, "version": fw.version(), "hub": fw.hub,
            "python": sys.version.split()[0], "pid": os.getpid(), "apps": app_names,
            "openflow": f"{args.ofp_listen_host}:{args.ofp_tcp_listen_port}",
            "rest": f"{args.rest_host}:{args.rest_port}"}
    return Route("GET", "/controller", lambda params, body: info)


def _stop(signum, _frame):
    logging.getLogger("lblab.launch").info("signal %d: stopping", signum)
    logging.shutdown()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.framework:
        os.environ[frameworks.ENV] = args.framework
    try:
        fw = frameworks.chosen()
    except frameworks.FrameworkError as exc:
        print(f"lblab controller: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("lblab.launch")
    if fw.module == "ryu":
        # As ryu-manager does, before anything else imports socket users: green sockets,
        # real threads (Ryu's choice, thread=False).
        from controller.shim import apply_eventlet_shim
        apply_eventlet_shim()
        from ryu.lib import hub as ryu_hub
        ryu_hub.patch(thread=False)
    try:
        from controller import compat
    except ImportError as exc:
        print(f"lblab controller: {exc}", file=sys.stderr)
        return 2
    from controller.rest import connection_handler, serve_forever

    # Register the OpenFlow listener's options, parse no command line of the framework's
    # own, then set them: the listener reads them when the ofp_handler app starts.
    importlib.import_module(f"{fw.module}.controller.controller")
    conf = compat.cfg.CONF
    conf(args=[], project=fw.module, default_config_files=[])
    conf.set_override("ofp_listen_host", args.ofp_listen_host)
    conf.set_override("ofp_tcp_listen_port", args.ofp_tcp_listen_port)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    hub = compat.hub
    if fw.hub == "threads":
        sys.setswitchinterval(THREAD_SWITCH_INTERVAL_S)
        harden_threads_hub(hub)
    # Both listening sockets are bound before any app thread starts: a port in use is a
    # one-line error and exit 1, not a hang with threads running.
    try:
        rest_sock = hub.listen((args.rest_host, args.rest_port))
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.ofp_listen_host, args.ofp_tcp_listen_port))
    except OSError as exc:
        _fail(f"cannot listen (OpenFlow {args.ofp_listen_host}:{args.ofp_tcp_listen_port}, "
              f"REST {args.rest_host}:{args.rest_port}): {exc.strerror or exc}")
    try:
        manager = compat.app_manager.AppManager.get_instance()
        manager.load_apps(args.apps)
        contexts = manager.create_contexts()
        services = list(manager.instantiate_apps(**contexts))
        apps = list(manager.applications.values())
        routes = [info_route(fw, args, args.apps)]
        errors: tuple = ()
        for app in apps:
            if hasattr(app, "rest_routes"):
                routes += app.rest_routes()
                errors += tuple(getattr(app, "REST_ERRORS", ()))
    except Exception as exc:  # a bad app name or config: one line, and no thread left
        log.debug("start-up failed", exc_info=True)
        _fail(f"apps did not start: {type(exc).__name__}: {exc}")
    services.append(hub.spawn(serve_forever, rest_sock, connection_handler(routes, errors),
                              hub.spawn, hub.sleep))
    log.info("lblab controller: %s; OpenFlow %s:%d; REST %s:%d; apps %s", fw.describe(),
             args.ofp_listen_host, args.ofp_tcp_listen_port, args.rest_host, args.rest_port,
             ", ".join(type(a).__name__ for a in apps))
    hub.joinall(services)
    return 0


def harden_threads_hub(hub) -> None:
    """os-ken's threads hub defines TaskExit = Exception, and an app's event loop re-raises
    TaskExit: one handler's exception would end the app's loop, silently (its thread
    swallows it), and with it the controller. A BaseException of its own restores Ryu's
    behaviour: the handler's exception is logged and the loop goes on."""
    if hub.TaskExit is Exception:
        hub.TaskExit = type("TaskExit", (BaseException,), {})


def _fail(message: str) -> None:
    """A one-line error as the log's last line, then exit 1 at once (app threads may run)."""
    print(f"lblab controller: {message}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
